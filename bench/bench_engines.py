"""Per-step cost of running a thermocg potential inside OpenMM (PythonForce) and LAMMPS (fix external),
against thermocg.md with the same model, bead count, timestep and thermostat, all in the same run.

System: one-bead methanol-like beads (32.04 amu, 0.0128 beads/A^3) on a jittered lattice, 300 K,
Langevin (friction 1/ps), 2 fs, float32 models on the CPU with ``--threads`` threads. Models:

- ``hipnn``: a small HIP-NN-TS (32 features, 10 sensitivities, r_c 8 A, 1 interaction layer, 2 atom
  layers), the size that beats all-atom MD on a CPU (bench_md.py);
- ``lj``: Lennard-Jones (r_c 8 A), a cheap model, where the engines' fixed cost shows most.

Each engine runs ``--steps`` steps after a warm-up, interleaved ``--repeats`` times; the medians are
reported as steps/s, the ratio engine time / thermocg.md time per step (``overhead_ratio_<engine>_vs_thermocg``,
> 1 is slower) and the extra wall time per step in ms. The engines' own integrators do the work
(OpenMM's LangevinMiddleIntegrator on its CPU platform, LAMMPS's fix langevin + fix nve); each calls
the same potential once per step through a neighbour list with a 1 A skin.

    python bench/bench_engines.py [--n-beads 1000] [--steps 200] [--repeats 3] [--threads 2] [--models hipnn,lj]

Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

METHANOL_MASS = 32.04
DENSITY_BEADS_A3 = 0.0128


def setup(threads: int) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OPENMM_CPU_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def make_frame(n_beads: int, seed: int):
    from thermocg.frames import Frames, StatePoint

    rng = np.random.default_rng(seed)
    side = round(n_beads ** (1 / 3))
    if side**3 != n_beads:
        raise SystemExit(f"--n-beads must be a cube, got {n_beads}")
    length = (n_beads / DENSITY_BEADS_A3) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid + 0.5 + rng.uniform(-0.1, 0.1, grid.shape)) / side * length
    return Frames(positions=positions[None], box=(np.eye(3) * length)[None], types=np.zeros(n_beads, int),
                  type_names=("MeOH",), masses=np.full(n_beads, METHANOL_MASS), state=StatePoint(300.0))


def make_model(name: str):
    from thermocg.potentials.hipnn import HipnnTS
    from thermocg.potentials.lj import LennardJones

    if name == "hipnn":
        return HipnnTS(["MeOH"], n_features=32, n_sensitivities=10, dist_soft_min_A=2.0, dist_soft_max_A=7.0,
                       cutoff_A=8.0, n_interaction_layers=1, n_atom_layers=2, seed=0)
    if name == "lj":
        return LennardJones(["MeOH"], epsilon_kcal_mol=0.4, sigma_A=3.8, cutoff_A=8.0, switch_width_A=1.0).float()
    raise SystemExit(f"unknown model {name!r}; use hipnn or lj")


class ThermocgRunner:
    def __init__(self, model, frame) -> None:
        self.model, self.frame = model, frame

    def steps_per_s(self, n_steps: int, seed: int) -> float:
        from thermocg.md import simulate

        result = simulate(self.model, self.frame, temperature_K=300.0, timestep_fs=2.0, n_steps=n_steps, seed=seed,
                          save_interval_steps=max(n_steps, 1), keep_frames=False, friction_per_ps=1.0,
                          raise_on_blowup=False, progress=False)
        return result.steps_per_s


class OpenMMRunner:
    def __init__(self, model, frame) -> None:
        from thermocg.engines.openmm import OpenMMEngine

        self.engine = OpenMMEngine(model, frame)
        self.simulation = self.engine.simulation(temperature_K=300.0, timestep_fs=2.0, friction_per_ps=1.0, seed=1)

    def steps_per_s(self, n_steps: int, seed: int) -> float:
        start = time.perf_counter()
        self.simulation.step(n_steps)
        return n_steps / (time.perf_counter() - start)


class LammpsRunner:
    def __init__(self, model, frame) -> None:
        from thermocg.engines.lammps import LammpsEngine

        self.tmp = tempfile.TemporaryDirectory()
        self.engine = LammpsEngine(model, frame, work_dir=self.tmp.name, virial=False)
        self.engine.velocities(300.0, seed=1)
        self.engine.langevin(temperature_K=300.0, friction_per_ps=1.0, seed=1, timestep_fs=2.0)
        self.engine.command("thermo 0")

    def steps_per_s(self, n_steps: int, seed: int) -> float:
        start = time.perf_counter()
        self.engine.run(n_steps)
        return n_steps / (time.perf_counter() - start)

    def close(self) -> None:
        self.engine.close()
        self.tmp.cleanup()


def bench_model(name: str, frame, args) -> dict[str, float]:
    model = make_model(name)
    runners = {"thermocg": ThermocgRunner(model, frame), "openmm": OpenMMRunner(model, frame),
               "lammps": LammpsRunner(model, frame)}
    for runner in runners.values():  # warm-up: first calls allocate; the engines run their setup
        runner.steps_per_s(max(5, args.steps // 10), seed=0)
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(args.repeats):
        for key, runner in runners.items():
            rates[key].append(runner.steps_per_s(args.steps, seed=r + 1))
        print(f"  {name} repeat {r}: " + ", ".join(f"{k} {v[-1]:.1f} steps/s" for k, v in rates.items()))
    runners["lammps"].close()
    median = {k: statistics.median(v) for k, v in rates.items()}
    out = {f"{name}_{k}_steps_per_s": round(v, 3) for k, v in median.items()}
    for engine in ("openmm", "lammps"):
        out[f"{name}_overhead_ratio_{engine}_vs_thermocg"] = round(median["thermocg"] / median[engine], 3)
        out[f"{name}_extra_ms_per_step_{engine}"] = round(1e3 * (1 / median[engine] - 1 / median["thermocg"]), 3)
    spread = {k: (min(v), max(v)) for k, v in rates.items()}
    print(f"{name}: thermocg.md {median['thermocg']:.1f} steps/s ({spread['thermocg'][0]:.1f}-{spread['thermocg'][1]:.1f}), "
          f"OpenMM {median['openmm']:.1f} ({spread['openmm'][0]:.1f}-{spread['openmm'][1]:.1f}), "
          f"LAMMPS {median['lammps']:.1f} ({spread['lammps'][0]:.1f}-{spread['lammps'][1]:.1f}); overhead ratios "
          f"OpenMM {out[f'{name}_overhead_ratio_openmm_vs_thermocg']}, LAMMPS {out[f'{name}_overhead_ratio_lammps_vs_thermocg']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per engine per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="hipnn,lj", help="comma-separated: hipnn, lj")
    args = parser.parse_args()
    setup(args.threads)
    import openmm
    import torch

    frame = make_frame(args.n_beads, seed=1)
    print(f"{args.n_beads} beads, box {frame.box[0, 0, 0]:.1f} A, {args.threads} threads, torch {torch.__version__}, "
          f"OpenMM {openmm.__version__}", file=sys.stderr)
    out: dict[str, float | int | str] = {"n_beads": args.n_beads, "threads": args.threads, "steps": args.steps,
                                         "repeats": args.repeats}
    for name in args.models.split(","):
        out.update(bench_model(name.strip(), frame, args))
    first = args.models.split(",")[0].strip()
    out["overhead_ratio_openmm_vs_thermocg"] = out[f"{first}_overhead_ratio_openmm_vs_thermocg"]
    out["overhead_ratio_lammps_vs_thermocg"] = out[f"{first}_overhead_ratio_lammps_vs_thermocg"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()

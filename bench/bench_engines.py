"""Per-step cost of running a thermocg potential inside OpenMM (PythonForce) and LAMMPS (fix external),
against thermocg.md with the same model, bead count, timestep and thermostat, all in the same run.

System: one-bead methanol-like beads (32.04 amu, 0.0128 beads/A^3), melted from a lattice by
``--equilibration-steps`` of Lennard-Jones MD, 300 K, Langevin (friction 1/ps), 2 fs, float32 models on
the CPU with ``--threads`` threads; every engine starts from that liquid and continues its own run from
repeat to repeat. Models:

- ``hipnn``: a small HIP-NN-TS (32 features, 10 sensitivities, r_c 8 A, 1 interaction layer, 2 atom
  layers; the size that beats all-atom MD on a CPU in bench_md.py) with damped random energy heads, plus
  Lennard-Jones so that the liquid stays a liquid; the network takes most of the time;
- ``lj``: Lennard-Jones (r_c 8 A), a cheap model, where the engines' fixed cost shows most.

Each engine runs ``--steps`` steps after a warm-up, interleaved ``--repeats`` times (the order rotates
from repeat to repeat); each calls the same potential once per step through a neighbour list with a
1 A skin, and its own integrator does the rest (OpenMM's LangevinMiddleIntegrator on its CPU platform,
LAMMPS's fix langevin + fix nve). The cost is the CPU time of this process per step
(``time.process_time``, every thread of the process included), which other jobs on a shared machine
inflate less than wall time; wall-clock steps/s are reported too. ``overhead_ratio_<engine>_vs_thermocg``
is engine CPU time / thermocg.md CPU time per step (> 1 is slower), the median of the per-repeat ratios
(with their range); ``extra_cpu_ms_per_step_<engine>`` the difference of the medians. thermocg.md's figure
includes its setup (one force evaluation and one list build per call, about 0.5 % at 200 steps) and its
blow-up checks every 10 steps. A run that leaves 300 K far behind stops the benchmark.

    python bench/bench_engines.py [--n-beads 1000] [--steps 200] [--repeats 6] [--threads 2] [--models hipnn,lj]

Measured here (2026-12-03, 1,000 beads, 1 thread, 200 steps x 6 repeats, the 2 cores shared with other
jobs at a load of 5-10): HIP-NN-TS + LJ, thermocg.md 24.5 ms CPU/step; OpenMM 22.7 ms (ratio 0.90, per
repeat 0.86-0.99), LAMMPS 23.3 ms (0.97, 0.88-1.11). LJ alone, thermocg.md 6.7 ms; OpenMM 7.8 ms (1.12,
0.93-1.21), LAMMPS 7.1 ms (1.04, 0.87-1.13). So the bridges cost about a millisecond per step at most
(the Python callback, unit conversion, the engine's own integrator), indistinguishable from thermocg.md
within the spread of these measurements for a network-sized model. GPUs were not measured.

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
    import torch

    from thermocg.potentials.base import SumPotential
    from thermocg.potentials.hipnn import HipnnTS
    from thermocg.potentials.lj import LennardJones

    lj = LennardJones(["MeOH"], epsilon_kcal_mol=[[0.4]], sigma_A=[[3.8]], cutoff_A=8.0, switch_width_A=1.0).float()
    if name == "hipnn":
        # random weights alone are no liquid (it would blow up); LJ keeps the beads apart, the network's
        # energy heads are damped, and the network is where the time goes
        network = HipnnTS(["MeOH"], n_features=32, n_sensitivities=10, dist_soft_min_A=2.0, dist_soft_max_A=7.0,
                          cutoff_A=8.0, n_interaction_layers=1, n_atom_layers=2, seed=0)
        with torch.no_grad():
            for head in network.energy_heads:
                head.weight.mul_(0.05)
        return SumPotential([network, lj])
    if name == "lj":
        return lj
    raise SystemExit(f"unknown model {name!r}; use hipnn or lj")


def liquid_frame(frame, n_steps: int):
    """The lattice frame after ``n_steps`` of Lennard-Jones MD at 300 K: a disordered liquid, so that every
    engine starts from (and stays in) the same kind of structure (a model's cost depends on it: HIP-NN-TS
    pads every bead's pairs to the largest neighbour count)."""
    from thermocg.md import simulate

    result = simulate(make_model("lj"), frame, temperature_K=300.0, timestep_fs=2.0, n_steps=n_steps,
                      seed=0, save_interval_steps=n_steps, friction_per_ps=5.0, progress=False)
    return result.frames.select([-1])


class ThermocgRunner:
    """thermocg.md, each call continuing from where the previous one stopped (positions and velocities)."""

    def __init__(self, model, frame) -> None:
        self.model, self.frame, self.velocities = model, frame, "maxwell"

    def seconds_per_step(self, n_steps: int, seed: int) -> tuple[float, float]:
        from thermocg.md import simulate

        cpu, wall = time.process_time(), time.perf_counter()
        result = simulate(self.model, self.frame, temperature_K=300.0, timestep_fs=2.0, n_steps=n_steps, seed=seed,
                          save_interval_steps=n_steps, friction_per_ps=1.0, initial_velocities=self.velocities,
                          progress=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        self.frame, self.velocities = result.frames.select([-1]), "frame"
        self.last_temperature_K = float(result.thermo["temperature_K"][-1])
        return cpu / n_steps, wall / n_steps

    def temperature_K(self) -> float:
        return self.last_temperature_K


class OpenMMRunner:
    def __init__(self, model, frame) -> None:
        from thermocg.engines.openmm import OpenMMEngine

        self.engine = OpenMMEngine(model, frame)
        self.simulation = self.engine.simulation(temperature_K=300.0, timestep_fs=2.0, friction_per_ps=1.0, seed=1)

    def seconds_per_step(self, n_steps: int, seed: int) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        self.simulation.step(n_steps)
        return (time.process_time() - cpu) / n_steps, (time.perf_counter() - wall) / n_steps

    def temperature_K(self) -> float:
        from openmm import unit

        from thermocg import units

        kinetic = self.simulation.context.getState(getEnergy=True).getKineticEnergy()
        n = self.engine.system.getNumParticles()
        return kinetic.value_in_unit(unit.kilocalorie_per_mole) * 2 / (3 * n * units.KB_KCAL_MOL_K)


class LammpsRunner:
    def __init__(self, model, frame) -> None:
        from thermocg.engines.lammps import LammpsEngine

        self.tmp = tempfile.TemporaryDirectory()
        self.engine = LammpsEngine(model, frame, work_dir=self.tmp.name, virial=False)
        self.engine.velocities(300.0, seed=1)
        self.engine.langevin(temperature_K=300.0, friction_per_ps=1.0, seed=1, timestep_fs=2.0)
        self.engine.command("thermo 0")

    def seconds_per_step(self, n_steps: int, seed: int) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        self.engine.run(n_steps)
        return (time.process_time() - cpu) / n_steps, (time.perf_counter() - wall) / n_steps

    def temperature_K(self) -> float:
        return self.engine.thermo("temp")

    def close(self) -> None:
        self.engine.close()
        self.tmp.cleanup()


def bench_model(name: str, frame, args) -> dict[str, float]:
    model = make_model(name)
    runners = {"thermocg": ThermocgRunner(model, frame), "openmm": OpenMMRunner(model, frame),
               "lammps": LammpsRunner(model, frame)}
    for runner in runners.values():  # warm-up: first calls allocate; the engines run their setup
        runner.seconds_per_step(max(5, args.steps // 10), seed=0)
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    wall: dict[str, list[float]] = {k: [] for k in runners}
    keys = list(runners)
    for r in range(args.repeats):
        for key in keys[r % 3:] + keys[: r % 3]:  # the order rotates, so no engine always runs first
            c, w = runners[key].seconds_per_step(args.steps, seed=r + 1)
            cpu[key].append(c)
            wall[key].append(w)
        print(f"  {name} repeat {r}: " + ", ".join(f"{k} {1e3 * cpu[k][-1]:.2f} ms CPU ({1 / wall[k][-1]:.1f} steps/s)"
                                                   for k in runners))
    temperatures = {key: runner.temperature_K() for key, runner in runners.items()}
    runners["lammps"].close()
    print(f"  {name} final temperatures: " + ", ".join(f"{k} {t:.0f} K" for k, t in temperatures.items()))
    if not all(200.0 < t < 400.0 for t in temperatures.values()):
        raise SystemExit(f"{name}: a run left 300 K far behind ({temperatures}); the timings would mean nothing")
    out: dict[str, float | list[float]] = {}
    for key in runners:
        out[f"{name}_{key}_cpu_ms_per_step"] = round(1e3 * statistics.median(cpu[key]), 4)
        out[f"{name}_{key}_steps_per_s"] = round(1 / statistics.median(wall[key]), 3)
    summary = [f"{name}: thermocg.md {out[f'{name}_thermocg_cpu_ms_per_step']:.2f} ms CPU/step"]
    for engine in ("openmm", "lammps"):
        # ratios paired within a repeat (its runs follow each other), then the median over repeats
        ratios = [e / t for t, e in zip(cpu["thermocg"], cpu[engine])]
        wall_ratios = [e / t for t, e in zip(wall["thermocg"], wall[engine])]
        out[f"{name}_overhead_ratio_{engine}_vs_thermocg"] = round(statistics.median(ratios), 3)
        out[f"{name}_overhead_ratio_{engine}_vs_thermocg_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        out[f"{name}_wall_overhead_ratio_{engine}_vs_thermocg"] = round(statistics.median(wall_ratios), 3)
        out[f"{name}_extra_cpu_ms_per_step_{engine}"] = round(
            out[f"{name}_{engine}_cpu_ms_per_step"] - out[f"{name}_thermocg_cpu_ms_per_step"], 4)
        summary.append(f"{engine} {out[f'{name}_{engine}_cpu_ms_per_step']:.2f} ms, overhead ratio "
                       f"{statistics.median(ratios):.3f} (repeats {min(ratios):.3f}-{max(ratios):.3f}; "
                       f"wall {statistics.median(wall_ratios):.3f})")
    print("; ".join(summary))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per engine per repeat")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="hipnn,lj", help="comma-separated: hipnn, lj")
    parser.add_argument("--equilibration-steps", type=int, default=1000,
                        help="Lennard-Jones MD steps that melt the lattice before timing")
    args = parser.parse_args()
    setup(args.threads)
    import openmm
    import torch

    frame = liquid_frame(make_frame(args.n_beads, seed=1), args.equilibration_steps)
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

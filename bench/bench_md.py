"""CG MD speed: thermocg.md with HIP-NN-TS against hippynn 0.1.3's own Langevin MD on the same model,
and CG MD against all-atom OpenMM MD of the same number of molecules, all in the same run.

System: 1,000 one-bead methanol beads (32.04 amu) at 0.0128 beads/A^3 (box 42.7 A), beads on a
jittered lattice, 300 K, Langevin, float32 models on the CPU with ``--threads`` threads.

1. CG MD steps/s. The same HIP-NN-TS at the reference hyperparameters (128 features, 20
   sensitivities, 2..13 A, r_c 15 A, 1 interaction layer, 3 atom layers), the same weights (hippynn's
   initial weights copied into thermocg's HipnnTS with ``load_hippynn_state_dict``):
   - ours: ``thermocg.md.simulate`` (BAOAB, vesin skin list with 1 A skin, blow-up checks every 10 steps)
   - hippynn: ``hippynn.molecular_dynamics.MolecularDynamics`` + ``LangevinDynamics`` with its
     ``PeriodicPairIndexerMemory`` pair finder (1 A skin: its fastest MD configuration) and a
     ``Predictor`` computing forces by ``GradientNode``.
   Each is warmed up, then timed over ``--steps`` / ``--hippynn-steps`` steps, interleaved ``--repeats``
   times; the median is reported.
2. ns/day of CG MD (timestep ``--cg-timestep-fs``) against all-atom OpenMM (thermocg.allatom: the
   molecule's force field, PME, LangevinMiddle, ``--aa-timestep-fs``) of the same number of molecules on
   the same threads; plus the same figure for a smaller HIP-NN-TS (``--small``: 32 features, 10
   sensitivities, r_c 8 A), which is what it takes for CG to win on a CPU.

    python bench/bench_md.py [--n-beads 1000] [--steps 10] [--hippynn-steps 5] [--threads 2]

Measured here, 2 threads, 3 repeats, ratios from interleaved runs:
- 2026-12-01, machine otherwise idle: ours 8.86 steps/s, hippynn 0.32 steps/s (27.5x). All-atom
  TraPPE methanol (3,000 sites, OpenMM CPU, PME, 1 fs) 8.98 ns/day; the reference HIP-NN-TS at 2 fs
  1.53 ns/day (0.17x: it breaks even at an 11.7 fs timestep); the small model (32 features, r_c 8 A)
  5.85 ns/day at 2 fs (0.65x: it wins from about 3 fs on).
- an earlier version, 2 shared cores with other jobs running: ours 1.52 steps/s, hippynn 0.080 (19x);
  all-atom 2.17 ns/day, reference CG 0.26 ns/day, small model 2.10 ns/day.
Where hippynn's time goes: its pair finder rebuilds the list by brute force (tens of seconds per
rebuild, every few steps with a 1 A skin at 2 fs) and its position tensor carries a growing autograd
history; even its steps without a rebuild were ~3-4x slower than ours. GPUs were not measured.

Ends with one line of JSON (``speedup_vs_hippynn_md``, ``speedup_vs_openmm_allatom_ns_per_day`` ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

METHANOL_MASS = 32.04
DENSITY_BEADS_A3 = 0.0128


def setup(threads: int) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ["OMP_NUM_THREADS"] = str(threads)
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
    return Frames(positions=positions, box=np.eye(3) * length, types=np.zeros(n_beads, int), type_names=("MeOH",),
                  masses=np.full(n_beads, METHANOL_MASS), state=StatePoint(300.0, density_g_cm3=0.786))


REFERENCE = dict(n_features=128, n_sensitivities=20, dist_soft_min=2.0, dist_soft_max=13.0, dist_hard_max=15.0,
                 n_atom_layers=3, n_interaction_layers=1)
SMALL = dict(n_features=32, n_sensitivities=10, dist_soft_min=2.0, dist_soft_max=7.0, dist_hard_max=8.0,
             n_atom_layers=2, n_interaction_layers=1)


class HippynnMD:
    """hippynn 0.1.3's Langevin MD on a HipnnQuad + HEnergy graph; ``ours`` holds the same weights."""

    def __init__(self, frame, params: dict, *, seed: int = 0, skin_A: float = 1.0) -> None:
        import ase.units
        import torch
        from hippynn.graphs import Predictor, inputs, networks, physics, targets
        from hippynn.graphs.nodes.indexers import acquire_encoding_padding
        from hippynn.graphs.nodes.pairs import PeriodicPairIndexerMemory
        from hippynn.molecular_dynamics.md import LangevinDynamics, MolecularDynamics, Variable

        from thermocg.potentials.hipnn import HipnnTS, load_hippynn_state_dict

        torch.manual_seed(seed)  # hippynn initialises its weights from the global generator
        species = inputs.SpeciesNode(db_name="Z")
        positions = inputs.PositionsNode(db_name="R")
        cell = inputs.CellNode(db_name="C")
        encoder, padding = acquire_encoding_padding(species, species_set=[0, 1])
        pairs = PeriodicPairIndexerMemory("PairIndexer", (positions, encoder, padding, cell),
                                          dist_hard_max=params["dist_hard_max"], skin=skin_A)
        net = networks.HipnnQuad("HIPNN", (padding, pairs), module_kwargs=dict(possible_species=[0, 1], **params))
        henergy = targets.HEnergyNode("HEnergy", net)
        force = physics.GradientNode("force", (henergy.mol_energy, positions), sign=-1)
        self.predictor = Predictor([species, positions, cell], [force, henergy.mol_energy])
        self.ours = HipnnTS(["MeOH"], n_features=params["n_features"], n_sensitivities=params["n_sensitivities"],
                            dist_soft_min_A=params["dist_soft_min"], dist_soft_max_A=params["dist_soft_max"],
                            cutoff_A=params["dist_hard_max"], n_interaction_layers=params["n_interaction_layers"],
                            n_atom_layers=params["n_atom_layers"])
        load_hippynn_state_dict(self.ours, net.torch_module.state_dict(), henergy.torch_module.state_dict())
        n = frame.n_particles
        rng = np.random.default_rng(seed)
        kT_over_m = 300.0 * 8.314462618e-3 / 4.184 * 4.184e-4 / METHANOL_MASS
        velocities = rng.normal(0.0, np.sqrt(kT_over_m), (n, 3))
        self.variable = Variable(
            "particles",
            data={
                "position": torch.as_tensor(frame.positions[0][None], dtype=torch.float32),
                "velocity": torch.as_tensor(velocities[None], dtype=torch.float32),
                "mass": torch.full((1, n), METHANOL_MASS, dtype=torch.float32),
                "cell": torch.as_tensor(frame.box[0][None], dtype=torch.float32),
                "species": torch.ones((1, n), dtype=torch.int64),
            },
            model_input_map={"Z": "species", "R": "position", "C": "cell"},
            updater=LangevinDynamics(force_db_name="force", temperature_K=300.0, frix=1e-3,
                                     force_units=ase.units.kcal / ase.units.mol / ase.units.Ang, seed=seed),
        )
        self.md = MolecularDynamics(variables=[self.variable], model=self.predictor)

    def run(self, n_steps: int, dt_fs: float) -> None:
        self.md.run(dt=dt_fs, n_steps=n_steps)


def time_ours(model, frame, n_steps: int, dt_fs: float, seed: int) -> float:
    from thermocg.md import simulate

    result = simulate(model, frame, temperature_K=300.0, timestep_fs=dt_fs, n_steps=n_steps, seed=seed,
                      save_interval_steps=max(n_steps, 1), keep_frames=False, friction_per_ps=1.0,
                      raise_on_blowup=False, max_force_kcal_mol_A=1e9, min_distance_A=0.0,
                      max_temperature_factor=1e9, progress=False)
    if result.blowup:
        print(f"  (ours stopped early: {result.blowup})", file=sys.stderr)
    return result.steps_per_s


def time_hippynn(peer: HippynnMD, n_steps: int, dt_fs: float) -> float:
    start = time.perf_counter()
    peer.run(n_steps, dt_fs)
    return n_steps / (time.perf_counter() - start)


def allatom_steps_per_s(molecule_name: str, n_molecules: int, threads: int, n_steps: int, dt_fs: float,
                        seed: int) -> tuple[float, int]:
    """Steps/s of all-atom OpenMM Langevin MD of ``n_molecules`` molecules at 0.786 g/cm^3, and the atom count."""
    import openmm

    from thermocg import units
    from thermocg.allatom.build import build_box
    from thermocg.allatom.molecules import get_molecule
    from thermocg.allatom.runner import build_system, make_context, resolve_cutoff_A

    molecule = get_molecule(molecule_name)
    positions, box = build_box(molecule, n_molecules, 0.786, rng=np.random.default_rng(seed))
    cutoff = resolve_cutoff_A(molecule, box)
    system = build_system(molecule, n_molecules, box, cutoff_A=cutoff)
    integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, dt_fs * units.FS_TO_PS)
    integrator.setRandomNumberSeed(seed)
    context = make_context(system, positions, box, integrator=integrator, platform="CPU", n_threads=threads)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(300.0, seed)
    integrator.step(20)  # warm-up
    start = time.perf_counter()
    integrator.step(n_steps)
    context.getState(getEnergy=True)
    return n_steps / (time.perf_counter() - start), system.getNumParticles()


def ns_per_day(steps_per_s: float, dt_fs: float) -> float:
    return steps_per_s * dt_fs * 1e-6 * 86400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of our MD per repeat")
    parser.add_argument("--hippynn-steps", type=int, default=5, help="timed steps of hippynn's MD per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cg-timestep-fs", type=float, default=2.0)
    parser.add_argument("--aa-timestep-fs", type=float, default=1.0)
    parser.add_argument("--aa-steps", type=int, default=100)
    parser.add_argument("--molecule", default="methanol_trappe")
    parser.add_argument("--no-allatom", action="store_true")
    parser.add_argument("--small", action="store_true", help="also time a smaller HIP-NN-TS (32 features, r_c 8 A)")
    args = parser.parse_args()
    setup(args.threads)
    import torch

    frame = make_frame(args.n_beads, seed=1)
    print(f"{args.n_beads} beads, box {frame.box[0, 0, 0]:.1f} A, {args.threads} threads, torch {torch.__version__}")
    peer = HippynnMD(frame, REFERENCE)
    n_params = sum(p.numel() for p in peer.ours.parameters())
    print(f"HIP-NN-TS reference hyperparameters: {n_params:,} parameters")
    # warm-up (first calls allocate, hippynn builds its pair memory)
    time_ours(peer.ours, frame, 3, args.cg_timestep_fs, seed=0)
    peer.run(2, args.cg_timestep_fs)
    ours, theirs = [], []
    for r in range(args.repeats):
        ours.append(time_ours(peer.ours, frame, args.steps, args.cg_timestep_fs, seed=r))
        theirs.append(time_hippynn(peer, args.hippynn_steps, args.cg_timestep_fs))
        print(f"  repeat {r}: ours {ours[-1]:.2f} steps/s, hippynn {theirs[-1]:.2f} steps/s")
    ours_sps, theirs_sps = statistics.median(ours), statistics.median(theirs)
    out: dict[str, float | int | str] = {
        "n_beads": args.n_beads, "threads": args.threads, "n_parameters": n_params,
        "ours_steps_per_s": round(ours_sps, 4), "hippynn_steps_per_s": round(theirs_sps, 4),
        "speedup_vs_hippynn_md": round(ours_sps / theirs_sps, 3),
        "cg_timestep_fs": args.cg_timestep_fs,
        "cg_ns_per_day": round(ns_per_day(ours_sps, args.cg_timestep_fs), 5),
    }
    print(f"CG MD, reference HIP-NN-TS: ours {ours_sps:.2f} steps/s vs hippynn {theirs_sps:.2f} steps/s "
          f"-> {ours_sps / theirs_sps:.2f}x; {out['cg_ns_per_day']:.4f} ns/day at {args.cg_timestep_fs} fs")
    if args.small:
        small = HippynnMD(frame, SMALL).ours
        time_ours(small, frame, 3, args.cg_timestep_fs, seed=0)
        small_sps = statistics.median(time_ours(small, frame, 5 * args.steps, args.cg_timestep_fs, seed=r)
                                      for r in range(args.repeats))
        out["small_model_steps_per_s"] = round(small_sps, 3)
        out["small_model_ns_per_day"] = round(ns_per_day(small_sps, args.cg_timestep_fs), 5)
        print(f"CG MD, small HIP-NN-TS ({sum(p.numel() for p in small.parameters()):,} parameters, r_c 8 A): "
              f"{small_sps:.2f} steps/s, {out['small_model_ns_per_day']:.4f} ns/day")
    if not args.no_allatom:
        aa_sps, n_atoms = allatom_steps_per_s(args.molecule, args.n_beads, args.threads, args.aa_steps,
                                              args.aa_timestep_fs, seed=2)
        aa_ns = ns_per_day(aa_sps, args.aa_timestep_fs)
        out.update({"allatom_molecule": args.molecule, "allatom_atoms": n_atoms,
                    "allatom_steps_per_s": round(aa_sps, 3), "allatom_timestep_fs": args.aa_timestep_fs,
                    "allatom_ns_per_day": round(aa_ns, 5),
                    "speedup_vs_openmm_allatom_ns_per_day": round(float(out["cg_ns_per_day"]) / aa_ns, 4),
                    # the CG timestep at which the reference model would match the all-atom ns/day
                    "cg_break_even_timestep_fs": round(aa_ns / (ours_sps * 1e-6 * 86400.0), 2)})
        if "small_model_ns_per_day" in out:
            out["speedup_small_vs_openmm_allatom_ns_per_day"] = round(float(out["small_model_ns_per_day"]) / aa_ns, 4)
        print(f"all-atom OpenMM {args.molecule} ({n_atoms} sites): {aa_sps:.1f} steps/s, {aa_ns:.3f} ns/day at "
              f"{args.aa_timestep_fs} fs; CG/AA ns/day = {out['speedup_vs_openmm_allatom_ns_per_day']}; the "
              f"reference CG model breaks even at a {out['cg_break_even_timestep_fs']} fs timestep")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

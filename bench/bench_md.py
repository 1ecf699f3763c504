"""CG MD speed: thermocg.md with HIP-NN-TS against hippynn 0.1.3's own Langevin MD on the same model,
and CG MD against all-atom OpenMM MD of the same number of molecules, all in the same run.

System: ``--n-beads`` (1,000) one-bead methanol beads (32.04 amu) at 0.786 g/cm^3 (0.01477 beads/A^3,
box 40.8 A; the all-atom run's density),
beads on a jittered lattice, 300 K, Langevin, float32 models on the CPU with ``--threads`` threads.
The network's size is an option (``--n-features``, ``--n-sensitivities``, ``--cutoff-A``,
``--soft-min-A``, ``--soft-max-A``, ``--n-interaction-layers``, ``--n-atom-layers``); the default is
the reference HIP-NN-TS (128 features, 20 sensitivities, 2..13 A, r_c 15 A, 1 interaction layer, 3 atom
layers: 118,954 parameters), with hippynn's initial weights copied into thermocg's HipnnTS. ``--model FILE`` times a trained thermocg
model instead (its prior included; no hippynn run).

1. CG MD steps/s, ours against hippynn (``--no-hippynn`` skips it):
   - ours: ``thermocg.md.simulate`` (BAOAB, vesin skin list with 1 A skin, blow-up checks every 10 steps)
   - hippynn: ``MolecularDynamics`` + ``LangevinDynamics`` with its ``PeriodicPairIndexerMemory`` pair
     finder (1 A skin) and a ``Predictor`` computing forces by ``GradientNode``.
   Warmed up, then timed over ``--steps`` / ``--hippynn-steps`` steps, interleaved ``--repeats`` times;
   the median is reported.
2. ns/day of CG MD against all-atom OpenMM of the same number of molecules on the same threads:
   - all-atom: thermocg.allatom's force field for ``--molecule`` (TraPPE-UA methanol: CH3-O and O-H bonds
     rigid, as TraPPE prescribes: OpenMM constraints; the CH3-O-H angle flexible), PME, LangevinMiddle at
     ``--aa-timestep-fs`` (2 fs, its practical step with rigid bonds), OpenMM's CPU platform with its
     default (fastest) settings (no deterministic summation), after a short minimisation and warm-up;
   - CG single step: BAOAB at ``--cg-timestep-fs``;
   - CG r-RESPA: BAOAB-RESPA with ``--respa-outer-fs`` outer steps of ``--respa-inner-steps`` inner
     steps (0 inner steps: not run), the fast part a 5 A pair (``--respa-pair-cutoff-A``) fitted by MS-CG
     to the network's own forces on jittered copies of the frame (for a speed test the pair's values do
     not matter, only its range), tabulated (``thermocg.md.splitting``).
   The headline ``speedup_vs_openmm_allatom_ns_per_day`` is the r-RESPA run's when one is run, else the
   single-step run's. Which timestep and scheme leave the structure unchanged is shown by
   scripts/timestep_evidence.py (docs/performance.md); the defaults here are the recommended ones.

    python bench/bench_md.py [--n-beads 1000] [--steps 10] [--hippynn-steps 5] [--threads 2]

Measured here: see docs/performance.md (figures with the machine's load at the time). Earlier, before
r-RESPA: 2 threads, idle machine: ours 8.86 steps/s, hippynn 0.32 steps/s (27.5x); all-atom TraPPE
methanol (3,000 sites, 1 fs, deterministic forces) 8.98 ns/day; the reference HIP-NN-TS at 2 fs 1.53
ns/day (0.17x).

Ends with one line of JSON (``speedup_vs_hippynn_md``, ``speedup_vs_openmm_allatom_ns_per_day`` ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import numpy as np

METHANOL_MASS = 32.04
#: the all-atom run's density (liquid methanol near 300 K), so CG and all-atom runs hold the same molecules in
#: the same volume (until 2026-12-03 the CG frame had 0.0128 beads/A^3, 0.681 g/cm^3: 13% fewer pairs)
DENSITY_G_CM3 = 0.786
DENSITY_BEADS_A3 = DENSITY_G_CM3 * 0.602214076 / METHANOL_MASS


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
#: the recommended CG schemes (docs/performance.md: structure unchanged against 1 fs within the noise floor)
DEFAULT_CG_TIMESTEP_FS = 12.0
DEFAULT_RESPA_OUTER_FS = 24.0
DEFAULT_RESPA_INNER_STEPS = 6


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


def make_frame_jittered(n_beads: int, seed: int, jitter: float):
    """Like :func:`make_frame` with a larger jitter (fraction of the lattice spacing)."""
    from thermocg.frames import Frames

    frame = make_frame(n_beads, seed)
    rng = np.random.default_rng(seed)
    length = frame.box[0, 0, 0]
    side = round(n_beads ** (1 / 3))
    positions = frame.positions[0] + rng.uniform(-jitter, jitter, (n_beads, 3)) * length / side
    return Frames(positions=positions, box=frame.box[0], types=frame.types, type_names=frame.type_names,
                  masses=frame.masses)


def fast_pair_part(model, n_beads: int, cutoff_A: float):
    """The r-RESPA fast part for the timing: a pair fitted by MS-CG to the model's forces on four jittered
    copies of the lattice (the values do not change the timing, the range does), tabulated."""
    from thermocg.frames import Frames
    from thermocg.md.splitting import TabulatedPair, fit_pair_part

    copies = [make_frame_jittered(n_beads, seed, 0.3) for seed in range(4)]
    frames = Frames(positions=np.concatenate([c.positions for c in copies]),
                    box=np.concatenate([c.box for c in copies]), types=copies[0].types,
                    type_names=tuple(model.type_names), masses=copies[0].masses)
    return TabulatedPair.from_pair_potential(fit_pair_part(model, frames, cutoff_A=cutoff_A, r_min_A=0.5))


#: neighbour-list rebuilds per step of each timed run of ours, in order
BUILDS: list[float] = []


def time_ours(model, frame, n_steps: int, dt_fs: float, seed: int, *, fast=None, inner_steps: int = 1,
              skin_A: float = 1.0) -> float:
    """Steps/s (outer steps for r-RESPA) of thermocg's Langevin MD, blow-up thresholds off."""
    from thermocg.md import simulate

    result = simulate(model, frame, temperature_K=300.0, timestep_fs=dt_fs, n_steps=n_steps, seed=seed,
                      save_interval_steps=max(n_steps, 1), keep_frames=False, friction_per_ps=1.0,
                      integrator="respa_langevin" if fast is not None else "langevin", fast_potential=fast,
                      respa_inner_steps=inner_steps, skin_A=skin_A, raise_on_blowup=False, max_force_kcal_mol_A=1e9,
                      min_distance_A=0.0, max_temperature_factor=1e9, progress=False)
    if result.blowup:
        print(f"  (ours stopped early: {result.blowup})", file=sys.stderr)
    BUILDS.append((result.n_neighbor_builds - 1) / max(result.n_steps, 1))  # the first build is not a rebuild
    return result.steps_per_s


def time_hippynn(peer: HippynnMD, n_steps: int, dt_fs: float) -> float:
    start = time.perf_counter()
    peer.run(n_steps, dt_fs)
    return n_steps / (time.perf_counter() - start)


class AllAtomMD:
    """All-atom OpenMM Langevin MD of ``n_molecules`` molecules at 0.786 g/cm^3 (OpenMM CPU platform with
    its default settings), built, minimised and warmed up once; :meth:`steps_per_s` times a stretch."""

    def __init__(self, molecule_name: str, n_molecules: int, threads: int, dt_fs: float, seed: int) -> None:
        import openmm

        from thermocg import units
        from thermocg.allatom.build import build_box
        from thermocg.allatom.molecules import get_molecule
        from thermocg.allatom.runner import build_system, resolve_cutoff_A

        molecule = get_molecule(molecule_name)
        positions, box = build_box(molecule, n_molecules, 0.786, rng=np.random.default_rng(seed))
        system = build_system(molecule, n_molecules, box, cutoff_A=resolve_cutoff_A(molecule, box))
        self.n_atoms, self.n_constraints = system.getNumParticles(), system.getNumConstraints()
        self.dt_fs = dt_fs
        self.integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, dt_fs * units.FS_TO_PS)
        self.integrator.setRandomNumberSeed(seed)
        platform = openmm.Platform.getPlatformByName("CPU")
        self.context = openmm.Context(system, self.integrator, platform, {"Threads": str(threads)})
        self.context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box) * units.A_TO_NM])
        self.context.setPositions(np.asarray(positions) * units.A_TO_NM)
        openmm.LocalEnergyMinimizer.minimize(self.context, 10.0, 200)
        self.context.setVelocitiesToTemperature(300.0, seed)
        self.integrator.step(50)  # warm-up

    def steps_per_s(self, n_steps: int) -> float:
        start = time.perf_counter()
        self.integrator.step(n_steps)
        energy = self.context.getState(getEnergy=True).getPotentialEnergy()._value
        elapsed = time.perf_counter() - start
        if not np.isfinite(energy):
            raise SystemExit(f"the all-atom run at {self.dt_fs} fs is unstable (energy {energy})")
        return n_steps / elapsed


def ns_per_day(steps_per_s: float, dt_fs: float) -> float:
    return steps_per_s * dt_fs * 1e-6 * 86400.0


def network_params(args: argparse.Namespace) -> dict:
    return dict(n_features=args.n_features, n_sensitivities=args.n_sensitivities, dist_soft_min=args.soft_min_A,
                dist_soft_max=args.soft_max_A, dist_hard_max=args.cutoff_A, n_atom_layers=args.n_atom_layers,
                n_interaction_layers=args.n_interaction_layers)


def build_network(params: dict, frame, *, with_hippynn: bool):
    """(the hippynn peer or None, our HipnnTS): hippynn's initial weights in both when hippynn runs."""
    if with_hippynn:
        peer = HippynnMD(frame, params)
        return peer, peer.ours
    from thermocg.potentials.hipnn import HipnnTS

    return None, HipnnTS(["MeOH"], n_features=params["n_features"], n_sensitivities=params["n_sensitivities"],
                         dist_soft_min_A=params["dist_soft_min"], dist_soft_max_A=params["dist_soft_max"],
                         cutoff_A=params["dist_hard_max"], n_interaction_layers=params["n_interaction_layers"],
                         n_atom_layers=params["n_atom_layers"], seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of our MD per repeat")
    parser.add_argument("--hippynn-steps", type=int, default=5, help="timed steps of hippynn's MD per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cg-timestep-fs", type=float, default=DEFAULT_CG_TIMESTEP_FS,
                        help="single-step CG timestep")
    parser.add_argument("--respa-outer-fs", type=float, default=DEFAULT_RESPA_OUTER_FS)
    parser.add_argument("--respa-inner-steps", type=int, default=DEFAULT_RESPA_INNER_STEPS,
                        help="inner steps per outer step; 0: no r-RESPA run")
    parser.add_argument("--respa-pair-cutoff-A", type=float, default=5.0)
    parser.add_argument("--skin-A", type=float, default=1.0, help="neighbour-list skin of our CG runs")
    parser.add_argument("--aa-timestep-fs", type=float, default=2.0)
    parser.add_argument("--aa-steps", type=int, default=100, help="timed all-atom steps per repeat")
    parser.add_argument("--molecule", default="methanol_trappe")
    parser.add_argument("--no-allatom", action="store_true")
    parser.add_argument("--no-hippynn", action="store_true", help="skip the hippynn MD comparison")
    parser.add_argument("--model", default=None, help="a trained thermocg model file to time (implies --no-hippynn)")
    parser.add_argument("--fast-dataset", default=None,
                        help="CG dataset (.h5md) whose frames the r-RESPA pair is fitted on (as "
                             "scripts/timestep_evidence.py does; needed with --model: a pair fitted on the "
                             "lattice copies leaves a trained model's remainder too stiff to integrate)")
    size = parser.add_argument_group("network size (default: the reference HIP-NN-TS)")
    size.add_argument("--n-features", type=int, default=REFERENCE["n_features"])
    size.add_argument("--n-sensitivities", type=int, default=REFERENCE["n_sensitivities"])
    size.add_argument("--cutoff-A", type=float, default=REFERENCE["dist_hard_max"])
    size.add_argument("--soft-min-A", type=float, default=REFERENCE["dist_soft_min"])
    size.add_argument("--soft-max-A", type=float, default=REFERENCE["dist_soft_max"])
    size.add_argument("--n-interaction-layers", type=int, default=REFERENCE["n_interaction_layers"])
    size.add_argument("--n-atom-layers", type=int, default=REFERENCE["n_atom_layers"])
    args = parser.parse_args()
    setup(args.threads)
    import torch

    frame = make_frame(args.n_beads, seed=1)
    print(f"{args.n_beads} beads, box {frame.box[0, 0, 0]:.1f} A, {args.threads} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.model:
        from thermocg.potentials.base import load_potential

        peer, ours_model = None, load_potential(args.model)
        frame = dataclasses.replace(frame, type_names=tuple(ours_model.type_names))
        params = {"model": args.model, **ours_model.describe().get("hyperparameters", {})}
    else:
        params = network_params(args)
        peer, ours_model = build_network(params, frame, with_hippynn=not args.no_hippynn)
    n_params = sum(p.numel() for p in ours_model.parameters())
    print(f"HIP-NN-TS {params}: {n_params:,} parameters")
    fast = None
    if args.respa_inner_steps > 0:
        if args.fast_dataset:
            from thermocg.dataset import read_frames
            from thermocg.md.splitting import fast_part

            fast = fast_part(ours_model, "pair", frames=read_frames(args.fast_dataset),
                             cutoff_A=args.respa_pair_cutoff_A)
        else:
            fast = fast_pair_part(ours_model, args.n_beads, args.respa_pair_cutoff_A)
    # warm-up (first calls allocate, hippynn builds its pair memory)
    time_ours(ours_model, frame, 3, args.cg_timestep_fs, seed=0)
    if fast is not None:
        time_ours(ours_model, frame, 2, args.respa_outer_fs, seed=0, fast=fast, inner_steps=args.respa_inner_steps)
    if peer is not None:
        peer.run(2, args.cg_timestep_fs)
    allatom = None
    if not args.no_allatom:
        allatom = AllAtomMD(args.molecule, args.n_beads, args.threads, args.aa_timestep_fs, seed=2)
    # interleaved repeats: every peer in every repeat, so a change of the machine's load hits all alike
    single, respa, theirs, aa = [], [], [], []
    BUILDS.clear()
    for r in range(args.repeats):
        single.append(time_ours(ours_model, frame, args.steps, args.cg_timestep_fs, seed=r, skin_A=args.skin_A))
        line = f"  repeat {r}: ours {single[-1]:.2f} steps/s"
        if fast is not None:
            respa.append(time_ours(ours_model, frame, args.steps, args.respa_outer_fs, seed=r, fast=fast,
                                   inner_steps=args.respa_inner_steps, skin_A=args.skin_A))
            line += f", ours r-RESPA {respa[-1]:.2f} outer steps/s"
        if peer is not None:
            theirs.append(time_hippynn(peer, args.hippynn_steps, args.cg_timestep_fs))
            line += f", hippynn {theirs[-1]:.2f} steps/s"
        if allatom is not None:
            aa.append(allatom.steps_per_s(args.aa_steps))
            line += f", all-atom {aa[-1]:.1f} steps/s"
        print(line, flush=True)
    single_sps = statistics.median(single)
    out: dict[str, float | int | str | None] = {
        "n_beads": args.n_beads, "threads": args.threads, "n_parameters": n_params, "network": json.dumps(params),
        "skin_A": args.skin_A,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "ours_steps_per_s": round(single_sps, 4), "cg_timestep_fs": args.cg_timestep_fs,
        "neighbor_builds_per_step_single": round(statistics.mean(BUILDS[0::2 if respa else 1]), 3),
        "cg_single_ns_per_day": round(ns_per_day(single_sps, args.cg_timestep_fs), 5),
    }
    if peer is not None:
        theirs_sps = statistics.median(theirs)
        out.update(hippynn_steps_per_s=round(theirs_sps, 4), speedup_vs_hippynn_md=round(single_sps / theirs_sps, 3))
        print(f"CG MD: ours {single_sps:.2f} steps/s vs hippynn {theirs_sps:.2f} steps/s -> "
              f"{single_sps / theirs_sps:.2f}x")
    print(f"CG MD single step: {out['cg_single_ns_per_day']:.4f} ns/day at {args.cg_timestep_fs} fs")
    headline = float(out["cg_single_ns_per_day"])
    if fast is not None:
        respa_sps = statistics.median(respa)
        out.update(respa_outer_fs=args.respa_outer_fs, respa_inner_steps=args.respa_inner_steps,
                   respa_pair_cutoff_A=args.respa_pair_cutoff_A, respa_outer_steps_per_s=round(respa_sps, 4),
                   cg_respa_ns_per_day=round(ns_per_day(respa_sps, args.respa_outer_fs), 5),
                   respa_step_cost_vs_single=round(single_sps / respa_sps, 3),
                   neighbor_builds_per_outer_step_respa=round(statistics.mean(BUILDS[1::2]), 3))
        headline = float(out["cg_respa_ns_per_day"])
        print(f"CG MD r-RESPA {args.respa_outer_fs} fs outer / {args.respa_inner_steps} inner: "
              f"{respa_sps:.2f} outer steps/s, {out['cg_respa_ns_per_day']:.4f} ns/day (an outer step costs "
              f"{out['respa_step_cost_vs_single']}x a single step)")
    out["cg_ns_per_day"] = headline
    if allatom is not None:
        aa_sps, n_atoms, n_constraints = statistics.median(aa), allatom.n_atoms, allatom.n_constraints
        aa_ns = ns_per_day(aa_sps, args.aa_timestep_fs)
        out.update({"allatom_molecule": args.molecule, "allatom_atoms": n_atoms, "allatom_constraints": n_constraints,
                    "allatom_steps_per_s": round(aa_sps, 3), "allatom_timestep_fs": args.aa_timestep_fs,
                    "allatom_ns_per_day": round(aa_ns, 5),
                    "speedup_single_vs_openmm_allatom_ns_per_day": round(float(out["cg_single_ns_per_day"]) / aa_ns, 4),
                    "speedup_vs_openmm_allatom_ns_per_day": round(headline / aa_ns, 4),
                    # the single-step CG timestep at which the network would match the all-atom ns/day
                    "cg_break_even_timestep_fs": round(aa_ns / (single_sps * 1e-6 * 86400.0), 2)})
        print(f"all-atom OpenMM {args.molecule} ({n_atoms} sites, {n_constraints} constraints): {aa_sps:.1f} steps/s, "
              f"{aa_ns:.3f} ns/day at {args.aa_timestep_fs} fs; CG/AA ns/day = "
              f"{out['speedup_vs_openmm_allatom_ns_per_day']} (single step: "
              f"{out['speedup_single_vs_openmm_allatom_ns_per_day']}); single-step CG breaks even at "
              f"{out['cg_break_even_timestep_fs']} fs")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

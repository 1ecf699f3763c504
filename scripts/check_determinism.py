"""Fingerprints of the numerics behind the demo, to tell whether two machines give the same results.

Runs, on this machine:

1. a short all-atom OpenMM run of 32 TraPPE methanols (the demo's generator: CPU platform,
   DeterministicForces, ``--threads`` threads) and hashes its positions and forces;
2. a HIP-NN-TS training of two epochs on those frames (thermocg's trainer, fixed seed) and hashes the
   weights;
3. a Langevin CG MD run of 200 steps with that model and hashes the positions.

It prints one JSON line: the hashes, the OpenMM and torch versions and torch's CPU capability (the
SIMD kernels torch dispatched to: ``ATEN_CPU_CAPABILITY`` chooses them). Run it on two machines, or
on one machine under different settings, and compare the lines: equal hashes mean bit-identical
results. Example::

    python scripts/check_determinism.py --threads 1
    ATEN_CPU_CAPABILITY=default python scripts/check_determinism.py --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="OpenMM and torch threads")
    args = parser.parse_args()

    import openmm
    import torch

    from thermocg.allatom.runner import generate_state
    from thermocg.config import GenerateConfig, TrainConfig
    from thermocg.dataset import read_frames
    from thermocg.frames import StatePoint
    from thermocg.md import simulate
    from thermocg.train import train_potential

    torch.set_num_threads(args.threads)
    out: dict[str, object] = {"openmm": openmm.__version__, "torch": torch.__version__,
                              "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        settings = GenerateConfig(platform="CPU", n_threads=args.threads, equilibration_ps=0.2, production_ps=0.5,
                                  save_interval_fs=25.0, thermo_interval_fs=100.0, save_velocities=False)
        traj = generate_state("methanol_trappe", StatePoint(300.0, density_g_cm3=0.78), n_molecules=32,
                              settings=settings, seed=2024, out_dir=Path(tmp) / "aa", progress=False)
        frames = read_frames(traj)
        out["allatom"] = digest(frames.positions, frames.forces)
        config = TrainConfig(n_features=16, n_sensitivities=8, n_atom_layers=1, max_epochs=2, batch_size=4,
                             max_batch_size=4, cutoff_A=5.5, prior=False, n_threads=args.threads, progress=False)
        result = train_potential([frames], config, Path(tmp) / "model", seed=2024)
        weights = [p.detach().cpu().numpy() for p in result.potential.state_dict().values()]
        out["training"] = digest(*weights)
        # (the blow-up checks off: a two-epoch model on all-atom frames is no stable force field, and
        # the run only has to be long enough for its numbers to differ if anything differs)
        run = simulate(result.potential, frames, temperature_K=300.0, timestep_fs=0.5, n_steps=200, seed=7,
                       save_interval_steps=50, max_temperature_factor=1e9, max_force_kcal_mol_A=1e12,
                       min_distance_A=0.0, raise_on_blowup=False, progress=False)
        out["cg_md"] = digest(run.frames.positions)
        out["cg_md_steps"] = run.n_steps
    print(json.dumps(out))


if __name__ == "__main__":
    main()

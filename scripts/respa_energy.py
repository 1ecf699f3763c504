#!/usr/bin/env python
"""NVE energy conservation of a trained model: velocity Verlet against r-RESPA at the same outer step.

From the last frame of a CG dataset, a short Langevin run (``--equilibrate-ps``) at the state's
temperature gives an equilibrated start with velocities; from it, NVE runs of ``--duration-ps`` at each
timestep of ``--timesteps``: velocity Verlet, and r-RESPA with the fast part (``--fast pair``: an MS-CG
pair fitted to the model's own forces at ``--pair-cutoff-A``, or ``--fast prior``) taken every
``--inner-fs`` fs (inner steps = timestep / inner-fs). For each: the total energy's fluctuation (its
standard deviation) and drift (the change over the run of a straight-line fit), in kcal/mol and per
bead, the mean temperature, and whether it blew up. A scheme conserves energy no worse than another at
the same outer step when both numbers are no larger.

    nice -n 10 python scripts/respa_energy.py --model RUN/models/hipnn_ts-pooled/model.safetensors \\
        --dataset RUN/cg/T310_rho0.777.h5md --out respa-energy-T310

Writes OUT/energy.json and OUT/energy.md; last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timesteps", default="2,4,8,12,16,20")
    parser.add_argument("--inner-fs", type=float, default=2.0)
    parser.add_argument("--fast", choices=("pair", "prior"), default="pair")
    parser.add_argument("--pair-cutoff-A", type=float, default=5.0)
    parser.add_argument("--equilibrate-ps", type=float, default=5.0)
    parser.add_argument("--duration-ps", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from thermocg.dataset import read_frames
    from thermocg.md import simulate
    from thermocg.md.splitting import fast_part
    from thermocg.potentials.base import load_potential
    from thermocg.rundir import atomic_write_text

    model = load_potential(args.model)
    data = read_frames(args.dataset)
    temperature = data.state.temperature_K
    start = simulate(model, data.select(slice(-1, None)), temperature_K=temperature, timestep_fs=2.0,
                     n_steps=int(args.equilibrate_ps * 500), seed=args.seed, save_interval_steps=10**9,
                     progress=False).final
    from thermocg.frames import Frames

    initial = Frames(positions=start.positions[None], box=start.box[None], types=data.types,
                     type_names=data.type_names, masses=data.masses, velocities=start.velocities[None])
    fast = fast_part(model, args.fast, frames=data, cutoff_A=args.pair_cutoff_A)
    rows = []
    for dt in map(float, args.timesteps.split(",")):
        for scheme in ("velocity Verlet", "r-RESPA"):
            inner = max(1, int(round(dt / args.inner_fs))) if scheme == "r-RESPA" else 1
            n_steps = int(round(args.duration_ps * 1000 / dt))
            every = max(1, int(round(20.0 / dt)))
            result = simulate(model, initial, temperature_K=temperature, timestep_fs=dt, n_steps=n_steps,
                              seed=args.seed, integrator="respa_nve" if scheme == "r-RESPA" else "nve",
                              fast_potential=fast if scheme == "r-RESPA" else None, respa_inner_steps=inner,
                              initial_velocities="frame", save_interval_steps=n_steps, thermo_interval_steps=every,
                              keep_frames=False, raise_on_blowup=False, progress=False)
            row = {"scheme": scheme, "timestep_fs": dt, "inner_steps": inner, "blowup": result.blowup}
            th = result.thermo
            if not result.blowup and len(th["total_kcal_mol"]) > 2:
                total = th["total_kcal_mol"]
                slope = np.polyfit(th["time_ps"], total, 1)[0]
                row.update(fluctuation_kcal_mol=float(total.std()),
                           drift_kcal_mol=float(slope * (th["time_ps"][-1] - th["time_ps"][0])),
                           mean_temperature_K=float(th["temperature_K"].mean()),
                           wall_s=result.wall_time_s)
                row["fluctuation_per_bead"] = row["fluctuation_kcal_mol"] / data.n_particles
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": args.model, "dataset": args.dataset, "temperature_K": temperature, "fast": args.fast,
               "pair_cutoff_A": args.pair_cutoff_A, "inner_fs": args.inner_fs, "duration_ps": args.duration_ps,
               "n_beads": data.n_particles, "rows": rows}
    atomic_write_text(out / "energy.json", json.dumps(summary, indent=1) + "\n")
    lines = ["| timestep (fs) | scheme | inner steps | total-energy fluctuation (kcal/mol) | drift over the run "
             "(kcal/mol) | mean T (K) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("blowup") or "fluctuation_kcal_mol" not in r:
            lines.append(f"| {r['timestep_fs']:g} | {r['scheme']} | {r['inner_steps']} | blew up | - | - |")
        else:
            lines.append(f"| {r['timestep_fs']:g} | {r['scheme']} | {r['inner_steps']} | {r['fluctuation_kcal_mol']:.4f} "
                         f"| {r['drift_kcal_mol']:+.4f} | {r['mean_temperature_K']:.1f} |")
    atomic_write_text(out / "energy.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    no_worse = all(
        rr.get("blowup") is None and "fluctuation_kcal_mol" in rr and "fluctuation_kcal_mol" in rv
        and rr["fluctuation_kcal_mol"] <= rv["fluctuation_kcal_mol"]
        and abs(rr["drift_kcal_mol"]) <= max(abs(rv["drift_kcal_mol"]), 0.2 * rv["fluctuation_kcal_mol"])
        for rv, rr in zip(rows[0::2], rows[1::2]) if not rv.get("blowup"))
    print(json.dumps({"respa_no_worse_than_single_at_every_step": no_worse, "out": str(out / "energy.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

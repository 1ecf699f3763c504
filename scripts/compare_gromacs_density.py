#!/usr/bin/env python
"""The NPT liquid density of one built-in force field in thermocg (OpenMM) and in GROMACS, same run.

The same box (built and minimised as ``thermocg generate`` does it) runs NPT in both engines at the
same state point: thermocg's ``generate_state`` (Langevin middle integrator + Monte Carlo barostat)
and GROMACS on the inputs of ``thermocg export-allatom`` (stochastic dynamics + C-rescale barostat).
Each density is the mean over the second half of the run with a block-average standard error (5
blocks). Where no trusted literature density exists for a force field as we define it (OPLS-AA
methanol with PME and a 12 A cutoff), an independent engine running the same force field is the
referee: the two densities must agree within their errors.

    python scripts/compare_gromacs_density.py --molecule methanol_opls --n 300 --npt-ps 60

Needs ``gmx`` (or ``gmx_d``) on the PATH. Prints both densities, their difference in units of the
combined error and, last, one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from thermocg.allatom.gromacs import run_export_allatom
from thermocg.allatom.runner import block_stderr, generate_state
from thermocg.config import Config, from_dict
from thermocg.frames import StatePoint


def run_gmx(gmx: str, args: list[str], cwd: Path, threads: int, stdin: str | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GMX_MAXBACKUP": "-1"}
    if args[0] == "mdrun":
        args = [*args, "-ntmpi", "1", "-ntomp", str(threads)]
    done = subprocess.run([gmx, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"gmx {args[0]} failed in {cwd}:\n{done.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecule", default="methanol_opls")
    parser.add_argument("--n", type=int, default=300, help="molecules (the box must hold the force field's cutoff)")
    parser.add_argument("--temperature-K", type=float, default=298.0)
    parser.add_argument("--pressure-bar", type=float, default=1.0)
    parser.add_argument("--npt-ps", type=float, default=60.0, help="NPT length; the second half is averaged")
    parser.add_argument("--timestep-fs", type=float, default=1.0, help="1 fs: OPLS-AA has flexible X-H bonds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--gmx", default=shutil.which("gmx") or "gmx")
    parser.add_argument("--out", help="keep the outputs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if shutil.which(args.gmx) is None:
        raise SystemExit(f"{args.gmx}: GROMACS is not on the PATH")

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="thermocg_gmx_density_"))
    config: Config = from_dict(Config, {
        "run_dir": str(out), "seed": args.seed,
        "system": {"molecule": args.molecule, "n_molecules": args.n},
        "states": [{"temperature_K": args.temperature_K, "pressure_bar": args.pressure_bar}],
        "generate": {"platform": "CPU", "n_threads": args.threads, "timestep_fs": args.timestep_fs,
                     "npt_equilibration_ps": args.npt_ps, "equilibration_ps": 0.0, "production_ps": 1.0,
                     "save_interval_fs": 100.0, "thermo_interval_fs": 100.0, "save_velocities": False},
    })
    state = StatePoint(args.temperature_K, pressure_bar=args.pressure_bar)
    results = {"molecule": args.molecule, "n_molecules": args.n, "temperature_K": args.temperature_K,
               "pressure_bar": args.pressure_bar, "npt_ps": args.npt_ps}

    # GROMACS: the exported inputs, NPT for npt_ps
    (work,) = run_export_allatom(config, out, progress=True)
    t0 = time.perf_counter()
    run_gmx(args.gmx, ["grompp", "-f", "npt.mdp", "-c", "conf.gro", "-p", "topol.top", "-o", "npt.tpr"], work,
            args.threads)
    run_gmx(args.gmx, ["mdrun", "-deffnm", "npt"], work, args.threads)
    gmx_seconds = time.perf_counter() - t0
    run_gmx(args.gmx, ["energy", "-f", "npt.edr", "-o", "density.xvg"], work, args.threads, stdin="Density\n0\n")
    rows = np.array([[float(v) for v in ln.split()[:2]] for ln in (work / "density.xvg").read_text().splitlines()
                     if ln and ln[0] not in "#@"])
    second_half = rows[rows[:, 0] >= rows[-1, 0] / 2, 1] / 1000.0  # kg/m^3 -> g/cm^3
    gmx_density, gmx_error = float(second_half.mean()), block_stderr(second_half)  # as generate_state does
    results.update(gromacs_density_g_cm3=gmx_density, gromacs_error=gmx_error, gromacs_seconds=gmx_seconds)
    print(f"GROMACS : {gmx_density:.4f} +- {gmx_error:.4f} g/cm^3 ({gmx_seconds:.0f} s)")

    # thermocg (OpenMM): the same state from the same seed
    t0 = time.perf_counter()
    generate_state(args.molecule, state, n_molecules=args.n, settings=config.generate, seed=args.seed,
                   out_dir=out / "openmm", progress=True)
    omm_seconds = time.perf_counter() - t0
    meta = json.loads((out / "openmm" / "metadata.json").read_text())
    omm_density = float(meta["equilibrated_density_g_cm3"]["mean"])
    omm_error = float(meta["equilibrated_density_g_cm3"]["stderr"])
    results.update(thermocg_density_g_cm3=omm_density, thermocg_error=omm_error, thermocg_seconds=omm_seconds)
    print(f"thermocg: {omm_density:.4f} +- {omm_error:.4f} g/cm^3 ({omm_seconds:.0f} s)")

    combined = float(np.hypot(gmx_error, omm_error))
    results["difference_g_cm3"] = omm_density - gmx_density
    results["difference_in_errors"] = (omm_density - gmx_density) / combined if combined > 0 else float("nan")
    results["relative_difference"] = (omm_density - gmx_density) / gmx_density
    print(f"difference {results['difference_g_cm3']:+.4f} g/cm^3 ({results['relative_difference']:+.2%}, "
          f"{results['difference_in_errors']:+.1f} combined errors); outputs in {out}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

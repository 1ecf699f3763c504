#!/usr/bin/env python
"""Validate the all-atom force fields by their NPT liquid density at 298 K and 1 bar.

Runs thermocg's own generation (``thermocg.allatom.runner.generate_state``) at a pressure state point
and reads the equilibrated density it records (mean over the second half of the NPT run, with a
block-average standard error). Expected (literature):

- TraPPE-UA methanol, 298 K, 1 bar: about 0.78-0.79 g/cm^3 (Chen, Potoff & Siepmann 2001 report
  0.787 +- 0.005 at 298 K; experiment 0.787); we accept within 2 % of 0.786.
- SPC/E water, 298 K, 1 bar: about 0.998 g/cm^3 (PME + dispersion correction); within 2 %.
- methanol-water (TraPPE-UA + SPC/E, Lorentz-Berthelot cross terms) at x(methanol) = 0.5, 298 K,
  1 bar: experiment 0.886 g/cm^3 (mass fraction 0.640 at 25 C); within 2 % of experiment. With the
  pure liquids in the same run (same cutoff, same settings) the script also gives the excess molar
  volume V_E = V_m(mix) - x V_m(methanol) - (1 - x) V_m(water), V_m = M / rho (experiment at x = 0.5:
  about -1.0 cm^3/mol, negative: the mixture contracts), with its error propagated from the three
  block-average errors.

A density far off means a parameter or a unit is wrong. Prints mean +- error and ns/day per system and,
last, one line of JSON. Example (2 threads, ~20 min)::

    OMP_NUM_THREADS=1 python scripts/validate_density.py --n-methanol 450 --n-water 400 --npt-ps 60

Measured with one 12 A cutoff for all three (tail corrections, PME), 80 ps NPT at 2 fs, the second half
averaged (``--cutoff-A 12 --n-mixture 500 --n-methanol 400 --n-water 700 --npt-ps 80 --seed 7``, one
thread, ~25 min on a shared 2-core machine): TraPPE-UA methanol 0.7817 +- 0.0023, SPC/E water
0.9991 +- 0.0013, the x = 0.5 mixture 0.8764 +- 0.0036 g/cm^3 (experiment 0.886: -1.1 %; ideal mixing
of the two force fields' liquids would give 0.848), excess volume -0.95 +- 0.13 cm^3/mol. A second,
longer mixture run (``--systems methanol_water --npt-ps 200 --seed 8``: 100 ps averaged) gave
0.8754 +- 0.0028 g/cm^3, V_E -0.92 +- 0.11 cm^3/mol with the first run's pure liquids: the mixture
contracts, as the real one does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import math

from thermocg.allatom.mixture import Component, Mixture
from thermocg.allatom.molecules import get_molecule
from thermocg.allatom.runner import generate_state
from thermocg.config import GenerateConfig
from thermocg.frames import StatePoint

EXPECTED = {"methanol_trappe": 0.786, "water_spce": 0.998, "methanol_water": 0.886}
#: experimental excess molar volume of methanol-water at x = 0.5, 298 K (cm^3/mol)
EXPECTED_EXCESS_VOLUME_CM3_MOL = -1.0
AVOGADRO = 6.02214076e23


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-methanol", type=int, default=450, help="molecules (>= ~445 for the 14 A cutoff)")
    parser.add_argument("--n-water", type=int, default=400, help="molecules (>= ~370 for the 10 A cutoff)")
    parser.add_argument("--n-mixture", type=int, default=300,
                        help="molecules of the x = 0.5 methanol-water mixture (half of each)")
    parser.add_argument("--cutoff-A", type=float, default=None,
                        help="one non-bonded cutoff for every system (default: each force field's own)")
    parser.add_argument("--npt-ps", type=float, default=60.0, help="NPT length; the second half is averaged")
    parser.add_argument("--production-ps", type=float, default=5.0, help="NVT run after NPT, timed for ns/day")
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--platform", default="auto")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--systems", nargs="+", default=list(EXPECTED), choices=list(EXPECTED))
    parser.add_argument("--out", help="keep the outputs here (default: a temporary directory)")
    args = parser.parse_args(argv)

    settings = GenerateConfig(
        platform=args.platform, n_threads=args.threads, timestep_fs=args.timestep_fs,
        npt_equilibration_ps=args.npt_ps, equilibration_ps=0.0, production_ps=args.production_ps,
        save_interval_fs=100.0, thermo_interval_fs=100.0, save_velocities=False,
        nonbonded_cutoff_A=args.cutoff_A,
    )
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="thermocg_validate_"))
    sizes = {"methanol_trappe": args.n_methanol, "water_spce": args.n_water, "methanol_water": args.n_mixture}
    half = args.n_mixture // 2
    mixture = Mixture((Component(get_molecule("methanol_trappe"), half),
                       Component(get_molecule("water_spce"), args.n_mixture - half)))
    state = StatePoint(298.0, pressure_bar=1.0)
    results = {}
    ok = True
    for name in args.systems:
        t0 = time.perf_counter()
        if name == "methanol_water":
            generate_state(mixture, StatePoint(298.0, pressure_bar=1.0, mole_fractions=mixture.mole_fractions),
                           settings=settings, seed=args.seed, out_dir=out_root / name, progress=True)
        else:
            generate_state(name, state, n_molecules=sizes[name], settings=settings, seed=args.seed,
                           out_dir=out_root / name, progress=True)
        wall = time.perf_counter() - t0
        meta = json.loads((out_root / name / "metadata.json").read_text())
        rho = meta["equilibrated_density_g_cm3"]
        ns_day = meta["ns_per_day"]  # NVT production with force and frame output, timed alone
        rel = rho["mean"] / EXPECTED[name] - 1.0
        passed = abs(rel) <= 0.02
        ok &= passed
        results[name] = {
            "density_g_cm3": round(rho["mean"], 4), "stderr_g_cm3": round(rho["stderr"], 4),
            "expected_g_cm3": EXPECTED[name], "relative_error": round(rel, 4), "within_2pct": passed,
            "n_molecules": sizes[name], "cutoff_A": meta["cutoff_A"], "npt_ps": args.npt_ps,
            "ns_per_day": round(ns_day, 3), "wall_s": round(wall, 1), "platform": meta["platform"], "threads": args.threads,
        }
        print(f"{name:16s} density {rho['mean']:.4f} +- {rho['stderr']:.4f} g/cm^3 (expected "
              f"{EXPECTED[name]}, {100 * rel:+.2f} %) {'OK' if passed else 'FAIL'}; "
              f"{ns_day:.2f} ns/day on {meta['platform']} ({args.threads} threads), cutoff {meta['cutoff_A']:.1f} A",
              flush=True)
    summary: dict = {"validate_density": results, "all_within_2pct": ok}
    if all(k in results for k in EXPECTED):
        # V_m = M / rho per mole of molecules (cm^3/mol); errors of the three densities propagated
        x = mixture.mole_fractions["methanol_trappe"]
        molar = {k: get_molecule(k).mass_amu for k in ("methanol_trappe", "water_spce")}
        m_mix = x * molar["methanol_trappe"] + (1 - x) * molar["water_spce"]
        terms = [(m_mix, results["methanol_water"]), (-x * molar["methanol_trappe"], results["methanol_trappe"]),
                 (-(1 - x) * molar["water_spce"], results["water_spce"])]
        excess = sum(m / r["density_g_cm3"] for m, r in terms)
        error = math.sqrt(sum((m * r["stderr_g_cm3"] / r["density_g_cm3"] ** 2) ** 2 for m, r in terms))
        ideal = sum(-m / r["density_g_cm3"] for m, r in terms[1:])
        summary["excess_volume"] = {
            "x_methanol": x, "V_E_cm3_mol": round(excess, 3), "stderr_cm3_mol": round(error, 3),
            "relative_to_ideal": round(excess / ideal, 4),
            "ideal_mixing_density_g_cm3": round(m_mix / ideal, 4),
            "experiment_cm3_mol": EXPECTED_EXCESS_VOLUME_CM3_MOL, "sign": "negative" if excess < 0 else "positive",
        }
        print(f"excess molar volume at x = {x:g}: {excess:+.3f} +- {error:.3f} cm^3/mol "
              f"({100 * excess / ideal:+.2f} % of the ideal mixture's; experiment about "
              f"{EXPECTED_EXCESS_VOLUME_CM3_MOL:+.1f})", flush=True)
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

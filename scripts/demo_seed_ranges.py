"""The demo's findings as ranges over seeds: what a user running ``make demo`` on another machine will see.

The demo's numbers are not bit-reproducible across machines (the all-atom run is deterministic for a
given platform and thread count, but torch's CPU kernels differ with the CPU's instruction set and
training amplifies the difference, see docs/study.md), and at 64 molecules the noise floor is as large
as the effects. So a claim about the demo is stated as the range its numbers take over seeds: this
script runs the study config at each seed (``seed`` is the one seed every stage derives its own
from: the all-atom boxes and thermostats, the training, the CG runs) into ``RUN_ROOT/seed<N>``, and
writes ``RUN_ROOT/ranges.md`` (a table: each key figure's minimum, maximum and value per seed) and
``RUN_ROOT/ranges.json``. Runs resume, so an interrupted script can be started again.

    python scripts/demo_seed_ranges.py configs/demo.yaml --seeds 2024 2025 2026 --run-root runs/demo_seeds

Takes about one demo's time per seed (5-20 minutes each on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def table(ranges: dict[str, dict[str, Any]], seeds: list[str]) -> str:
    """The ranges as a Markdown table: figure, min-max, then one column per seed."""
    def cell(value: Any) -> str:
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            return f"{value:.3g}"
        return "n/a" if value is None or isinstance(value, float) else str(value)

    lines = ["| figure | range | " + " | ".join(seeds) + " |", "|---" * (len(seeds) + 2) + "|"]
    for key, r in ranges.items():
        span = f"{cell(r['min'])} - {cell(r['max'])}" if "min" in r else " / ".join(r["distinct"])
        lines.append(f"| {key} | {span} | " + " | ".join(cell(r["values"].get(s)) for s in seeds) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    parser.add_argument("--run-root", default="runs/demo_seeds")
    args = parser.parse_args()

    from thermocg.config import load_config
    from thermocg.rundir import atomic_write_text
    from thermocg.study import StudyError, collect_results, run_study
    from thermocg.study.metrics import key_figures, ranges_over_runs

    root = Path(args.run_root).resolve()
    figures = {}
    for seed in args.seeds:
        config = load_config(args.config)
        config.seed = seed
        run_dir = root / f"seed{seed}"
        config.run_dir = str(run_dir)
        try:
            run_study(config, run_dir)
        except StudyError as exc:  # the report of what finished is there; the ranges say n/a for the rest
            print(f"seed {seed}: {exc}")
        figures[f"seed {seed}"] = key_figures(collect_results(config, run_dir))
    ranges = ranges_over_runs(figures)
    atomic_write_text(root / "ranges.json", json.dumps(ranges, indent=1, default=str))
    text = (f"# {args.config} at seeds {', '.join(map(str, args.seeds))}\n\n"
            "Single-state means at (`single_at_training_state`) and away from (`single_away`) the training "
            "state; `d_ratio` as |log D_CG/D_AA|; pooled models: mean over every state; `verdict`: the family "
            "that transfers better, or indistinguishable within the noise floor.\n\n")
    atomic_write_text(root / "ranges.md", text + table(ranges, list(figures)))
    print(f"ranges over {len(figures)} seeds: {root / 'ranges.md'}")


if __name__ == "__main__":
    main()

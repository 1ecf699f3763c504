"""The command line: a thin table of subcommands.

Each subcommand parses its arguments, loads and validates the config, and calls one
``run_<stage>(config, run_dir, **options)`` function. Heavy imports (torch, openmm) happen inside
the command, so ``thermocg --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Command:
    name: str
    target: str  # "module:function"
    help: str
    #: extra arguments: (flags, argparse kwargs)
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = field(default_factory=tuple)
    needs_config: bool = True
    #: "module:function" mapping the stage's return value to the exit status (None: always 0)
    exit_status: str | None = None


_STATE = (("--state",), {"action": "append", "help": "state label(s) to restrict to (default: all)"})

COMMANDS: tuple[Command, ...] = (
    Command("generate", "thermocg.allatom.runner:run_generate",
            "all-atom reference MD with OpenMM at every state point of the config", (_STATE,)),
    Command("import", "thermocg.allatom.readers:run_import",
            "import all-atom trajectories with forces (LAMMPS, GROMACS, extxyz) listed in the config",
            (_STATE,)),
    Command("export-allatom", "thermocg.allatom.gromacs:run_export_allatom",
            "write GROMACS inputs (.gro, .top, .mdp) of the all-atom system at each state point", (
                _STATE, (("--output",), {"help": "output directory (default: RUN_DIR/gromacs)"}))),
    Command("map", "thermocg.mapping:run_map", "map all-atom trajectories to CG bead datasets", (_STATE,)),
    Command("rdf", "thermocg.analysis.rdf:run_rdf", "RDFs per bead-type pair of the CG datasets", (_STATE,)),
    Command("train", "thermocg.train:run_train", "train HIP-NN-TS by force matching",
            ((("--name",), {"help": "model name (default from the config)"}),
             (("--train-states",), {"nargs": "+", "help": "state labels to train on (default: all)"}))),
    Command("fit-pair", "thermocg.mscg:run_fit_pair", "fit the MS-CG pair-potential baseline",
            ((("--name",), {"help": "model name"}),
             (("--train-states",), {"nargs": "+", "help": "state labels to fit on (default: all)"}))),
    Command("export", "thermocg.potentials.pair:run_export",
            "export a pair-table potential to LAMMPS/GROMACS tables", (
                (("model",), {"help": "model file (.safetensors)"}),
                (("--format",), {"choices": ["lammps", "gromacs"], "default": "lammps"}),
                (("--output",), {"help": "output directory"}),
            ), needs_config=False),
    Command("simulate", "thermocg.md:run_simulate", "CG molecular dynamics with a trained potential", (
        (("--model",), {"required": True, "help": "model file (.safetensors)"}),
        _STATE,
        (("--continue",), {"dest": "continue_run", "action": "store_true",
                           "help": "continue each run from its restart.npz to simulate.duration_ps in total, "
                                   "extending its files"}),
    ), exit_status="thermocg.md:simulate_exit_status"),
    Command("study", "thermocg.study:run_study",
            "the transferability study: all-atom -> CG -> models -> MD -> analysis -> report", ()),
)


def build_parser() -> argparse.ArgumentParser:
    from thermocg import __version__

    parser = argparse.ArgumentParser(
        prog="thermocg",
        description="Coarse-grained force fields for molecular liquids (HIP-NN-TS and MS-CG, by force "
                    "matching) and their transferability across state points. Every command but export "
                    "reads one YAML config; configs/demo.yaml comments every key.",
        epilog="example: thermocg study configs/demo.yaml --run-dir runs/demo",
    )
    parser.add_argument("--version", action="version", version=f"thermocg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.needs_config:
            p.add_argument("config", help="study config (YAML)")
            p.add_argument("--run-dir", help="run directory (default: run_dir of the config)")
        for flags, kwargs in cmd.arguments:
            p.add_argument(*flags, **kwargs)
    return parser


def _load(target: str) -> Any:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = next(c for c in COMMANDS if c.name == args.command)
    options = {k: v for k, v in vars(args).items() if k not in ("command", "config", "run_dir")}
    from thermocg.config import ConfigError, load_config
    from thermocg.rundir import run_dir_lock

    try:
        if cmd.needs_config:
            config = load_config(args.config)
            if args.run_dir:
                config.run_dir = os.path.abspath(args.run_dir)
            # one writer per run directory: a second command on it is refused at once
            with run_dir_lock(config.run_dir, command=f"thermocg {cmd.name} {args.config}"):
                result = _load(cmd.target)(config, config.run_dir, **options)
        else:
            result = _load(cmd.target)(**options)
        if cmd.exit_status is not None:
            return int(_load(cmd.exit_status)(result))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        # every stage raises ValueError subclasses whose messages name the file and the problem
        print(f"thermocg {cmd.name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"thermocg {cmd.name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The command line: a thin table of subcommands.

Each subcommand parses its arguments, loads and validates the config, and calls one
``run_<stage>(config, run_dir, **options)`` function. Heavy imports (torch, openmm) happen inside
the command, so ``thermocg --help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
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
    #: for a command without a config: the option naming the directory whose run-directory lock it holds
    lock: str | None = None
    #: may run as several processes under torchrun (rank 0 holds the run directory's lock)
    distributed: bool = False


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
    Command("train", "thermocg.train:run_train",
            "train HIP-NN-TS by force matching (data-parallel when launched with torchrun -m thermocg train)",
            ((("--name",), {"help": "model name (default from the config)"}),
             (("--train-states",), {"nargs": "+", "help": "state labels to train on (default: all)"})),
            distributed=True),
    Command("fit-pair", "thermocg.mscg:run_fit_pair", "fit the MS-CG pair-potential baseline",
            ((("--name",), {"help": "model name"}),
             (("--train-states",), {"nargs": "+", "help": "state labels to fit on (default: all)"}))),
    Command("export", "thermocg.potentials.pair:run_export",
            "export a pair-table potential to LAMMPS/GROMACS tables", (
                (("model",), {"help": "model file (.safetensors)"}),
                (("--format",), {"choices": ["lammps", "gromacs"], "default": "lammps"}),
                (("--output",), {"help": "output directory"}),
                (("--temperature-K",), {"dest": "temperature_K", "type": float,
                                        "help": "temperature to export a temperature-dependent model at (K)"}),
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
    Command("run-md", "thermocg.md.standalone:run_md",
            "MD of a trained model from a structure file (.gro, .pdb, LAMMPS data, extxyz, H5MD), no config", (
                (("--model",), {"required": True, "help": "model file (.safetensors)"}),
                (("--structure",), {"required": True, "help": "starting structure: .gro, .pdb, LAMMPS data, "
                                                              "extxyz or thermocg H5MD (its last frame)"}),
                (("--temperature-K",), {"dest": "temperature_K", "type": float, "required": True,
                                        "help": "thermostat temperature (K)"}),
                (("--duration-ps",), {"dest": "duration_ps", "type": float, "required": True,
                                      "help": "simulated time (ps); with --continue the total"}),
                (("--engine",), {"choices": ["thermocg", "openmm", "lammps"], "default": "thermocg",
                                 "help": "MD engine (default thermocg)"}),
                (("--timestep-fs",), {"dest": "timestep_fs", "type": float, "help": "time step (fs; default 2)"}),
                (("--friction-per-ps",), {"dest": "friction_per_ps", "type": float,
                                          "help": "Langevin friction (1/ps; default 1)"}),
                (("--save-interval-fs",), {"dest": "save_interval_fs", "type": float,
                                           "help": "trajectory frame interval (fs; default 200)"}),
                (("--thermo-interval-fs",), {"dest": "thermo_interval_fs", "type": float,
                                             "help": "thermo.csv row interval (fs; default 200)"}),
                (("--pressure-bar",), {"dest": "pressure_bar", "type": float,
                                       "help": "NPT at this pressure (bar; openmm and lammps only)"}),
                (("--seed",), {"type": int, "default": 0, "help": "random seed (default 0)"}),
                (("--mass",), {"action": "append", "metavar": "TYPE=AMU",
                               "help": "mass of a bead type (amu), for files without masses (.gro, .pdb)"}),
                (("--bead-type",), {"dest": "bead_type", "action": "append", "metavar": "NAME=TYPE",
                                    "help": "map a type name of the file (a LAMMPS type number, a cut name) to "
                                            "the model's bead type"}),
                (("--frame",), {"type": int, "default": -1, "help": "frame of the structure file (default last)"}),
                (("--device",), {"help": "device of the model: cpu, cuda, auto (default)"}),
                (("--openmm-platform",), {"dest": "openmm_platform", "default": "CPU",
                                          "help": "OpenMM platform (default CPU)"}),
                (("--output",), {"default": "runmd", "help": "output directory (default ./runmd)"}),
                (("--continue",), {"dest": "continue_run", "action": "store_true",
                                   "help": "continue the run in --output to --duration-ps in total"}),
                (("--overwrite",), {"action": "store_true", "help": "replace a run already in --output"}),
            ), needs_config=False, exit_status="thermocg.md.standalone:run_md_exit_status", lock="output"),
    Command("analyze", "thermocg.analysis.standalone:run_analyze",
            "RDF, ADF, MSD/D and density of any trajectory, compared with a reference when given; no config", (
                (("trajectory",), {"help": "trajectory: thermocg H5MD, extxyz, or any format MDAnalysis reads "
                                           "(with --topology)"}),
                (("--reference",), {"help": "reference trajectory to compare with"}),
                (("--topology",), {"help": "topology of the trajectory (.gro, .pdb, LAMMPS data, .tpr ...)"}),
                (("--reference-topology",), {"dest": "reference_topology",
                                             "help": "topology of the reference (default: --topology)"}),
                (("--output",), {"default": "analysis", "help": "output directory (default ./analysis)"}),
                (("--discard-fraction",), {"dest": "discard_fraction", "type": float, "default": 0.0,
                                           "help": "fraction of the frames of each trajectory dropped as "
                                                   "equilibration (default 0)"}),
                (("--r-max-A",), {"dest": "r_max_A", "type": float,
                                  "help": "RDF range (A; default half the shortest box width)"}),
                (("--rdf-bin-width-A",), {"dest": "rdf_bin_width_A", "type": float, "default": 0.05,
                                          "help": "RDF bin width (A; default 0.05)"}),
                (("--adf-cutoff-A",), {"dest": "adf_cutoff_A", "type": float,
                                       "help": "ADF neighbour shell (A; default the first minimum of the "
                                               "reference's RDF, else the trajectory's)"}),
                (("--frame-interval-fs",), {"dest": "frame_interval_fs", "type": float,
                                            "help": "time between frames (fs) when the file has no times"}),
                (("--mass",), {"action": "append", "metavar": "TYPE=AMU",
                               "help": "mass of a bead type (amu), for the density of files without masses"}),
                (("--bead-type",), {"dest": "bead_type", "action": "append", "metavar": "NAME=TYPE",
                                    "help": "rename a type of the files (so the two files' pairs match)"}),
            ), needs_config=False),
)


def build_parser() -> argparse.ArgumentParser:
    from thermocg import __version__

    parser = argparse.ArgumentParser(
        prog="thermocg",
        description="Coarse-grained force fields for molecular liquids (HIP-NN-TS and MS-CG, by force "
                    "matching) and their transferability across state points. Every command but export, "
                    "run-md and analyze reads one YAML config; configs/demo.yaml comments every key.",
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


def _torchrun_rank() -> int | None:
    """This process's rank when torchrun started several (``WORLD_SIZE`` > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = next(c for c in COMMANDS if c.name == args.command)
    options = {k: v for k, v in vars(args).items() if k not in ("command", "config", "run_dir")}
    from thermocg.config import ConfigError, load_config
    from thermocg.rundir import run_dir_lock

    rank = _torchrun_rank()
    if rank is not None and not cmd.distributed:
        print(f"thermocg {cmd.name}: error: only `thermocg train` runs on several processes; start this "
              "command without torchrun", file=sys.stderr)
        return 2
    try:
        if cmd.needs_config:
            config = load_config(args.config)
            if args.run_dir:
                config.run_dir = os.path.abspath(args.run_dir)
            # one writer per run directory: a second command on it is refused at once (under torchrun
            # the writer is rank 0; the other ranks of the same run do not take the lock)
            lock = (run_dir_lock(config.run_dir, command=f"thermocg {cmd.name} {args.config}") if not rank
                    else contextlib.nullcontext())
            with lock:
                result = _load(cmd.target)(config, config.run_dir, **options)
        elif cmd.lock is not None:
            with run_dir_lock(options[cmd.lock], command=f"thermocg {cmd.name} --{cmd.lock} {options[cmd.lock]}"):
                result = _load(cmd.target)(**options)
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

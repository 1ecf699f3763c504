"""Run every bad input and injected fault of issue 11 (and those the test suite covers) and print
the Markdown table of docs/bad_inputs.md: the input, what thermocg says, and whether anything was lost.

    python scripts/bad_inputs_table.py > docs/bad_inputs.md

Each case runs in its own temporary directory, through the command line (``thermocg.cli.main`` in
this process; a fresh interpreter where a second process or the interpreter's exit matters) or,
where no command reaches it, through the Python API. "Nothing lost" checks the run directory after
the command: no ``*.partial`` file anywhere, every file that was there before unchanged (sha256), and
no new file (a refused command writes nothing; the lock file aside). Paths in the messages are
shown relative to the case's directory. Takes under a minute on two cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENMM_CPU_THREADS", "1")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

LOCK_NAME = ".thermocg.lock"
STATE = {"temperature_K": 300.0, "density_g_cm3": 0.786}
LABEL = "T300_rho0.786"
MESSAGE_WIDTH = 420  # characters of a message shown in the table


@dataclasses.dataclass
class Outcome:
    how: str  # "thermocg map" or "Python API: ..."
    status: str  # exit code, "raises X" or "warns X"
    message: str
    intact: str


@dataclasses.dataclass
class Case:
    area: str
    fault: str
    run: Callable[[Path], Outcome]
    item: str = ""  # the issue-11 item it answers, if any


CASES: list[Case] = []


def case(area: str, fault: str, item: str = "") -> Callable:
    def register(function: Callable[[Path], Outcome]) -> Callable[[Path], Outcome]:
        CASES.append(Case(area, fault, function, item))
        return function

    return register


# --------------------------------------------------------------------------------------------------
# running a command and checking what it left
# --------------------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != LOCK_NAME:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def intact(run_dir: Path, before: dict[str, str], *, may_write: bool = False) -> str:
    after = snapshot(run_dir)
    partial = [p for p in after if p.endswith(".partial") or ".partial" in Path(p).name]
    changed = [p for p in before if p in after and before[p] != after[p]]
    missing = [p for p in before if p not in after]
    new = [p for p in after if p not in before]
    problems = []
    if partial:
        problems.append(f"partial files {partial}")
    if changed:
        problems.append(f"changed {changed}")
    if missing:
        problems.append(f"lost {missing}")
    if new and not may_write:
        problems.append(f"new files {new}")
    if problems:
        return "**NO**: " + "; ".join(problems)
    if new and may_write:
        return f"yes (no partial files{f', {len(before)} file(s) unchanged' if before else ''}; outputs written)"
    return f"yes ({f'{len(before)} file(s) unchanged' if before else 'nothing written'})"


def clean(text: str, work: Path) -> str:
    text = text.replace(str(work) + "/", "").replace(str(work), ".")
    text = " ".join(text.split())
    if len(text) > MESSAGE_WIDTH:
        text = text[:MESSAGE_WIDTH - 3] + "..."
    return text.replace("|", "\\|")


def cli(work: Path, args: list[str], run_dir: Path | None, *, may_write: bool = False) -> Outcome:
    """``thermocg ARGS`` in this process; the message is its ``thermocg ...`` line(s) on stderr (not
    progress bars), and any warning it gave."""
    from thermocg.cli import main

    before = snapshot(run_dir) if run_dir else {}
    err, out = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(out):
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            code = main(args)
        except SystemExit as exc:  # argparse
            code = exc.code
        except BaseException as exc:  # a traceback a user would see
            code = "traceback"
            err.write(f"TRACEBACK {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    lines = []
    for line in err.getvalue().replace("\r", "\n").splitlines():
        at = line.find("thermocg ")
        if at >= 0:  # (a progress bar may share the line)
            lines.append(line[at:])
        elif line.startswith(("TRACEBACK", "usage:")) or (lines and "%|" not in line and line.strip()):
            lines.append(line)  # (a message's further lines; progress bars left out)
    ours = [str(w.message) for w in caught if w.category.__module__.startswith("thermocg")]
    message = " / ".join(lines + [f"warning: {w}" for w in ours]) or ("accepted" if code == 0 else "(nothing printed)")
    if may_write and run_dir is not None:
        made = sorted({str(Path(p).parent) for p in snapshot(run_dir) if p not in before})
        if made:
            message += f" (wrote {', '.join(d + '/' for d in made)})"
    shown = "thermocg " + " ".join(a if not a.startswith("/") else Path(a).name for a in args[:2])
    return Outcome(shown, f"exit {code}", clean(message, work),
                   intact(run_dir, before, may_write=may_write) if run_dir else "n/a (no run directory)")


def api(work: Path, how: str, call: Callable[[], Any], run_dir: Path | None = None) -> Outcome:
    before = snapshot(run_dir) if run_dir else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
            status, message = "returns", result if isinstance(result, str) else "accepted"
        except BaseException as exc:
            status, message = f"raises {type(exc).__name__}", str(exc)
    ours = [w for w in caught if w.category.__module__.startswith("thermocg")]
    if ours and status == "returns":
        status, message = f"warns {ours[0].category.__name__}", str(ours[0].message)
    return Outcome(f"Python API: {how}", status, clean(message, work),
                   intact(run_dir, before) if run_dir else "n/a (nothing written)")


def fresh(work: Path, args: list[str], run_dir: Path, *, may_write: bool = False) -> Outcome:
    """``thermocg ARGS`` in a fresh interpreter: all of stderr is shown (warnings as their class and
    message), and more than one line of it is pointed out."""
    result = subprocess.run([sys.executable, "-m", "thermocg", *args], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    lines = []
    for line in result.stderr.strip().splitlines():
        if line.startswith("  ") and lines and "Warning:" in lines[-1]:
            continue  # the source line Python prints under a warning
        at = line.find("Warning: ")
        lines.append(line[line.rfind(" ", 0, at) + 1:] if at > 0 and line.startswith("/") else line)
    message = " / ".join(lines) or ("accepted" if result.returncode == 0 else "(nothing printed)")
    errors = [line for line in lines if "Warning:" not in line]
    if len(errors) > 1:
        message += f" [stderr has {len(errors)} lines besides warnings]"
    if may_write:
        made = sorted({str(Path(p).parent) for p in snapshot(run_dir)})
        if made:
            message += f" (wrote {', '.join(d + '/' for d in made)})"
    return Outcome(f"thermocg {args[0]} (fresh process)", f"exit {result.returncode}", clean(message, work),
                   intact(run_dir, {}, may_write=may_write))


def write_config(path: Path, data: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------------
# shared inputs: a methanol extxyz, its import and CG map, an LJ model; argon CG data
# --------------------------------------------------------------------------------------------------

def methanol_extxyz(path: Path, *, n_molecules: int = 27, density: float = 0.786, n_frames: int = 20,
                    forces: bool = True, box: bool = True, molecule_ids: bool = True, seed: int = 0,
                    edit: Callable[[list], None] | None = None) -> Path:
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    masses = np.tile([15.035, 15.999, 1.008], n_molecules)
    length = (masses.sum() / 0.602214076 / density) ** (1 / 3)
    template = np.array([[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [1.75, 0.9, 0.0]])
    centres = (np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_molecules] + 0.3) \
        * (length / 3)
    images = []
    for f in range(n_frames):
        positions = (centres[:, None, :] + template[None] + rng.normal(scale=0.05, size=(n_molecules, 3, 3)))
        atoms = ase.Atoms(symbols=["C", "O", "H"] * n_molecules, positions=positions.reshape(-1, 3),
                          cell=np.eye(3) * length if box else None, pbc=box, masses=masses)
        if molecule_ids:
            atoms.arrays["mol_id"] = np.repeat(np.arange(n_molecules), 3)
        atoms.info["time_fs"] = 100.0 * f
        if forces:
            atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(3 * n_molecules, 3)))
        images.append(atoms)
    if edit is not None:
        edit(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, images, format="extxyz")
    return path


def import_config(path: Path, run_dir: Path, *, state: dict | None = None, **item: Any) -> dict:
    return {"run_dir": str(run_dir), "imports": [{"path": str(path), "format": "extxyz",
                                                  "molecule": "methanol_trappe", "state": state or STATE, **item}],
            "rdf": {"bin_width_A": 0.1}, "pair": {"cutoff_A": 5.0, "r_min_A": 1.0},
            "train": {"max_epochs": 1, "cutoff_A": 5.0}}


def build_templates(root: Path) -> None:
    """root/base: an imported, mapped methanol run with an LJ model; root/argon: argon CG data and an
    LJ model for CG MD."""
    from thermocg.allatom.readers import run_import
    from thermocg.config import load_config
    from thermocg.dataset import write_frames
    from thermocg.frames import Frames, StatePoint
    from thermocg.mapping import run_map
    from thermocg.potentials.base import save_potential
    from thermocg.potentials.lj import LennardJones

    base = root / "base"
    trajectory = methanol_extxyz(base / "meoh.extxyz")
    config_path = write_config(base / "config.yaml", import_config(trajectory, base / "run"))
    config = load_config(config_path)
    run_import(config, config.run_dir)
    run_map(config, config.run_dir, progress=False)
    save_potential(LennardJones(["methanol_trappe"], epsilon_kcal_mol=0.2, sigma_A=3.7, cutoff_A=5.0),
                   base / "run" / "models" / "lj" / "model.safetensors")

    argon = root / "argon"
    rng = np.random.default_rng(5)
    side = 4
    length = (64 / 0.01) ** (1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid + 0.5 + rng.uniform(-0.1, 0.1, grid.shape)) / side * length
    state = StatePoint(120.0, density_g_cm3=1.0)
    frames = Frames(positions=positions[None], box=np.eye(3) * length, types=np.zeros(64, int), type_names=("Ar",),
                    masses=np.full(64, 39.948), state=state)
    write_frames(frames, argon / "run" / "cg" / f"{state.label}.h5md", kind="cg")
    save_potential(LennardJones(["Ar"], epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=8.5, switch_width_A=1.0),
                   argon / "run" / "models" / "lj" / "model.safetensors")
    write_config(argon / "config.yaml", {
        "run_dir": str(argon / "run"), "seed": 3, "states": [state.to_dict()],
        "simulate": {"duration_ps": 60.0, "timestep_fs": 60.0, "save_interval_fs": 120.0,
                     "thermo_interval_fs": 120.0, "integrator": "nve", "device": "cpu", "extxyz": False}})


TEMPLATES: Path


def copy_of(name: str, work: Path) -> Path:
    """A fresh copy of template ``name`` in ``work``; config paths rewritten to it."""
    target = work / name
    shutil.copytree(TEMPLATES / name, target)
    config = target / "config.yaml"
    config.write_text(config.read_text().replace(str(TEMPLATES / name), str(target)))
    return target


def cg_dataset(base: Path) -> Path:
    return base / "run" / "cg" / f"{LABEL}.h5md"


def flip(path: Path, offset: int, n: int = 4) -> None:
    raw = bytearray(path.read_bytes())
    for k in range(n):
        raw[offset + k] ^= 0x5A
    path.write_bytes(bytes(raw))


def edit_h5(path: Path, dataset: str, index: tuple, value: float) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        f[dataset][index] = value


# --------------------------------------------------------------------------------------------------
# the cases: config files
# --------------------------------------------------------------------------------------------------

def config_case(fault: str, text: str | dict, *, item: str = "", command: str = "rdf") -> None:
    @case("config", fault, item)
    def run(work: Path) -> Outcome:
        path = write_config(work / "config.yaml", text)
        return cli(work, [command, str(path), "--run-dir", str(work / "run")], work / "run")


config_case("not valid YAML (an unclosed bracket)", "states: [{temperature_K: 300\n")
config_case("a section given twice (two `simulate:`)",
            "simulate: {timestep_fs: 2}\nseed: 3\nsimulate: {timestep_fs: 4}\n", item="10")
config_case("a key given twice inside a section", "simulate:\n  timestep_fs: 2\n  timestep_fs: 4\n", item="10")
config_case("`.nan` for a float key (simulate.timestep_fs)", "simulate: {timestep_fs: .nan}\n", item="9")
config_case("`.inf` for train.learning_rate", "train: {learning_rate: .inf}\n", item="9")
config_case("misspelt top-level key `tempertaure_K`", "tempertaure_K: 300\n", item="15")
config_case("misspelt section `traing`", "traing: {}\n")
config_case("misspelt key in a section (`train.cutof_A`)", "train: {cutof_A: 3}\n")
config_case("wrong type (`seed: abc`)", "seed: abc\n")
config_case("negative temperature", {"states": [{"temperature_K": -10.0, "density_g_cm3": 0.8}]})
config_case("a state with both density and pressure",
            {"states": [{"temperature_K": 300.0, "density_g_cm3": 0.8, "pressure_bar": 1.0}]})
config_case("a generated state with a temperature only", {"states": [{"temperature_K": 300.0}]}, item="13")
config_case("two state points whose labels collide (300 and 300.0001 K)",
            {"states": [{"temperature_K": 300.0, "density_g_cm3": 0.786},
                        {"temperature_K": 300.0001, "density_g_cm3": 0.786}]}, item="11")
config_case("a grid point colliding with an explicit state",
            {"states": [{"temperature_K": 300.0, "pressure_bar": 1.0}],
             "state_grid": {"temperature_K": [300.00001, 350.0], "pressure_bar": [1.0]}}, item="11")
config_case("an import's state colliding with a generated one",
            {"states": [{"temperature_K": 300.0, "density_g_cm3": 0.786}],
             "imports": [{"path": "a.extxyz", "format": "extxyz",
                          "state": {"temperature_K": 300.0, "density_g_cm3": 0.7860001}}]}, item="11")
config_case("the same state point imported twice",
            {"imports": [{"path": p, "format": "extxyz", "state": STATE} for p in ("a.extxyz", "b.extxyz")]}, item="11")
config_case("a state grid with both densities and pressures",
            {"state_grid": {"temperature_K": [300.0], "density_g_cm3": [0.8], "pressure_bar": [1.0]}})
config_case("system.molecule and system.molecules both given",
            {"system": {"molecule": "water_spce", "molecules": [{"molecule": "methanol_trappe", "n": 4},
                                                                {"molecule": "water_spce", "n": 4}]}})
config_case("mixture mole fractions that do not add up to 1",
            {"system": {"molecules": [{"molecule": "methanol_trappe", "n": 4}, {"molecule": "water_spce", "n": 4}]},
             "states": [{"temperature_K": 300.0, "density_g_cm3": 0.9,
                         "mole_fractions": {"methanol_trappe": 0.5, "water_spce": 0.4}}]})
config_case("a composition for a one-component system",
            {"states": [{"temperature_K": 300.0, "density_g_cm3": 0.9, "mole_fractions": {"methanol_trappe": 1.0}}]})
config_case("train.split that does not add up to 1", {"train": {"split": [0.9, 0.2, 0.1]}})
config_case("a LAMMPS import without lammps_units", {"imports": [{"path": "d.lammpstrj", "format": "lammps"}]})
config_case("an import format thermocg does not read (`pdb`)", {"imports": [{"path": "a.pdb", "format": "pdb"}]})
config_case("an import with both molecule and molecules",
            {"imports": [{"path": "a.extxyz", "format": "extxyz", "molecule": "water_spce",
                          "molecules": [{"molecule": "water_spce"}]}]})


@case("config", "the config file does not exist")
def _(work: Path) -> Outcome:
    return cli(work, ["rdf", str(work / "missing.yaml")], None)


def study_case(fault: str, data: dict, item: str = "") -> None:
    @case("study validation", fault, item)
    def run(work: Path) -> Outcome:
        tiny = {"run_dir": str(work / "run"), "system": {"n_molecules": 64},
                "states": [{"temperature_K": 300.0, "density_g_cm3": 0.75},
                           {"temperature_K": 400.0, "density_g_cm3": 0.75}],
                "study": {"families": ["mscg"]}, "pair": {"cutoff_A": 6.0}}
        for key, value in data.items():
            tiny[key] = {**tiny.get(key, {}), **value} if isinstance(value, dict) else value
        path = write_config(work / "study.yaml", tiny)
        return cli(work, ["study", str(path)], work / "run", may_write=True)


study_case("study.pooled names a state that does not exist", {"study": {"pooled": {"hot": ["T500_rho0.75"]}}})
study_case("a cutoff larger than half the box of a state (pair.cutoff_A 10 A, 64 methanol)", {"pair": {"cutoff_A": 10.0}})
study_case("study.rdf_tolerance negative", {"study": {"rdf_tolerance": -1.0}})
study_case("a molecule file that does not exist", {"system": {"molecule": "no_such_dir/mol.yaml"}}, item="12")


# --------------------------------------------------------------------------------------------------
# molecules and generation
# --------------------------------------------------------------------------------------------------

WATER_YAML = {
    "name": "my_water", "cutoff_A": 10.0,
    "sites": [
        {"name": "O", "mass_amu": 15.9994, "charge_e": -0.8476, "sigma_A": 3.166, "epsilon_kcal_mol": 0.1553,
         "position_A": [0, 0, 0]},
        {"name": "H1", "type": "H", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0, "epsilon_kcal_mol": 0.0,
         "position_A": [0.8165, 0.5774, 0]},
        {"name": "H2", "type": "H", "mass_amu": 1.008, "charge_e": 0.4238, "sigma_A": 0.0, "epsilon_kcal_mol": 0.0,
         "position_A": [-0.8165, 0.5774, 0]}],
    "constraints": [{"atoms": ["O", "H1"], "length_A": 1.0}, {"atoms": ["O", "H2"], "length_A": 1.0},
                    {"atoms": ["H1", "H2"], "length_A": 1.633}],
}


def generate_case(fault: str, system: dict, generate: dict | None = None, *, states: list | None = None,
                  molecule_yaml: Callable[[dict], None] | None = None, args: tuple = (), item: str = "") -> None:
    @case("generate", fault, item)
    def run(work: Path) -> Outcome:
        sys_section = dict(system)
        if molecule_yaml is not None:
            data = json.loads(json.dumps(WATER_YAML))
            molecule_yaml(data)
            sys_section["molecule"] = str(write_config(work / "my_water.yaml", data))
        path = write_config(work / "gen.yaml", {
            "run_dir": str(work / "run"), "system": sys_section,
            "states": states or [{"temperature_K": 300.0, "density_g_cm3": 0.786}],
            "generate": {"production_ps": 0.1, "equilibration_ps": 0.0, **(generate or {})}})
        return cli(work, ["generate", str(path), *args], work / "run")


generate_case("an absurd density (10 g/cm^3)", {"n_molecules": 8},
              states=[{"temperature_K": 300.0, "density_g_cm3": 0.786},
                      {"temperature_K": 300.0, "density_g_cm3": 10.0}], item="6")
generate_case("a built-in molecule that does not exist (`ethanol`)", {"molecule": "ethanol", "n_molecules": 8})
generate_case("a molecule YAML without a site's charge_e", {"n_molecules": 8},
              molecule_yaml=lambda d: d["sites"][1].pop("charge_e"))
generate_case("a molecule YAML with an unknown site key", {"n_molecules": 8},
              molecule_yaml=lambda d: d["sites"][0].update(colour="red"))
generate_case("a molecule YAML with a net charge", {"n_molecules": 8},
              molecule_yaml=lambda d: d["sites"][0].update(charge_e=-0.5))
generate_case("a molecule YAML whose constraint names an unknown site", {"n_molecules": 8},
              molecule_yaml=lambda d: d["constraints"].append({"atoms": ["O", "X"], "length_A": 1.0}))
generate_case("a non-bonded cutoff larger than the box allows (12 A, 8 molecules)", {"n_molecules": 8},
              {"nonbonded_cutoff_A": 12.0})
generate_case("a save interval that is not a multiple of the timestep", {"n_molecules": 8},
              {"timestep_fs": 2.0, "save_interval_fs": 3.0})
generate_case("--state with a label the config does not have", {"n_molecules": 8}, args=("--state", "T999_rho1"))


# --------------------------------------------------------------------------------------------------
# the run directory
# --------------------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from thermocg.rundir import run_dir_lock
with run_dir_lock(sys.argv[1], command="holder"):
    print("held", flush=True)
    time.sleep(600)
"""


@case("run directory", "a second command on a run directory in use (two real processes)", "1")
def _(work: Path) -> Outcome:
    base = copy_of("base", work)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(base / "run")], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = cli(work, ["rdf", str(base / "config.yaml")], base / "run")
    finally:
        holder.kill()
        holder.wait()
    outcome.message = outcome.message.replace(str(holder.pid), "PID")
    return outcome


@case("run directory", "a run directory that cannot be written (its parent is a file)", "6")
def _(work: Path) -> Outcome:
    base = copy_of("base", work)
    (work / "blocker").write_text("")
    return cli(work, ["import", str(base / "config.yaml"), "--run-dir", str(work / "blocker" / "run")], None)


# --------------------------------------------------------------------------------------------------
# imports
# --------------------------------------------------------------------------------------------------

def import_case(fault: str, make: Callable[[Path], Path], *, item: str = "", args: tuple = (),
                may_write: bool = False, **config: Any) -> None:
    @case("import", fault, item)
    def run(work: Path) -> Outcome:
        trajectory = make(work)
        data = import_config(trajectory, work / "run", **config)
        path = write_config(work / "import.yaml", data)
        return cli(work, ["import", str(path), *args], work / "run", may_write=may_write)


import_case("the trajectory file does not exist", lambda w: w / "missing.extxyz")
import_case("an extxyz without forces", lambda w: methanol_extxyz(w / "nof.extxyz", forces=False))
import_case("an extxyz without a box", lambda w: methanol_extxyz(w / "nobox.extxyz", box=False))
import_case("an extxyz without molecules, and no molecule definition",
            lambda w: methanol_extxyz(w / "nomol.extxyz", molecule_ids=False), molecule=None)
def _drop_last_atom(images: list) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator

    for k, atoms in enumerate(images):
        forces = atoms.calc.results["forces"][:-1]
        shorter = atoms[:-1]
        shorter.calc = SinglePointCalculator(shorter, forces=forces)
        images[k] = shorter


import_case("an atom count that is not a whole number of molecules",
            lambda w: methanol_extxyz(w / "short.extxyz", edit=_drop_last_atom))


def _nan_position(images: list) -> None:
    positions = images[4].get_positions()
    positions[11, 2] = np.nan
    images[4].set_positions(positions)


def _far_position(images: list) -> None:
    positions = images[3].get_positions()
    positions[17, 0] = 1e30
    images[3].set_positions(positions)


import_case("a NaN coordinate (frame 4, atom 11)", lambda w: methanol_extxyz(w / "nan.extxyz", edit=_nan_position))
import_case("a coordinate of 1e30 (frame 3, atom 17)", lambda w: methanol_extxyz(w / "far.extxyz", edit=_far_position),
            item="4")
import_case("an empty extxyz", lambda w: write_config(w / "empty.extxyz", ""), item="15")
import_case("a junk extxyz", lambda w: write_config(w / "junk.extxyz", "hello world\nthis is not xyz\n"), item="15")
import_case("a declared density (0.5) that is not the boxes' (0.786)", lambda w: methanol_extxyz(w / "meoh.extxyz"),
            state={"temperature_K": 300.0, "density_g_cm3": 0.5}, may_write=True, item="13")
import_case("a state with a temperature only: the density comes from the data",
            lambda w: methanol_extxyz(w / "meoh.extxyz"), state={"temperature_K": 300.0}, may_write=True, item="13")
import_case("--state with a label no import declares", lambda w: methanol_extxyz(w / "meoh.extxyz"),
            args=("--state", "T1_rho1"))


@case("import", "an import without a state point", "")
def _(work: Path) -> Outcome:
    from thermocg.allatom.readers import run_import
    from thermocg.config import Config, ImportConfig

    trajectory = methanol_extxyz(work / "meoh.extxyz")
    return api(work, "run_import (imports[0] has no state)",
               lambda: run_import(Config(imports=[ImportConfig(path=str(trajectory), format="extxyz",
                                                               molecule="methanol_trappe")]), work / "run"),
               work / "run")


def _gro(path: Path, n_molecules: int) -> Path:
    lines = ["methanol", str(3 * n_molecules)]
    for m in range(n_molecules):
        for k, name in enumerate(("CH3", "O", "H")):
            lines.append(f"{m + 1:5d}{'MOH':<5}{name:>5}{3 * m + k + 1:5d}{0.1 * m:8.3f}{0.1 * k:8.3f}{0.0:8.3f}")
    lines.append("   2.00000   2.00000   2.00000")
    return write_config(path, "\n".join(lines) + "\n")


def _trr(path: Path, n_atoms: int, *, forces: bool = True) -> Path:
    """A .trr of 3 frames in a 20 A box (MDAnalysis's writer), with or without forces."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    rng = np.random.default_rng(1)
    u = mda.Universe.empty(n_atoms, trajectory=False)
    extra = {"forces": rng.normal(size=(3, n_atoms, 3))} if forces else {}
    u.load_new(rng.uniform(0, 20.0, (3, n_atoms, 3)), format=MemoryReader,
               dimensions=np.array([[20.0, 20.0, 20.0, 90.0, 90.0, 90.0]] * 3), **extra)
    with mda.Writer(str(path), n_atoms=n_atoms) as writer:
        for _ in u.trajectory:
            writer.write(u.atoms)
    return path


def gromacs_case(fault: str, make: Callable[[Path], tuple[Path, Path]], *, item: str = "",
                 fresh_process: bool = False, state: dict | None = None, may_write: bool = False) -> None:
    @case("import", fault, item)
    def run(work: Path) -> Outcome:
        trajectory, topology = make(work)
        path = write_config(work / "import.yaml", {"run_dir": str(work / "run"), "imports": [{
            "path": str(trajectory), "format": "gromacs", "topology": str(topology), "molecule": "methanol_trappe",
            "state": state or STATE}]})
        if not fresh_process:
            return cli(work, ["import", str(path)], work / "run", may_write=may_write)
        # a fresh interpreter: MDAnalysis's stray traceback came when the interpreter collected its reader
        return fresh(work, ["import", str(path)], work / "run", may_write=may_write)


gromacs_case("a junk .trr (stderr: one line, no stray MDAnalysis traceback)",
             lambda w: (write_config(w / "junk.trr", "\x00\x01garbage" * 100), _gro(w / "conf.gro", 4)),
             item="15", fresh_process=True)
gromacs_case("an empty .trr", lambda w: (write_config(w / "empty.trr", ""), _gro(w / "conf.gro", 4)), fresh_process=True)
def _truncated_trr(work: Path) -> tuple[Path, Path]:
    path = _trr(work / "cut.trr", 12)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 5 // 6])  # the last frame cut in half
    return path, _gro(work / "conf.gro", 4)


gromacs_case("a .trr cut off in its last frame (a killed run)", _truncated_trr, fresh_process=True,
             state={"temperature_K": 300.0}, may_write=True)
gromacs_case("a junk .gro topology",
             lambda w: (_trr(w / "t.trr", 12), write_config(w / "conf.gro", "not a gro file\n")), fresh_process=True)
gromacs_case("a .trr whose atom count is not the .gro's", lambda w: (_trr(w / "t.trr", 12), _gro(w / "conf.gro", 3)))
gromacs_case("a .trr without forces", lambda w: (_trr(w / "t.trr", 12, forces=False), _gro(w / "conf.gro", 4)))


LAMMPS_DATA = """LAMMPS data file

12 atoms
3 atom types

0.0 20.0 xlo xhi
0.0 20.0 ylo yhi
0.0 20.0 zlo zhi

Masses

1 15.035
2 15.999
3 1.008

Atoms # full

""" + "\n".join(f"{a + 1} {a // 3 + 1} {a % 3 + 1} 0.0 {1.5 * a:.3f} 1.0 1.0" for a in range(12)) + "\n"


LAMMPS_DUMP = "".join(
    f"ITEM: TIMESTEP\n{100 * f}\nITEM: NUMBER OF ATOMS\n12\nITEM: BOX BOUNDS pp pp pp\n0 20\n0 20\n0 20\n"
    "ITEM: ATOMS id mol type x y z fx fy fz\n"
    + "".join(f"{a + 1} {a // 3 + 1} {a % 3 + 1} {1.5 * a + 0.1 * f:.3f} 1.0 1.0 0.1 0.2 0.3\n" for a in range(12))
    for f in range(3))


def lammps_case(fault: str, dump: str = LAMMPS_DUMP, *, data: str = LAMMPS_DATA, may_write: bool = False) -> None:
    @case("import", fault)
    def run(work: Path) -> Outcome:
        path = write_config(work / "import.yaml", {"run_dir": str(work / "run"), "imports": [{
            "path": str(write_config(work / "traj.lammpstrj", dump)), "format": "lammps", "lammps_units": "real",
            "topology": str(write_config(work / "system.data", data)), "molecule": "methanol_trappe",
            "state": {"temperature_K": 300.0} if may_write else STATE}]})
        return fresh(work, ["import", str(path)], work / "run", may_write=may_write)


lammps_case("a junk LAMMPS dump", "ITEM: TIMESTEP\nnot a number\n")
lammps_case("a LAMMPS dump cut off in its last frame (a killed run)", LAMMPS_DUMP[: len(LAMMPS_DUMP) - 60],
            may_write=True)
lammps_case("a LAMMPS data file without masses", data=LAMMPS_DATA.replace("Masses\n\n1 15.035\n2 15.999\n3 1.008\n\n", ""))
lammps_case("a junk LAMMPS data file", data="not a data file\n")


@case("import", "GROMACS float32 frame times (400.00003 ps): restored, so an MSD accepts the frames", "8")
def _(work: Path) -> Outcome:
    from MDAnalysis.lib.formats.libmdaxdr import TRRFile

    from thermocg.allatom.readers import read_trajectory
    from thermocg.analysis.msd import MSD

    steps = np.arange(40) * 1234 + 50000
    times = [float(f"{100.1 + s * 0.002:.12g}") for s in steps]
    trr = work / "t.trr"
    rng = np.random.default_rng(2)
    with TRRFile(str(trr), "w") as f:
        for s, t in zip(steps, times):
            xyz = rng.uniform(0, 2.0, (12, 3)).astype(np.float32)
            f.write(xyz, xyz * 0, xyz, np.eye(3, dtype=np.float32) * 2.0, int(s), t, 0.0, 12)
    gro = _gro(work / "conf.gro", 4)

    def run() -> str:
        with TRRFile(str(trr)) as f:
            raw = np.array([frame.time for frame in f], dtype=np.float64)
        frames, _ = read_trajectory(trr, "gromacs", topology=gro, molecule="methanol_trappe")
        MSD(frames).run()
        assert np.array_equal(frames.time_fs, np.array(times) * 1000.0)
        return (f"accepted: the file's float32 times are off by up to {np.abs(raw - times).max():.2g} ps (spacings "
                f"differ by {np.ptp(np.diff(raw)):.2g} ps); read back as 100.1 ps + step x 0.002 ps exactly, which the "
                "MSD accepts")

    return api(work, "read_trajectory(.trr) then MSD", run)


# --------------------------------------------------------------------------------------------------
# mapping
# --------------------------------------------------------------------------------------------------

@case("map", "no all-atom trajectories in the run directory")
def _(work: Path) -> Outcome:
    path = write_config(work / "c.yaml", {"run_dir": str(work / "run"), "states": [STATE]})
    (work / "run").mkdir()
    return cli(work, ["map", str(path)], work / "run")


@case("map", "a bead map naming a molecule the topology does not have")
def _(work: Path) -> Outcome:
    base = copy_of("base", work)
    data = yaml.safe_load((base / "config.yaml").read_text())
    data["mapping"] = {"beads": {"ethanol": [{"name": "X", "atoms": [0]}]}}
    write_config(base / "config.yaml", data)
    return cli(work, ["map", str(base / "config.yaml")], base / "run")


@case("map", "a CG dataset where the all-atom trajectory should be", "14")
def _(work: Path) -> Outcome:
    base = copy_of("base", work)
    shutil.copyfile(cg_dataset(base), base / "run" / "allatom" / LABEL / "traj.h5md")
    return cli(work, ["map", str(base / "config.yaml")], base / "run")


@case("map", "the all-atom topology.json is missing")
def _(work: Path) -> Outcome:
    base = copy_of("base", work)
    (base / "run" / "allatom" / LABEL / "topology.json").unlink()
    return cli(work, ["map", str(base / "config.yaml")], base / "run")


@case("map", "an all-atom trajectory without forces")
def _(work: Path) -> Outcome:
    from thermocg.dataset import read_frames, write_frames
    from thermocg.frames import Topology
    from thermocg.mapping import build_mapping, map_trajectory

    base = copy_of("base", work)
    trajectory = base / "run" / "allatom" / LABEL / "traj.h5md"
    frames = read_frames(trajectory)
    bare = write_frames(dataclasses.replace(frames, forces=None), work / "bare.h5md", kind="allatom")
    topology = Topology.load(base / "run" / "allatom" / LABEL / "topology.json")
    return api(work, "map_trajectory", lambda: map_trajectory(bare, topology, build_mapping(topology),
                                                              work / "cg.h5md"))


# --------------------------------------------------------------------------------------------------
# datasets: damage, garbage, the wrong kind
# --------------------------------------------------------------------------------------------------

def dataset_case(fault: str, damage: Callable[[Path], None], command: str, *, item: str = "",
                 args: tuple = ()) -> None:
    @case("CG dataset", f"{fault} -> `thermocg {command}`", item)
    def run(work: Path) -> Outcome:
        base = copy_of("argon" if command == "simulate" else "base", work)
        damage(base)
        extra = ("--model", str(base / "run" / "models" / "lj" / "model.safetensors")) if command == "simulate" else ()
        return cli(work, [command, str(base / "config.yaml"), *extra, *args], base / "run")


def _flip_chunk(base: Path) -> None:
    import h5py

    path = cg_dataset(base)
    with h5py.File(path, "r") as f:
        info = f["particles/trajectory/position/value"].id.get_chunk_info_by_coord((3, 0, 0))
    flip(path, info.byte_offset + info.size // 2)


def _flip_metadata(base: Path) -> None:
    path = cg_dataset(base)
    flip(path, path.read_bytes().index(b'"source"') + 2, n=1)


def _far(base: Path) -> None:
    edit_h5(cg_dataset(base), "particles/trajectory/position/value", (4, 7, 1), 1e30)


def _nan(base: Path) -> None:
    edit_h5(cg_dataset(base), "particles/trajectory/force/value", (5, 3, 0), np.nan)


def _allatom(base: Path) -> None:
    shutil.copyfile(base / "run" / "allatom" / LABEL / "traj.h5md", cg_dataset(base))


def _truncate(base: Path) -> None:
    path = cg_dataset(base)
    path.write_bytes(path.read_bytes()[:3000])


def _text(base: Path) -> None:
    cg_dataset(base).write_text("positions, forces\n1, 2\n")


def _argon_allatom(base: Path) -> None:
    from thermocg.dataset import read_frames, write_frames

    path = next((base / "run" / "cg").glob("*.h5md"))
    frames = read_frames(path)
    write_frames(frames, path, kind="allatom")


def _future_version(base: Path) -> None:
    import h5py

    with h5py.File(cg_dataset(base), "r+") as f:
        f["parameters/thermocg"].attrs["format_version"] = 99


dataset_case("a flipped byte in frame 3's position chunk", _flip_chunk, "rdf", item="4")
dataset_case("a flipped byte in the metadata attribute", _flip_metadata, "rdf", item="4")
dataset_case("a cut-off file (first 3000 bytes)", _truncate, "rdf")
dataset_case("a text file named .h5md", _text, "rdf")
dataset_case("a file from a newer thermocg (format version 99)", _future_version, "rdf")
for _command in ("rdf", "train", "fit-pair"):
    dataset_case("a coordinate of 1e30 (frame 4, bead 7)", _far, _command, item="4")
dataset_case("a NaN force in frame 5 (fit-pair reads in blocks)", _nan, "fit-pair", item="15")
for _command in ("rdf", "train", "fit-pair"):
    dataset_case("an all-atom trajectory where a CG dataset is expected", _allatom, _command, item="14")
dataset_case("an all-atom trajectory as the CG MD start frames", _argon_allatom, "simulate", item="14")


# --------------------------------------------------------------------------------------------------
# stages: train, fit-pair, rdf, simulate, export
# --------------------------------------------------------------------------------------------------

def stage_case(area: str, fault: str, args: list[str], *, template: str = "base", item: str = "",
               prepare: Callable[[Path], None] | None = None, config: dict | None = None,
               may_write: bool = False) -> None:
    @case(area, fault, item)
    def run(work: Path) -> Outcome:
        base = copy_of(template, work)
        if config:
            data = yaml.safe_load((base / "config.yaml").read_text())
            for key, value in config.items():
                data[key] = {**data.get(key, {}), **value}
            write_config(base / "config.yaml", data)
        if prepare is not None:
            prepare(base)
        model = base / "run" / "models" / "lj" / "model.safetensors"
        resolved = [str(model) if a == "MODEL" else str(base / "config.yaml") if a == "CONFIG" else a for a in args]
        return cli(work, resolved, base / "run", may_write=may_write)


def _no_cg(base: Path) -> None:
    cg_dataset(base).unlink()


def _flip_weights(base: Path) -> None:
    path = base / "run" / "models" / "lj" / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # one bit of the last tensor (the tensor data follow the JSON header)
    path.write_bytes(bytes(raw))


def _damage_header(base: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = base / "run" / "models" / "lj" / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    save_file(load_file(str(path)), str(path), metadata=dict(meta, description="{kind: x"))


stage_case("train", "no CG datasets in the run directory", ["train", "CONFIG"], prepare=_no_cg)
stage_case("train", "--train-states with a state that has no dataset", ["train", "CONFIG", "--train-states", "T1_rho1"])
stage_case("train", "train.cutoff_A null (automatic) on a 12 A box: trains (one rule, thermocg.train.automatic_cutoff_A)",
           ["train", "CONFIG"], config={"train": {"cutoff_A": None, "max_epochs": 1}}, item="7", may_write=True)
stage_case("train", "train.cutoff_A larger than half the box", ["train", "CONFIG"], config={"train": {"cutoff_A": 9.0}})
stage_case("fit-pair", "pair.r_min_A above the closest pair of the data", ["fit-pair", "CONFIG"],
           config={"pair": {"r_min_A": 4.5}})
stage_case("fit-pair", "pair.cutoff_A larger than half the box", ["fit-pair", "CONFIG"],
           config={"pair": {"cutoff_A": 9.0}})
stage_case("rdf", "--state with a label that has no dataset", ["rdf", "CONFIG", "--state", "T1_rho1"])
stage_case("rdf", "rdf.r_max_A larger than half the box", ["rdf", "CONFIG"], config={"rdf": {"r_max_A": 9.0}})
stage_case("simulate", "a model file that does not exist", ["simulate", "CONFIG", "--model", "none.safetensors"])
stage_case("simulate", "a flipped byte in the model's weights", ["simulate", "CONFIG", "--model", "MODEL"],
           prepare=_flip_weights, item="4")
stage_case("simulate", "a damaged model header (its description is not JSON)", ["simulate", "CONFIG", "--model", "MODEL"],
           prepare=_damage_header, item="15")
stage_case("simulate", "a CG run that blows up (60 fs NVE steps)", ["simulate", "CONFIG", "--model", "MODEL"],
           template="argon", item="5", may_write=True)
stage_case("simulate", "--state with a label that has no dataset",
           ["simulate", "CONFIG", "--model", "MODEL", "--state", "T1_rho1"])
stage_case("simulate", "--continue with no run to continue", ["simulate", "CONFIG", "--model", "MODEL", "--continue"],
           template="argon")


@case("export", "a model file that does not exist")
def _(work: Path) -> Outcome:
    return cli(work, ["export", str(work / "none.safetensors"), "--output", str(work / "out")], work / "out")


@case("export", "a model file that is not a model (text)")
def _(work: Path) -> Outcome:
    write_config(work / "junk.safetensors", "not a model\n")
    return cli(work, ["export", str(work / "junk.safetensors"), "--output", str(work / "out")], work / "out")


# --------------------------------------------------------------------------------------------------
# the Python API's own checks (the ones the CLI cannot reach), as the test suite exercises them
# --------------------------------------------------------------------------------------------------

def api_case(area: str, fault: str, how: str, call: Callable[[Path], Any], item: str = "") -> None:
    @case(area, fault, item)
    def run(work: Path) -> Outcome:
        return api(work, how, lambda: call(work))


def _frames(**changes: Any):
    from thermocg.frames import Frames

    rng = np.random.default_rng(0)
    data = {"positions": rng.uniform(0, 10, (3, 8, 3)), "forces": rng.normal(size=(3, 8, 3)), "box": np.eye(3) * 10,
            "types": np.zeros(8, int), "type_names": ("A",), "masses": np.ones(8)}
    data.update(changes)
    return Frames(**data)


api_case("frames", "NaN positions in memory", "Frames(...)",
         lambda w: _frames(positions=np.full((1, 2, 3), np.nan), forces=None, types=[0, 0], masses=[1, 1]))
api_case("frames", "a zero box", "Frames(...)", lambda w: _frames(box=np.zeros((3, 3))))
api_case("frames", "forces of another shape", "Frames(...)", lambda w: _frames(forces=np.zeros((3, 7, 3))))
api_case("frames", "a negative temperature", "StatePoint(-5)", lambda w: __import__("thermocg.frames").frames.StatePoint(-5.0))


def _train_on(frames) -> Any:
    from thermocg.config import TrainConfig
    from thermocg.train.data import prepare_states

    return prepare_states([frames], TrainConfig())


api_case("train", "frames without forces", "prepare_states", lambda w: _train_on(_frames(forces=None)))
api_case("train", "too few frames for the train/validation/test splits", "prepare_states", lambda w: _train_on(_frames()))
api_case("train", "a coordinate of 1e30 in frames in memory", "prepare_states",
         lambda w: _train_on(_frames(positions=np.where(np.arange(72).reshape(3, 8, 3) == 40, 1e30,
                                                        np.random.default_rng(0).uniform(0, 10, (3, 8, 3))))), item="4")


def _mscg_few(work: Path) -> Any:
    from thermocg.config import PairConfig
    from thermocg.mscg import fit_pair_potential

    return fit_pair_potential(_frames(forces=None), PairConfig(cutoff_A=4.0))


api_case("fit-pair", "frames without forces", "fit_pair_potential", _mscg_few)


def _restart(work: Path) -> Any:
    from thermocg.md import simulate
    from thermocg.potentials.lj import LennardJones

    garbage = write_config(work / "restart.npz", "not a restart")
    lj = LennardJones(["A"], epsilon_kcal_mol=0.2, sigma_A=3.0, cutoff_A=4.0)
    return simulate(lj, _frames(), temperature_K=100.0, timestep_fs=1.0, n_steps=1, seed=1, progress=False,
                    restart=garbage)


api_case("simulate", "an unreadable restart file", "simulate(restart=...)", _restart)
api_case("msd", "frames not evenly spaced in time", "MSD(frames).run()",
         lambda w: __import__("thermocg.analysis.msd").analysis.msd.MSD(
             _frames(time_fs=np.array([0.0, 1.0, 3.0]))).run())


# --------------------------------------------------------------------------------------------------

def main() -> None:
    global TEMPLATES
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thermocg-bad-inputs-") as tmp:
        root = Path(tmp)
        TEMPLATES = root / "templates"
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_templates(TEMPLATES)
        rows = []
        for number, item in enumerate(CASES, start=1):
            work = root / f"case{number:03d}"
            work.mkdir()
            try:
                outcome = item.run(work)
            except Exception as exc:  # the script's own failure: shown, not hidden
                outcome = Outcome("(script)", "SCRIPT ERROR", clean(f"{type(exc).__name__}: {exc}", work), "?")
            rows.append((number, item, outcome))
            print(f"[{number}/{len(CASES)}] {item.area}: {item.fault} -> {outcome.status}", file=sys.stderr)
    print(render(rows, time.perf_counter() - started))


def render(rows: list, wall_s: float) -> str:
    lost = [n for n, _, o in rows if o.intact.startswith("**NO")]
    tracebacks = [n for n, _, o in rows if "traceback" in o.status or "Traceback" in o.message]
    header = textwrap.dedent(f"""\
        # Bad inputs and faults: what thermocg says

        Every bad input and injected fault tried for issue 11 (the items of its list, and the bad inputs
        the test suite's `pytest.raises` cover, met as a user meets them), the message each gives, and
        whether anything was lost. Generated by `python scripts/bad_inputs_table.py > docs/bad_inputs.md`
        ({len(rows)} cases, {wall_s:.0f} s); the messages are copied from the runs, with paths relative to
        each case's temporary directory (long ones cut at {MESSAGE_WIDTH} characters). Rerun it after
        changing a message.

        ## The rules behind the checks

        - **Positions in range.** Where data enter (import, map, any read of an H5MD dataset, training
          on frames in memory), every position must lie within 1000 box lengths of its box: fractional
          coordinates in [-1000, 1001] (`thermocg.frames.POSITION_RANGE_BOXES`). Unwrapped trajectories
          are legal (a liquid's molecule moves about 80 box lengths of a 30 A box in a microsecond even
          at D = 1e-4 cm^2/s); garbage such as 1e30 is not. Errors name the file, the frame (its index in
          the file) and the particle.
        - **Checksums.** thermocg's H5MD files carry HDF5 Fletcher-32 checksums on every dataset and are
          written in the HDF5 1.10 format, whose object headers (the `/parameters/thermocg` attributes
          included, stored as fixed-length strings) are checksummed too; model files carry the sha256 of
          their weights. A damaged frame, attribute or weight is an error naming the file (and the frame).
        - **The kind of a file.** Where CG beads are expected (train, fit-pair, simulate's start frames,
          rdf), an all-atom trajectory is refused, and the other way round in map.
        - **Densities.** A density whose molecules' Lennard-Jones spheres (diameter sigma) would more than
          fill the box (packing fraction > 1) is refused before any box is built, naming the largest
          density that can be built (TraPPE methanol 1.56, SPC/E water 1.79 g/cm^3). An import whose
          declared density differs from its boxes' by more than 2 % is warned about; an import's state
          with a temperature alone takes the density of its first frame (4 significant digits).
        - **State labels.** Two different state points with one label (values to 6 significant digits)
          are refused when the config is read, naming both.
        - **GROMACS times.** A .trr's float32 frame times are restored to t_init + step x dt (each rounded
          to the fewest digits the file's float32 values allow), so 400.00003 ps reads 400 ps.
        - **Cut-off files.** A .trr or LAMMPS dump whose last frame is cut off (a killed run) is imported
          without it, with a warning; a frame damaged in the middle is an error.

        The columns: **How** is the command run (`thermocg ...` in this process, or in a fresh process
        where a second process or the interpreter's exit matters), or the Python API call where no
        command reaches the check; **Exit** is the exit status (0 success, 1 a CG run blew up, 2 an
        error) or what the call raised or warned; **Nothing lost** means: after the command no `*.partial`
        file, every file of the run directory that was there before unchanged (sha256), and no new file
        from a refused command; **Item** is the issue-11 item a case answers. Items 2, 3 (content-keyed
        caching, relative manifests) and the report side of 5 are the study's, on another branch: their
        cases join this table with it; item 12's row shows the study as it is on this branch.

        Cases with something lost: {lost or 'none'}. Cases that printed a traceback: {tracebacks or 'none'}.

        | # | Item | Area | Bad input or fault | How | Exit | Message | Nothing lost |
        |---|------|------|--------------------|-----|------|---------|--------------|
        """)
    lines = [f"| {n} | {c.item} | {c.area} | {c.fault.replace('|', '/')} | {o.how} | {o.status} | {o.message} | "
             f"{o.intact} |" for n, c, o in rows]
    return header + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""The study's run directory under fault injection (issue 11 items 2, 3, 5, 12): input files keyed by
content, outputs that are gone or changed, moved and copied run directories, failures named when they
happen and in the report, the lock, and the checks made before any work.

The stand-in stages of test_study.py keep these fast; "exactly its dependents" is checked against
the plan: the units that ran are the edited unit and everything downstream of it, and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_study import STAND_INS, calls, fake_train, write_methanol_extxyz
from thermocg import study as st
from thermocg.config import Config, ConfigError, from_dict, to_dict
from thermocg.rundir import RunDir, RunDirLocked


def mixed_config(base: Path, run_dir: Path, rng: np.random.Generator | None = None, **study) -> Config:
    """Two states: T300 generated from a YAML molecule file, T400 imported from an extxyz file (both
    under ``base/inputs``, written when ``rng`` is given)."""
    from thermocg.allatom.molecules import BUILTIN_MOLECULES

    molecule, traj = base / "inputs" / "methanol.yaml", base / "inputs" / "T400.extxyz"
    if rng is not None:
        molecule.parent.mkdir(parents=True, exist_ok=True)
        molecule.write_text(yaml.safe_dump(BUILTIN_MOLECULES["methanol_trappe"]()))
        write_methanol_extxyz(traj, rng)
    return from_dict(Config, {
        "run_dir": str(run_dir),
        "system": {"molecule": str(molecule), "n_molecules": 64},
        "states": [{"temperature_K": 300, "density_g_cm3": 0.75}],
        "imports": [{"path": str(traj), "format": "extxyz", "state": {"temperature_K": 400, "density_g_cm3": 0.75}}],
        "pair": {"cutoff_A": 6.5},
        "study": {"progress": False, **study},
    })


def downstream(config: Config, changed: set[str]) -> set[str]:
    """The units ``changed`` and every unit that depends on them, directly or not."""
    out = set(changed)
    for unit in st.plan_units(config):  # dependency order
        if any(d in out for d in unit.deps):
            out.add(unit.name)
    return out


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory):
    """A finished stand-in study with a molecule file and an imported trajectory; tests use copies."""
    base = tmp_path_factory.mktemp("mixed")
    run_dir = base / "run"
    config = mixed_config(base, run_dir, np.random.default_rng(3))
    st.run_study(config, run_dir, stages=STAND_INS)
    return base


@pytest.fixture
def mixed(mixed_study, tmp_path):
    """(config, run_dir) of a fresh copy of the finished study, inputs included, its call log emptied."""
    base = tmp_path / "study"
    shutil.copytree(mixed_study, base)
    run_dir = base / "run"
    (run_dir / "calls.log").unlink()
    config = mixed_config(base, run_dir)
    return config, run_dir


def ran_units(out: st.StudyRun) -> set[str]:
    return set(out.ran) - {"report"}


# ---------------------------------------------------------------------------------------- item 2

def test_a_rerun_without_changes_runs_nothing(mixed):
    config, run_dir = mixed
    out = st.run_study(config, run_dir, stages=STAND_INS)
    assert out.ran == [] and calls(run_dir) == []


def test_edited_molecule_file_reruns_exactly_its_dependents(mixed):
    config, run_dir = mixed
    path = Path(config.system.molecule)
    data = yaml.safe_load(path.read_text())
    data["sites"][0]["epsilon_K"] = 99.0  # an LJ epsilon
    path.write_text(yaml.safe_dump(data))
    out = st.run_study(config, run_dir, stages=STAND_INS)
    expected = downstream(config, {"aa/T300_rho0.75"})
    assert ran_units(out) == expected
    # the imported state and the MS-CG model trained only there did not rerun
    assert "map/T400_rho0.75" not in expected and "model/mscg-T400_rho0.75" not in expected
    assert "md/mscg-T400_rho0.75/T300_rho0.75" in expected  # it runs at the edited state


def test_edited_imported_file_reruns_exactly_its_dependents(mixed, rng):
    config, run_dir = mixed
    traj = Path(config.imports[0].path)
    os.utime(traj)  # a new modification time alone changes nothing
    assert ran_units(st.run_study(config, run_dir, stages=STAND_INS)) == set()
    write_methanol_extxyz(traj, rng)  # new contents
    out = st.run_study(config, run_dir, stages=STAND_INS)
    assert ran_units(out) == downstream(config, {"aa/T400_rho0.75"})
    assert "model/mscg-T300_rho0.75" not in ran_units(out)


def test_moving_an_input_file_reruns_nothing(mixed):
    config, run_dir = mixed
    moved = Path(config.imports[0].path).with_name("renamed.extxyz")
    Path(config.imports[0].path).rename(moved)
    config.imports[0].path = str(moved)
    assert ran_units(st.run_study(config, run_dir, stages=STAND_INS)) == set()


def test_deleted_outputs_rerun_with_their_dependents(mixed):
    config, run_dir = mixed
    for dataset in RunDir(run_dir).cg_datasets():
        dataset.unlink()
    shutil.rmtree(run_dir / "models")
    out = st.run_study(config, run_dir, stages=STAND_INS)
    maps_and_models = {u.name for u in st.plan_units(config) if u.kind in ("map", "model")}
    assert ran_units(out) == downstream(config, maps_and_models)
    assert all(p.exists() for p in RunDir(run_dir).cg_datasets()) and len(RunDir(run_dir).cg_datasets()) == 2


def test_a_changed_model_file_is_not_trusted(mixed):
    config, run_dir = mixed
    model = run_dir / "models" / "mscg-T400_rho0.75" / "model.safetensors"
    model.write_bytes(model.read_bytes() + b" ")
    out = st.run_study(config, run_dir, stages=STAND_INS)
    assert ran_units(out) == downstream(config, {"model/mscg-T400_rho0.75"})


def test_file_hashes_are_cached_by_size_and_time(tmp_path, monkeypatch):
    from thermocg.study import files

    run_dir = tmp_path / "run"
    data = run_dir / "cg" / "x.h5md"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"abc")
    counted = []
    real = files.file_sha256
    monkeypatch.setattr(files, "file_sha256", lambda p: counted.append(p) or real(p))
    first = st.FileHashes(run_dir).sha256(data)
    again = st.FileHashes(run_dir).sha256(data)  # a new object: from the on-disk cache
    assert first == again == real(data) and len(counted) == 1
    assert list((run_dir / "study" / "hashes").glob("*.json"))
    data.write_bytes(b"abd")  # same size, new contents and time
    assert st.FileHashes(run_dir).sha256(data) == real(data) != first


# ---------------------------------------------------------------------------------------- item 3

def test_manifests_hold_paths_relative_to_the_run_directory(mixed):
    config, run_dir = mixed
    for path in (run_dir / "study" / "units").glob("*.json"):
        text = path.read_text()
        assert str(run_dir.resolve()) not in text and str(run_dir.parent.resolve()) not in text, path.name
    manifest = json.loads((run_dir / "study" / "units" / "model__mscg-T400_rho0.75.json").read_text())
    assert manifest["result"]["model_path"] == "models/mscg-T400_rho0.75/model.safetensors"
    assert "model_path" in manifest["relative_paths"]


def test_a_moved_run_directory_resumes(mixed, tmp_path):
    config, run_dir = mixed
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(run_dir, moved)
    config = dataclasses.replace(config, run_dir=str(moved))
    out = st.run_study(config, moved, stages=STAND_INS)
    assert out.ran == [] and calls(moved) == []
    unit = next(u for u in st.plan_units(config) if u.name == "md/hipnn_ts-pooled/T400_rho0.75")
    assert st.read_manifest(moved, unit).result.trajectory.is_relative_to(moved.resolve())


def test_a_copied_run_directory_reads_its_own_models(mixed, tmp_path):
    config, run_dir = mixed
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(run_dir / "models")  # anything still reading the original would fail
    for path in (copy / "study" / "units").glob("md__*.json"):  # the MD runs must read the models again
        path.unlink()
    out = st.run_study(dataclasses.replace(config, run_dir=str(copy)), copy, stages=STAND_INS)
    # fake_simulate asserts that the model it gets lies in the copy and exists
    assert {u for u in out.ran if u.startswith("md/")} == {u.name for u in st.plan_units(config) if u.kind == "md"}
    assert not out.failed


# ---------------------------------------------------------------------------------------- item 5

def test_failures_are_printed_when_they_happen_and_named_in_the_report(mixed, capsys):
    config, run_dir = mixed
    for unit in st.plan_units(config):
        if unit.name in ("md/mscg-pooled/T300_rho0.75", "eval/mscg-pooled/T300_rho0.75"):
            st.manifest_path(run_dir, unit).unlink()
    (run_dir / "fail_md").write_text("mscg-pooled/T300_rho0.75")
    with pytest.raises(st.StudyError, match="the report lists them"):
        st.run_study(config, run_dir, stages=STAND_INS)
    err = capsys.readouterr().err.splitlines()
    assert "thermocg study: md/mscg-pooled/T300_rho0.75 failed: RuntimeError: injected failure" in err
    assert "thermocg study: eval/mscg-pooled/T300_rho0.75 failed: not run: md/mscg-pooled/T300_rho0.75 failed" in err
    md = (run_dir / "report" / "summary.md").read_text()
    assert "| md/mscg-pooled/T300_rho0.75 | RuntimeError: injected failure |" in md
    assert "| eval/mscg-pooled/T300_rho0.75 | not run: md/mscg-pooled/T300_rho0.75 failed |" in md
    assert ("mscg-pooled (trained on T300_rho0.75, T400_rho0.75): reproduces the AA structure at 0 of 1 evaluated "
            "state (none); not evaluated at T300_rho0.75 (md/mscg-pooled/T300_rho0.75: RuntimeError: "
            "injected failure).") in md
    assert "Failed units (2)" in (run_dir / "report" / "index.html").read_text()
    traceback = (run_dir / "study" / "failed" / "md__mscg-pooled__T300_rho0.75.txt").read_text()
    assert "RuntimeError: injected failure" in traceback
    # fixed: the rerun runs the two units, removes the traceback, and the report has no failures
    (run_dir / "fail_md").unlink()
    out = st.run_study(config, run_dir, stages=STAND_INS)
    assert ran_units(out) == {"md/mscg-pooled/T300_rho0.75", "eval/mscg-pooled/T300_rho0.75"}
    assert not (run_dir / "study" / "failed" / "md__mscg-pooled__T300_rho0.75.txt").exists()
    assert "Failed units" not in (run_dir / "report" / "summary.md").read_text()


@pytest.mark.slow
def test_failures_are_printed_when_they_happen_on_dask(mixed, capsys):
    """On Dask the failure is printed by the process that runs the study, once, as on one process; the
    units downstream of it are named as not run."""
    pytest.importorskip("distributed")
    import cloudpickle

    import test_study

    config, run_dir = mixed
    for unit in st.plan_units(config):
        if unit.name in ("md/mscg-pooled/T300_rho0.75", "eval/mscg-pooled/T300_rho0.75"):
            st.manifest_path(run_dir, unit).unlink()
    (run_dir / "fail_md").write_text("mscg-pooled/T300_rho0.75")
    config.study.max_workers = 2
    cloudpickle.register_pickle_by_value(test_study)
    try:
        with pytest.raises(st.StudyError):
            st.run_study(config, run_dir, stages=STAND_INS)
    finally:
        cloudpickle.unregister_pickle_by_value(test_study)
    err = capsys.readouterr().err.splitlines()
    assert err.count("thermocg study: md/mscg-pooled/T300_rho0.75 failed: RuntimeError: injected failure") == 1
    assert "thermocg study: eval/mscg-pooled/T300_rho0.75 failed: not run: md/mscg-pooled/T300_rho0.75 failed" in err
    assert (run_dir / "study" / "failed" / "md__mscg-pooled__T300_rho0.75.txt").exists()


def failing_train(config, run_dir, model):
    if model.name == "mscg-pooled":
        raise RuntimeError("singular normal matrix")
    return fake_train(config, run_dir, model)


def test_a_model_that_never_ran_is_not_evaluated_not_zero_of_n(mixed):
    config, run_dir = mixed
    unit = next(u for u in st.plan_units(config) if u.name == "model/mscg-pooled")
    st.manifest_path(run_dir, unit).unlink()
    with pytest.raises(st.StudyError):
        st.run_study(config, run_dir, stages=dataclasses.replace(STAND_INS, train=failing_train))
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert summary["verdicts"]["mscg-pooled"]["evaluated"] == []
    md = (run_dir / "report" / "summary.md").read_text()
    assert ("mscg-pooled (trained on T300_rho0.75, T400_rho0.75): not evaluated (model/mscg-pooled: RuntimeError: "
            "singular normal matrix).") in md
    assert "0/2" not in md


def test_the_cli_exits_non_zero_naming_the_failed_units(mixed, monkeypatch, capsys):
    from thermocg import cli
    from thermocg.study import execution

    config, run_dir = mixed
    for unit in st.plan_units(config):
        if unit.name == "md/mscg-pooled/T300_rho0.75":
            st.manifest_path(run_dir, unit).unlink()
    (run_dir / "fail_md").write_text("mscg-pooled/T300_rho0.75")
    path = run_dir.parent / "study.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    monkeypatch.setattr(execution, "default_stages", lambda: STAND_INS)
    assert cli.main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert "md/mscg-pooled/T300_rho0.75: RuntimeError: injected failure" in err
    assert err.count("md/mscg-pooled/T300_rho0.75 failed: RuntimeError") == 1  # printed when it happened


def capped_train(config, run_dir, model):
    summary = fake_train(config, run_dir, model)
    if model.family == "hipnn_ts" and model.pooled:
        return dataclasses.replace(summary, n_epochs=5, best_epoch=5, stopped_at_max_epochs=True)
    return summary


def test_epoch_cap_warning_in_the_log_and_the_report(tmp_path, rng, capsys):
    run_dir = tmp_path / "run"
    config = mixed_config(tmp_path, run_dir, rng)
    out = st.run_study(config, run_dir, stages=dataclasses.replace(STAND_INS, train=capped_train))
    err = capsys.readouterr().err
    assert ("thermocg study: warning: model/hipnn_ts-pooled: training stopped at train.max_epochs (5) while still "
            "improving (best epoch 5); more epochs would likely lower its errors: raise train.max_epochs") in err
    assert len(out.warnings) == 1
    md = (run_dir / "report" / "summary.md").read_text()
    assert "Training of hipnn_ts-pooled stopped at train.max_epochs (5) while still improving" in md


# ---------------------------------------------------------------------------------------- the lock

def test_run_study_takes_the_run_directory_lock(tmp_path, rng):
    run_dir = tmp_path / "run"
    config = mixed_config(tmp_path, run_dir, rng)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from thermocg.rundir import run_dir_lock
        with run_dir_lock({str(run_dir)!r}, command="thermocg study (the other one)"):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=r"in use by process \d+ .*thermocg study \(the other one\)"):
            st.run_study(config, run_dir, stages=STAND_INS)
        assert not (run_dir / "study" / "units").exists()  # refused before any work
    finally:
        holder.kill()
        holder.wait()
    st.run_study(config, run_dir, stages=STAND_INS)  # free again


# ---------------------------------------------------------------------------------------- item 12

def test_an_invalid_molecule_file_is_a_config_error_before_any_work(tmp_path, rng):
    run_dir = tmp_path / "run"
    config = mixed_config(tmp_path, run_dir, rng)
    Path(config.system.molecule).write_text("name: broken\nsites: [{name: X}]\n")
    with pytest.raises(ConfigError, match=r"system\.molecule: .*methanol\.yaml"):
        st.run_study(config, run_dir, stages=STAND_INS)
    assert not run_dir.exists()
    Path(config.system.molecule).write_text("sites: [unclosed\n")
    with pytest.raises(ConfigError, match=r"system\.molecule: .*not valid YAML"):
        st.validate_study(config)
    config.system.molecule = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"system\.molecule: .*missing\.yaml: molecule file not found"):
        st.validate_study(config)
    config.system.molecule = "methanol_trappe"
    config.imports[0].molecule = "methanol_unknown"
    with pytest.raises(ConfigError, match=r"imports\[0\]\.molecule: unknown molecule 'methanol_unknown'"):
        st.validate_study(config)


def test_imported_states_are_checked_against_their_own_data(tmp_path, rng):
    """An imported state's box and molecule count come from its first frame, not from system.*: four
    methanols in a 20 A box (the default system would be 256 molecules at 0.75 g/cm^3, a 26 A box)."""
    traj = write_methanol_extxyz(tmp_path / "T400.extxyz", rng)
    config = from_dict(Config, {"imports": [{"path": str(traj), "format": "extxyz",
                                             "state": {"temperature_K": 400, "density_g_cm3": 0.75}}],
                                "pair": {"cutoff_A": 9.9}, "study": {"families": ["mscg"]}})
    box = st.state_boxes(config)["T400_rho0.75"]
    assert box.n_molecules == 4 and box.half_width_A == pytest.approx(10.0)
    assert box.density_g_cm3 == pytest.approx(4 * 32.042 / 8000.0 * 1.66053906660, rel=1e-6)
    st.validate_study(config)
    config.pair.cutoff_A = 10.5
    with pytest.raises(ConfigError, match=r"pair\.cutoff_A: 10.5 A does not fit the box of state T400_rho0.75 "
                                          r"\(imported: 4 molecules in a 20.00 x 20.00 x 20.00 A box of 0.0266 g/cm\^3"
                                          r", from the first frame of .*T400.extxyz, half of its shortest width "
                                          r"10.00 A\); lower the cutoff$"):
        st.validate_study(config)
    # an imported file that cannot be read is a config error naming the entry
    traj.write_text("not an extxyz file\n")
    with pytest.raises(ConfigError, match=r"imports\[0\] \(.*T400.extxyz\): .*not a readable extxyz"):
        st.validate_study(config)


# ---------------------------------------------------------------------------------------- held-out frames

def held_out_config(**study) -> Config:
    return from_dict(Config, {
        "states": [{"temperature_K": 300, "density_g_cm3": 0.75}, {"temperature_K": 400, "density_g_cm3": 0.75}],
        "train": {"frame_stride": 2, "split": [0.8, 0.1, 0.1]},
        "pair": {"frame_stride": 1, "test_fraction": 0.1},
        "study": {"pooled": {}, "single_states": ["T300_rho0.75"], **study},
    })


def test_force_errors_use_frames_no_model_trained_on():
    config = held_out_config()
    # HIP-NN-TS: every 2nd of 240 frames, 120; train 0-95 and validate 96-107 of those: frames 0-215 (with the
    # frames between them); MS-CG fits the first 216 of 240: what is left are frames 216-239
    idx, which = st.held_out_frames(config, "T300_rho0.75", 240)
    np.testing.assert_array_equal(idx, np.arange(216, 240))
    assert which == "the 24 of 240 frames that no model trained on (frames 216-239: the trainers' held-out frames)"
    idx, which = st.held_out_frames(config, "T400_rho0.75", 240)  # no model trained there
    np.testing.assert_array_equal(idx, np.arange(240))
    assert which == "all 240 frames (no model of the study trained at this state)"
    # two blocks: each block's test segment is held out
    config.train.n_blocks = 2
    config.study.families = ["hipnn_ts"]
    idx, _ = st.held_out_frames(config, "T300_rho0.75", 240)
    np.testing.assert_array_equal(idx, np.r_[108:120, 228:240])


def test_mscg_fit_frames_are_those_thermocg_mscg_fits(tmp_path, rng):
    from thermocg.dataset import H5MDDataset, write_frames
    from thermocg.frames import Frames
    from thermocg.mscg import split_frames
    from thermocg.study.stages import mscg_fit_frames

    n = 53
    frames = Frames(positions=rng.uniform(0, 10, (n, 4, 3)), box=np.eye(3) * 10, types=np.zeros(4, int),
                    type_names=("A",), masses=np.ones(4), forces=rng.normal(size=(n, 4, 3)))
    write_frames(frames, tmp_path / "x.h5md", kind="cg")
    for stride, max_frames, test in ((1, None, 0.1), (3, None, 0.25), (2, 20, 0.1), (1, 10, 0.0)):
        pair = dataclasses.replace(from_dict(Config, {}).pair, frame_stride=stride, max_frames=max_frames,
                                   test_fraction=test)
        with H5MDDataset(tmp_path / "x.h5md") as ds:
            fit, _ = split_frames(ds, pair)
        np.testing.assert_array_equal(mscg_fit_frames(n, pair), fit)


# ---------------------------------------------------------------------------------------- AA speed of imports

def test_imported_ns_per_day_from_the_engines_logs(tmp_path, rng):
    trr = tmp_path / "gmx" / "prod.trr"
    trr.parent.mkdir()
    trr.write_bytes(b"")
    value, note = st.imported_ns_per_day(trr, "gromacs")
    assert value is None and note == "no GROMACS log with a Performance line beside prod.trr (prod.log or md.log)"
    (trr.parent / "md.log").write_text(textwrap.dedent("""\
                       Core t (s)   Wall t (s)        (%)
               Time:      160.912       20.114      800.0
                         (ns/day)    (hour/ns)
        Performance:       85.912        0.279
        """))
    assert st.imported_ns_per_day(trr, "gromacs") == (85.912, "the GROMACS log md.log beside the trajectory")
    dump = tmp_path / "lmp" / "dump.lammpstrj"
    dump.parent.mkdir()
    (dump.parent / "log.lammps").write_text(
        "Loop time of 12.3 on 4 procs for 10000 steps with 3000 atoms\n\n"
        "Performance: 7.012 ns/day, 3.423 hours/ns, 81.157 timesteps/s, 243.5 katom-step/s\n"
        "Performance: 7.530 ns/day, 3.187 hours/ns, 87.153 timesteps/s, 261.5 katom-step/s\n")
    assert st.imported_ns_per_day(dump, "lammps") == (7.53, "the LAMMPS log log.lammps beside the trajectory")
    xyz = write_methanol_extxyz(tmp_path / "t.extxyz", rng, n_frames=1)
    assert st.imported_ns_per_day(xyz, "extxyz") == (None, "the first frame of t.extxyz has no ns_per_day key")


def test_progress_in_a_log_is_plain_lines(mixed, capsys):
    """Output that is not a terminal (here: captured) gets plain progress lines, no carriage returns."""
    config, run_dir = mixed
    for unit in st.plan_units(config):
        if unit.kind in ("md", "eval") and unit.state == "T300_rho0.75":
            st.manifest_path(run_dir, unit).unlink()
    st.run_study(config, run_dir, stages=STAND_INS, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-2].startswith("study: 12/12 units (100%), done in ")
    assert err.splitlines()[-1].startswith("thermocg study: 13 unit(s) run, 24 up to date, 0 failed in ")

"""The study orchestration: plan, keys, caching, resume, Dask, validation, matrices.

Most tests use small stand-in stages (module-level functions below) whose outputs have known
answers: a model trained at temperature T_m and tested at T_s has RDF error
``BASE[family] + SLOPE[family] * |T_m - T_s| / 100`` (pooled models: T_m = mean of their states),
so the matrices, verdicts and family comparison can be checked exactly. The real stages are
exercised by ``test_real_tiny_study`` (slow).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from thermocg.analysis.adf import ADFResult, adf_error, compare_adf
from thermocg.analysis.rdf import RDFResult, compare_rdf, rdf_error
from thermocg.config import Config, ConfigError, from_dict, load_config
from thermocg.frames import Frames
from thermocg.rundir import RunDir
from thermocg import study as st
from thermocg.md import MDRunSummary
from thermocg.model_summary import ModelSummary

BASE = {"hipnn_ts": 0.01, "mscg": 0.03}
SLOPE = {"hipnn_ts": 0.02, "mscg": 0.05}
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- stand-in stages

def _log(run_dir: Path, what: str) -> None:
    with open(Path(run_dir) / "calls.log", "a") as f:
        f.write(what + "\n")


def _temperature(label: str) -> float:
    return float(label.split("_")[0][1:])


def fake_allatom(config, run_dir, label):
    _log(run_dir, f"aa {label}")
    d = RunDir(run_dir).allatom(label)
    d.mkdir(parents=True, exist_ok=True)
    (d / "traj.h5md").write_text("stand-in")
    return st.AllAtomResult(label, d / "traj.h5md", ns_per_day=2.0)


def fake_map(config, run_dir, label):
    from thermocg.dataset import write_frames

    _log(run_dir, f"map {label}")
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 10, (3, 8, 3))
    frames = Frames(positions=pos, box=np.eye(3) * 10, types=np.zeros(8, int), type_names=("MeOH",),
                    masses=np.full(8, 32.0), forces=rng.normal(size=pos.shape))
    write_frames(frames, RunDir(run_dir).cg_dataset(label), kind="cg")
    return st.MapResult(label, RunDir(run_dir).cg_dataset(label))


def rdf_result(g: np.ndarray) -> RDFResult:
    """An RDF of one pair on 200 bins of 0.05 A over [0, 10] A."""
    edges = np.linspace(0.0, 10.0, 201)
    return RDFResult(r_A=0.5 * (edges[1:] + edges[:-1]), edges_A=edges, g={"MeOH-MeOH": g}, counts={}, n_frames=1)


def adf_result(p: np.ndarray | None = None) -> ADFResult:
    """An ADF on 90 bins of 2 degrees (default: p proportional to sin(theta))."""
    edges = np.linspace(0.0, 180.0, 91)
    theta = 0.5 * (edges[1:] + edges[:-1])
    if p is None:
        p = np.sin(np.radians(theta))
        p /= p.sum() * 2
    return ADFResult(angle_deg=theta, edges_deg=edges, p={"all": p}, n_angles={"all": 100}, cutoff_A=6.0, n_frames=1)


def fake_reference(config, run_dir, label):
    _log(run_dir, f"ref {label}")
    rdf = rdf_result(np.zeros(200))
    rdf.g["MeOH-MeOH"] = 1 + np.exp(-((rdf.r_A - 4) ** 2)) * 300 / _temperature(label)
    # noise floors 0.025 (RDF) and 0.05 (ADF): at the default 2x, tolerances 0.05 and 0.1
    return st.ReferenceResult(rdf=rdf, adf=adf_result(), adf_cutoff_A=6.0, diffusion_A2_fs=1e-4,
                              noise={"rdf_error": 0.025, "adf_error": 0.05}, n_frames=3, n_beads=8,
                              density_g_cm3=0.75)


def fake_train(config, run_dir, model):
    from thermocg.potentials.base import save_potential
    from thermocg.potentials.lj import LennardJones

    _log(run_dir, f"model {model.name}")
    path = RunDir(run_dir).model(model.name) / "model.safetensors"
    save_potential(LennardJones(("MeOH",), epsilon_kcal_mol=0.2, sigma_A=3.7, cutoff_A=4.9), path)
    return ModelSummary(family=model.family, name=model.name, model_path=path, train_states=model.train_states,
                        wall_s=0.1, n_epochs=None, best_epoch=None, stopped_at_max_epochs=False,
                        test_force_rmse_kcal_mol_A=None, test_force_mae_kcal_mol_A=None, test_r2=None, cutoff_A=4.9)


def fake_simulate(config, run_dir, model, trained, label):
    _log(run_dir, f"md {model.name} {label}")
    assert isinstance(trained, ModelSummary) and trained.name == model.name  # the typed upstream result
    # the model this run reads is the one in *this* run directory (a copied directory reads its own)
    assert Path(trained.model_path).is_relative_to(Path(run_dir).resolve()) and Path(trained.model_path).exists()
    flag = Path(run_dir) / "fail_md"
    if flag.exists() and flag.read_text().strip() == f"{model.name}/{label}":
        raise RuntimeError("injected failure")
    d = RunDir(run_dir).md(model.name, label)
    d.mkdir(parents=True, exist_ok=True)
    (d / "traj.h5md").write_text("stand-in")
    return MDRunSummary(model=model.name, model_file=str(trained.model_path), state=label, out_dir=d,
                        trajectory=d / "traj.h5md", ns_per_day=100.0 if model.family == "mscg" else 20.0, blowup=None,
                        simulated_ps=1.0, n_steps=250, mean_temperature_K=_temperature(label), seed=config.seed,
                        wall_s=0.1)


def fake_evaluate(config, run_dir, model, trained, label, md, reference):
    _log(run_dir, f"eval {model.name} {label}")
    assert isinstance(trained, ModelSummary) and isinstance(md, MDRunSummary)
    assert isinstance(reference, st.ReferenceResult) and isinstance(reference.rdf, RDFResult)
    t_model = np.mean([_temperature(s) for s in model.train_states])
    err = BASE[model.family] + SLOPE[model.family] * abs(t_model - _temperature(label)) / 100
    rdf = rdf_result(reference.rdf.g["MeOH-MeOH"] + err)
    return st.Evaluation(force={"rmse": 10 * err, "mae": 8 * err, "r2": 1 - err},
                         parity=np.array([[1.0, 1.1], [-2.0, -1.8]]), ns_per_day=md.ns_per_day, rdf=rdf,
                         adf=reference.adf, diffusion_A2_fs=2e-4, rdf_error=err, adf_error=err / 2, d_ratio=2.0)


STAND_INS = st.Stages(allatom=fake_allatom, map=fake_map, reference=fake_reference, train=fake_train,
                      simulate=fake_simulate, evaluate=fake_evaluate)


def tiny_config(run_dir: Path, **study) -> Config:
    return from_dict(Config, {
        "run_dir": str(run_dir),
        "system": {"molecule": "methanol_trappe", "n_molecules": 64},
        "states": [{"temperature_K": 300, "density_g_cm3": 0.75}, {"temperature_K": 400, "density_g_cm3": 0.75}],
        "pair": {"cutoff_A": 6.5},
        "study": {"progress": False, **study},
    })


def calls(run_dir: Path) -> list[str]:
    path = run_dir / "calls.log"
    return path.read_text().split("\n")[:-1] if path.exists() else []


# ---------------------------------------------------------------------------- plan and validation

def test_plan_models_and_units(tmp_path):
    config = tiny_config(tmp_path)
    models = st.plan_models(config)
    assert [m.name for m in models] == [
        "hipnn_ts-T300_rho0.75", "hipnn_ts-T400_rho0.75", "hipnn_ts-pooled",
        "mscg-T300_rho0.75", "mscg-T400_rho0.75", "mscg-pooled"]
    assert models[2].train_states == ("T300_rho0.75", "T400_rho0.75") and models[2].pooled
    units = st.plan_units(config)
    # per state: aa, map, ref; per model: model + md and eval at each state
    assert len(units) == 2 * 3 + 6 * (1 + 2 * 2)
    names = [u.name for u in units]
    for u in units:  # dependency order
        assert all(names.index(d) < names.index(u.name) for d in u.deps)
    assert len({u.key for u in units}) == len(units)


def test_keys_change_only_downstream(tmp_path):
    config = tiny_config(tmp_path)
    before = {u.name: u.key for u in st.plan_units(config)}
    changed = dataclasses.replace(config, rdf=dataclasses.replace(config.rdf, bin_width_A=0.1))
    after = {u.name: u.key for u in st.plan_units(changed)}
    differ = {n for n in before if before[n] != after[n]}
    assert differ and all(n.startswith(("ref/", "eval/")) for n in differ)
    assert all(n in differ for n in before if n.startswith(("ref/", "eval/")))


def test_config_errors_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    # a 64-molecule methanol box at 0.75 g/cm3 is 16.6 A wide: a 10 A cutoff does not fit
    config = tiny_config(run_dir)
    config.train.cutoff_A = 10.0
    with pytest.raises(ConfigError, match=r"train\.cutoff_A: 10 A does not fit the box of state T300_rho0.75"):
        st.run_study(config, run_dir, stages=STAND_INS)
    assert not run_dir.exists()
    with pytest.raises(ConfigError, match=r"study\.pooled\.hot: 'T500_rho0.75' is not a state point"):
        st.run_study(tiny_config(run_dir, pooled={"hot": ["T400_rho0.75", "T500_rho0.75"]}), run_dir, stages=STAND_INS)
    with pytest.raises(ConfigError, match=r"study\.max_wrokers: unknown key; did you mean 'max_workers'"):
        tiny_config(run_dir, max_wrokers=2)
    with pytest.raises(ConfigError, match=r"study\.rdf_tolerance: must be positive"):
        tiny_config(run_dir, rdf_tolerance=-1)
    small = tiny_config(run_dir)
    # the all-atom cutoff by the runner's own rule: at most 0.45 of the 16.56 A box (7.45 A), not half of it
    small.generate.nonbonded_cutoff_A = 7.6
    with pytest.raises(ConfigError, match=r"generate\.nonbonded_cutoff_A: state T300_rho0.75 \(64 molecules of "
                                          r"methanol_trappe at 0.75 g/cm\^3 make a cubic box of 16.56 A\): .*at most "
                                          r"7.45 A, 0.45 of its shortest width"):
        st.validate_study(small)
    small.generate.nonbonded_cutoff_A = 7.4
    st.validate_study(small)
    assert not run_dir.exists()


def test_box_estimate_known_answer(tmp_path):
    # 64 x 32.042 amu at 0.75 g/cm3: V = 64 * 32.042 * 1.66054 / 0.75 A^3
    config = tiny_config(tmp_path)
    expected = (64 * 32.042 * 1.66053906660 / 0.75) ** (1 / 3)
    length = st.estimated_box_length_A(config, config.states[0])
    assert length == pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------------------- running, caching, resume

@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """One finished stand-in study; tests that resume it work on a copy."""
    run_dir = tmp_path_factory.mktemp("study") / "run"
    out = st.run_study(tiny_config(run_dir), run_dir, stages=STAND_INS)
    return run_dir, out


@pytest.fixture
def study_copy(finished_study, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_study[0], run_dir)
    (run_dir / "calls.log").unlink()
    return run_dir


def test_tiny_study_with_stand_ins_known_matrices(finished_study):
    run_dir, out = finished_study
    assert not out.failed and not out.skipped
    assert len(out.ran) == len(st.plan_units(tiny_config(run_dir))) + 1
    assert (run_dir / "report" / "index.html").exists() and (run_dir / "report" / "summary.md").exists()
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    rdf = summary["matrices"]["rdf_error"]
    assert rdf["hipnn_ts"]["T300_rho0.75"]["T400_rho0.75"] == pytest.approx(0.01 + 0.02)
    assert rdf["mscg"]["T400_rho0.75"]["T400_rho0.75"] == pytest.approx(0.03)
    assert rdf["mscg"]["pooled"]["T300_rho0.75"] == pytest.approx(0.03 + 0.05 * 0.5)
    assert summary["matrices"]["force_rmse"]["hipnn_ts"]["T300_rho0.75"]["T300_rho0.75"] == pytest.approx(0.1)
    cmp = summary["comparison"]["families"]
    assert cmp["hipnn_ts"]["rdf_error"]["single_away"] == pytest.approx(0.03)
    assert cmp["mscg"]["rdf_error"]["single_away"] == pytest.approx(0.08)
    # pooled (T_m = 350) error 0.02 vs single-state models away from home 0.03
    assert summary["comparison"]["pooled_vs_single"]["hipnn_ts"]["pooled"]["pooled_rdf_error"] == pytest.approx(0.02)
    # tolerance 0.05: HIP-NN-TS models match everywhere, MS-CG only at home (0.03) and pooled (0.055 > 0.05)
    assert summary["verdicts"]["hipnn_ts-T300_rho0.75"]["reproduces_at"] == ["T300_rho0.75", "T400_rho0.75"]
    assert summary["verdicts"]["mscg-T300_rho0.75"]["reproduces_at"] == ["T300_rho0.75"]
    assert summary["verdicts"]["mscg-pooled"]["reproduces_at"] == []
    text = (run_dir / "report" / "summary.md").read_text()
    assert "HIP-NN-TS transfers better" in text and "0.03 vs 0.08" in text
    assert summary["tolerances"]["per_state"]["T300_rho0.75"] == {"rdf_error": 0.05, "adf_error": 0.1}
    assert "Stability: all 12 evaluated CG runs passed the blow-up checks" in text
    wide = (run_dir / "analysis" / "study" / "rdf_error_mscg.csv").read_text().splitlines()
    assert wide[0] == "train_set,T300_rho0.75,T400_rho0.75"
    assert wide[1] == "T300_rho0.75,0.03,0.08"
    long_rows = (run_dir / "analysis" / "study" / "matrices.csv").read_text().splitlines()
    assert len(long_rows) == 1 + 4 * 2 * 3 * 2


def test_rerun_after_deleting_report_runs_only_the_report(study_copy):
    run_dir = study_copy
    config = tiny_config(run_dir)
    again = st.run_study(config, run_dir, stages=STAND_INS)
    assert again.ran == [] and "report" in again.skipped
    (run_dir / "report" / "index.html").unlink()
    third = st.run_study(config, run_dir, stages=STAND_INS)
    assert third.ran == ["report"]
    assert calls(run_dir) == []
    assert (run_dir / "report" / "index.html").exists()


def test_resume_after_injected_failure(study_copy):
    run_dir = study_copy
    config = tiny_config(run_dir)
    for unit in st.plan_units(config):  # as if this MD run and its evaluation had never happened
        if unit.name in ("md/mscg-pooled/T300_rho0.75", "eval/mscg-pooled/T300_rho0.75"):
            st.manifest_path(run_dir, unit).unlink()
    (run_dir / "fail_md").write_text("mscg-pooled/T300_rho0.75")
    with pytest.raises(st.StudyError, match=r"md/mscg-pooled/T300_rho0.75: RuntimeError: injected failure"):
        st.run_study(config, run_dir, stages=STAND_INS)
    assert calls(run_dir) == ["md mscg-pooled T300_rho0.75"]  # its eval was skipped, nothing else ran
    # the report of what did finish was written, with a hole in the matrix
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert summary["matrices"]["rdf_error"]["mscg"]["pooled"]["T300_rho0.75"] is None
    assert (run_dir / "study" / "failed" / "md__mscg-pooled__T300_rho0.75.txt").exists()
    (run_dir / "fail_md").unlink()
    (run_dir / "calls.log").unlink()
    out = st.run_study(config, run_dir, stages=STAND_INS)
    assert calls(run_dir) == ["md mscg-pooled T300_rho0.75", "eval mscg-pooled T300_rho0.75"]
    assert out.ran == ["md/mscg-pooled/T300_rho0.75", "eval/mscg-pooled/T300_rho0.75", "report"]
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert summary["matrices"]["rdf_error"]["mscg"]["pooled"]["T300_rho0.75"] == pytest.approx(0.055)


def test_killed_unit_outputs_are_rebuilt(study_copy):
    """A unit killed mid-way leaves outputs but no manifest: the rerun removes and rebuilds them."""
    run_dir = study_copy
    config = tiny_config(run_dir)
    for unit in st.plan_units(config):  # killed during this MD run: neither it nor its eval finished
        if unit.name in ("md/hipnn_ts-pooled/T400_rho0.75", "eval/hipnn_ts-pooled/T400_rho0.75"):
            st.manifest_path(run_dir, unit).unlink()
    stale = RunDir(run_dir).md("hipnn_ts-pooled", "T400_rho0.75") / "half_written.partial"
    stale.write_text("x")
    st.run_study(config, run_dir, stages=STAND_INS)
    assert calls(run_dir) == ["md hipnn_ts-pooled T400_rho0.75", "eval hipnn_ts-pooled T400_rho0.75"]
    assert not stale.exists()


def test_changed_config_reruns_only_what_depends_on_it(study_copy):
    run_dir = study_copy
    config = tiny_config(run_dir)
    config.analysis.adf_cutoff_A = 5.5  # read by ref and eval units only
    out = st.run_study(config, run_dir, stages=STAND_INS)
    kinds = sorted({c.split()[0] for c in calls(run_dir)})
    assert kinds == ["eval", "ref"]
    assert "report" in out.ran


def write_methanol_extxyz(path: Path, rng: np.random.Generator, *, n_molecules: int = 4, n_frames: int = 3) -> Path:
    """A small all-atom extxyz trajectory with forces: ``n_molecules`` three-site methanols in a 20 A box."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from thermocg import units

    n_atoms = 3 * n_molecules
    images = []
    for _ in range(n_frames):
        atoms = ase.Atoms(symbols=["C", "O", "H"] * n_molecules, positions=rng.uniform(1, 19, (n_atoms, 3)),
                          cell=np.eye(3) * 20.0, pbc=True, masses=np.tile([15.035, 15.999, 1.008], n_molecules))
        atoms.arrays["mol_id"] = np.repeat(np.arange(n_molecules), 3)
        atoms.arrays["atom_names"] = np.array(["CH3", "O", "H"] * n_molecules)
        atoms.calc = SinglePointCalculator(atoms, forces=rng.normal(size=(n_atoms, 3)) / units.EV_TO_KCAL_MOL,
                                           energy=0.0)
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def test_each_imported_trajectory_is_imported_once(tmp_path, monkeypatch, rng):
    """Two imported states: each import unit imports its own trajectory and no other (the importer
    used to be called without the state, so every unit re-imported every file)."""
    from thermocg.allatom import readers

    run_dir = tmp_path / "run"
    imports = [{"path": str(write_methanol_extxyz(tmp_path / f"T{t}.extxyz", rng)), "format": "extxyz",
                "state": {"temperature_K": t, "density_g_cm3": 0.75}} for t in (300, 400)]
    config = from_dict(Config, {"run_dir": str(run_dir), "system": {"molecule": "methanol_trappe", "n_molecules": 64},
                                "imports": imports, "pair": {"cutoff_A": 6.5}, "study": {"progress": False}})
    imported: list[str] = []
    real_import = readers.run_import

    def spy(*args, **kwargs):
        written = real_import(*args, **kwargs)
        imported.extend(Path(p).parent.name for p in written)
        return written

    monkeypatch.setattr(readers, "run_import", spy)
    stages = dataclasses.replace(STAND_INS, allatom=st.stages.generate_or_import)
    st.run_study(config, run_dir, stages=stages)
    assert sorted(imported) == ["T300_rho0.75", "T400_rho0.75"]
    for unit in st.plan_units(config):
        if unit.kind == "aa":
            result = st.read_manifest(run_dir, unit).result
            assert result == st.AllAtomResult(unit.state, RunDir(run_dir).allatom_trajectory(unit.state), None,
                                              f"the first frame of {unit.state[:4]}.extxyz has no ns_per_day key")
            assert result.trajectory.exists()


def test_manifests_give_back_the_typed_results(finished_study, study_copy):
    """Every manifest reads back as the typed object its stage returned; a rerun hands the typed
    upstream results to the stages (the stand-ins assert their types)."""
    run_dir, _ = finished_study
    config = tiny_config(run_dir)
    kinds = {}
    for unit in st.plan_units(config):
        manifest = st.read_manifest(run_dir, unit)
        assert manifest.unit == unit.name and manifest.key == unit.key and manifest.model == unit.model
        assert isinstance(manifest.result, st.result_type(unit.kind))
        kinds[unit.kind] = manifest.result
    assert kinds["model"].model_path == RunDir(run_dir).model(kinds["model"].name) / "model.safetensors"
    assert isinstance(kinds["ref"].rdf, RDFResult) and isinstance(kinds["eval"].adf, ADFResult)
    md = st.read_manifest(run_dir, next(u for u in st.plan_units(config) if u.name == "md/mscg-pooled/T400_rho0.75"))
    assert md.result.ns_per_day == 100.0 and md.result.trajectory.name == "traj.h5md"
    ev = st.read_manifest(run_dir, next(u for u in st.plan_units(config) if u.name == "eval/mscg-pooled/T400_rho0.75"))
    np.testing.assert_array_equal(ev.result.parity, [[1.0, 1.1], [-2.0, -1.8]])
    assert ev.result.rdf_error == pytest.approx(0.055) and ev.result.force["rmse"] == pytest.approx(0.55)
    # a rerun of the evaluations only: they receive the ModelSummary, MDRunSummary and ReferenceResult
    for unit in st.plan_units(config):
        if unit.kind == "eval":
            st.manifest_path(study_copy, unit).unlink()
    out = st.run_study(tiny_config(study_copy), study_copy, stages=STAND_INS)
    assert sorted(out.ran) == sorted([u.name for u in st.plan_units(config) if u.kind == "eval"] + ["report"])
    assert st.collect_results(config, run_dir)["matrices"] == st.collect_results(config, study_copy)["matrices"]


def test_a_stage_returning_the_wrong_type_fails_its_unit(tmp_path):
    run_dir = tmp_path / "run"

    def untyped_map(config, run_dir, label):
        fake_map(config, run_dir, label)
        return {"dataset": str(RunDir(run_dir).cg_dataset(label))}

    with pytest.raises(st.StudyError, match=r"map/T300_rho0.75: TypeError: the map stage returned dict, not a MapResult"):
        st.run_study(tiny_config(run_dir), run_dir, stages=dataclasses.replace(STAND_INS, map=untyped_map))


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_results(tmp_path):
    pytest.importorskip("distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        serial, parallel = tmp_path / "serial", tmp_path / "parallel"
        st.run_study(tiny_config(serial), serial, stages=STAND_INS)
        out = st.run_study(tiny_config(parallel, max_workers=2), parallel, stages=STAND_INS)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert len(out.ran) == len(st.plan_units(tiny_config(parallel))) + 1
    a = json.loads((serial / "analysis" / "study" / "matrices.json").read_text())
    b = json.loads((parallel / "analysis" / "study" / "matrices.json").read_text())
    assert a == b
    assert sorted(calls(serial)) == sorted(calls(parallel))


# ---------------------------------------------------------------------------- metrics

def test_rdf_and_adf_error_known_answers():
    ref = rdf_result(np.ones(200))
    shifted = rdf_result(np.ones(200) + 0.2)
    assert rdf_error(shifted, ref) == pytest.approx(0.2)
    assert rdf_error(ref, ref) == 0.0
    edges = np.linspace(0.0, 180.0, 181)
    theta = 0.5 * (edges[1:] + edges[:-1])
    p1 = np.where(theta < 90, 1 / 90, 0.0)
    p2 = np.where(theta >= 90, 1 / 90, 0.0)
    a = ADFResult(theta, edges, {"all": p1}, {"all": 10}, 4.0, 1)
    b = ADFResult(theta, edges, {"all": p2}, {"all": 10}, 4.0, 1)
    assert adf_error(a, a) == 0.0
    assert adf_error(b, a) == pytest.approx(2.0)  # disjoint distributions
    # one definition: the per-pair and per-key comparisons report the same numbers
    assert compare_rdf(shifted, ref)["MeOH-MeOH"]["mean_abs_dg"] == rdf_error(shifted, ref)
    assert compare_adf(b, a)["all"]["integrated_abs_dp"] == adf_error(b, a)


def test_rdf_error_of_a_shifted_peak_is_the_analytic_mean():
    """g(r) = 1 + A exp(-(r - r0)^2 / 2s^2) against the same peak moved by d: on [0, L] with the peak
    far from both ends, mean |dg| = (1/L) integral |G(r) - G(r - d)| dr = 2 A s sqrt(2 pi) erf(d / (2 sqrt(2) s)) / L."""
    from math import erf, pi, sqrt

    height, r0, width, d, length = 1.5, 4.0, 0.3, 0.25, 10.0
    edges = np.linspace(0.0, length, 20001)
    r = 0.5 * (edges[1:] + edges[:-1])

    def peak(centre):
        return RDFResult(r_A=r, edges_A=edges, g={"A-A": 1 + height * np.exp(-(r - centre) ** 2 / (2 * width**2))},
                         counts={}, n_frames=1)

    analytic = 2 * height * width * sqrt(2 * pi) * erf(d / (2 * sqrt(2) * width)) / length
    assert rdf_error(peak(r0 + d), peak(r0)) == pytest.approx(analytic, rel=1e-6)
    assert compare_rdf(peak(r0 + d), peak(r0))["A-A"]["peak_position_error_A"] == pytest.approx(d, abs=1e-3)


def test_errors_on_different_grids_use_the_reference_bins_where_the_result_is_defined():
    """A result on a shorter, coarser grid: interpolated onto the reference's bins; the reference bins
    beyond the result's last bin centre are left out of the mean (not extrapolated), and below its
    first bin centre its first value is used."""
    edges_ref = np.linspace(0.0, 8.0, 81)
    r_ref = 0.5 * (edges_ref[1:] + edges_ref[:-1])
    edges = np.linspace(0.0, 6.0, 31)
    r = 0.5 * (edges[1:] + edges[:-1])
    ref = RDFResult(r_A=r_ref, edges_A=edges_ref, g={"A-A": r_ref.copy()}, counts={}, n_frames=1)
    res = RDFResult(r_A=r, edges_A=edges, g={"A-A": r + 0.5}, counts={}, n_frames=1)
    # g is linear, so the interpolation is exact: |dg| = 0.5 on the 58 reference bins 0.15 ... 5.85 A,
    # and 0.6 - 0.05 = 0.55 on the bin at 0.05 A, below the result's first centre (0.1 A)
    assert rdf_error(res, ref) == pytest.approx((0.55 + 58 * 0.5) / 59, rel=1e-12)
    assert compare_rdf(res, ref)["A-A"]["mean_abs_dg"] == rdf_error(res, ref)
    # an ADF on twice-finer bins of the same p: interpolation of a constant, no error
    coarse = np.linspace(0.0, 180.0, 46)
    fine = np.linspace(0.0, 180.0, 91)
    a = ADFResult(0.5 * (coarse[1:] + coarse[:-1]), coarse, {"all": np.full(45, 1 / 180)}, {"all": 5}, 4.0, 1)
    b = ADFResult(0.5 * (fine[1:] + fine[:-1]), fine, {"all": np.full(90, 1 / 180)}, {"all": 5}, 4.0, 1)
    assert adf_error(a, b) == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(adf_error(a, ADFResult(b.angle_deg, b.edges_deg, {"X": b.p["all"]}, {"X": 5}, 4.0, 1)))


# ---------------------------------------------------------------------------- shipped configs

@pytest.mark.parametrize("name", ["demo.yaml", "methanol.yaml", "methanol_cpu.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(ROOT / "configs" / name)
    states = st.validate_study(config)
    temperatures = {s.temperature_K for s in states.values()}
    assert len(temperatures) >= (3 if name == "demo.yaml" else 5)
    assert Path(config.run_dir) == ROOT / "runs" / Path(name).stem
    if name != "demo.yaml":
        densities = {s.density_g_cm3 for s in states.values()} | {s.pressure_bar for s in states.values()}
        assert len(densities - {None}) >= 3


def test_relative_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    import yaml

    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(yaml.safe_dump({
        "run_dir": "../runs/x",
        "system": {"molecule": "molecules/mine.yaml"},
        "imports": [{"path": "../data/traj.extxyz", "format": "extxyz", "molecule": "methanol_trappe"},
                    {"path": "/abs/traj.trr", "format": "gromacs", "topology": "../data/conf.gro"}],
    }))
    monkeypatch.chdir(tmp_path)  # somewhere else
    config = load_config("project/configs/study.yaml")
    project = (tmp_path / "project").resolve()
    assert config.run_dir == str(project / "runs" / "x")
    assert config.system.molecule == str(project / "configs" / "molecules" / "mine.yaml")
    assert config.imports[0].path == str(project / "data" / "traj.extxyz")
    assert config.imports[0].molecule == "methanol_trappe"  # a built-in name stays a name
    assert config.imports[1].path == "/abs/traj.trr"
    assert config.imports[1].topology == str(project / "data" / "conf.gro")


# ---------------------------------------------------------------------------- the real stages

TINY_REAL = {
    "seed": 7,
    "system": {"molecule": "methanol_trappe", "n_molecules": 32},
    "states": [{"temperature_K": 280, "density_g_cm3": 0.80}, {"temperature_K": 340, "density_g_cm3": 0.75}],
    "generate": {"equilibration_ps": 0.5, "production_ps": 2.0, "save_interval_fs": 50, "thermo_interval_fs": 100,
                 "n_threads": 1, "save_velocities": False},
    "rdf": {"bin_width_A": 0.1},
    "train": {"n_features": 8, "n_sensitivities": 6, "n_atom_layers": 1, "max_epochs": 2, "batch_size": 4,
              "max_batch_size": 8, "patience_epochs": 1, "early_stopping_epochs": 2},
    "pair": {"cutoff_A": 6.0, "spacing_A": 0.25, "lammps_table_points": 0, "min_pairs_per_interval": 5},
    "simulate": {"duration_ps": 1.0, "timestep_fs": 4.0, "save_interval_fs": 20, "thermo_interval_fs": 20,
                 "device": "cpu"},
    "study": {"pooled": {"pooled": []}, "single_states": ["T280_rho0.8"], "force_eval_frames": 10,
              "parity_samples": 200, "progress": False},
}


@pytest.mark.slow
def test_real_tiny_study_end_to_end(tmp_path):
    """OpenMM -> mapping -> HIP-NN-TS and MS-CG -> CG MD -> analysis -> report, 32 molecules, two states."""
    run_dir = tmp_path / "run"
    config = from_dict(Config, {**TINY_REAL, "run_dir": str(run_dir)})
    out = st.run_study(config, run_dir)
    assert not out.failed
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    for family in ("hipnn_ts", "mscg"):
        for train_set in ("T280_rho0.8", "pooled"):
            row = summary["matrices"]["force_rmse"][family][train_set]
            # the mapped AA forces of one-bead methanol are large (RMS ~5 kcal/mol/A); a model must
            # explain part of them, and no model can be worse than predicting zero by a wide margin
            assert all(0 < v < 10 for v in row.values())
            assert all(v is not None and 0 <= v < 1.5 for v in summary["matrices"]["rdf_error"][family][train_set].values())
    html = (run_dir / "report" / "index.html").read_text()
    assert html.count("<img") >= 4 + 2 + 2
    # resume: nothing to do
    again = st.run_study(config, run_dir)
    assert again.ran == []

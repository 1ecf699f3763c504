"""The study's temperature-dependent families and held-out temperature designs: the plan, the unit keys,
the checks before any work, a stand-in study with known matrices and its report, and the shipped config."""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_study import STAND_INS, rdf_result  # noqa: E402

from thermocg import study as st
from thermocg.config import STUDY_FAMILIES, Config, ConfigError, StudyConfig, from_dict, load_config
from thermocg.study.plan import extrapolation_needed_K, family_settings

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["hipnn_ts", "hipnn_ts_thermal", "mscg", "mscg_thermal"]
LABELS = ["T280_rho0.8", "T310_rho0.78", "T340_rho0.76"]
#: stand-in errors: err = base + slope |T_train_mean - T| / 100 (+ extra per held-out K for the agnostic families)
BASE = {"hipnn_ts": 0.01, "hipnn_ts_thermal": 0.01, "mscg": 0.03, "mscg_thermal": 0.03}
SLOPE = {"hipnn_ts": 0.02, "hipnn_ts_thermal": 0.01, "mscg": 0.05, "mscg_thermal": 0.02}


def _temperature(label: str) -> float:
    return float(label.split("_")[0][1:])


def thermal_config(run_dir: Path, *, train: dict | None = None, pair: dict | None = None, states=None,
                   **study) -> Config:
    """64 methanol beads at 280, 310 and 340 K; the four families; an interpolation and an extrapolation
    design by temperature, and every state pooled."""
    study = {"families": FAMILIES, "pooled": {"all": [], "ends": [280, 340], "low": [280, 310]},
             "progress": False, **study}
    return from_dict(Config, {
        "run_dir": str(run_dir),
        "system": {"molecule": "methanol_trappe", "n_molecules": 64},
        "states": states or [{"temperature_K": 280, "density_g_cm3": 0.80}, {"temperature_K": 310, "density_g_cm3": 0.78},
                             {"temperature_K": 340, "density_g_cm3": 0.76}],
        "train": train or {}, "pair": {"cutoff_A": 6.5, **(pair or {})}, "study": study,
    })


def thermal_evaluate(config, run_dir, model, trained, label, md, reference):
    """Known errors: base + slope x |mean training T - T| / 100, on top of the reference RDF."""
    t_model = np.mean([_temperature(s) for s in model.train_states])
    err = BASE[model.family] + SLOPE[model.family] * abs(t_model - _temperature(label)) / 100
    rdf = rdf_result(reference.rdf.g["MeOH-MeOH"] + err)
    return st.Evaluation(force={"rmse": 10 * err, "mae": 8 * err, "r2": 1 - err},
                         parity=np.array([[1.0, 1.1], [-2.0, -1.8]]), ns_per_day=md.ns_per_day, rdf=rdf,
                         adf=reference.adf, diffusion_A2_fs=2e-4, rdf_error=err, adf_error=err / 2, d_ratio=2.0)


THERMAL_STAND_INS = dataclasses.replace(STAND_INS, evaluate=thermal_evaluate)


# ---------------------------------------------------------------------------- plan

def test_families_of_the_config_are_the_registry():
    families = typing.get_args(typing.get_type_hints(StudyConfig)["families"])[0]
    assert set(typing.get_args(families)) == set(STUDY_FAMILIES)


def test_plan_thermal_families_get_pooled_models_only(tmp_path):
    config = thermal_config(tmp_path)
    models = st.plan_models(config)
    names = [m.name for m in models]
    assert names == ([f"hipnn_ts-{s}" for s in LABELS] + ["hipnn_ts-all", "hipnn_ts-ends", "hipnn_ts-low"]
                     + ["hipnn_ts_thermal-all", "hipnn_ts_thermal-ends", "hipnn_ts_thermal-low"]
                     + [f"mscg-{s}" for s in LABELS] + ["mscg-all", "mscg-ends", "mscg-low"]
                     + ["mscg_thermal-all", "mscg_thermal-ends", "mscg_thermal-low"])
    by_name = {m.name: m for m in models}
    # designs by temperature: interpolation trains at the ends, extrapolation at the two low temperatures
    assert by_name["hipnn_ts_thermal-ends"].train_states == ("T280_rho0.8", "T340_rho0.76")
    assert by_name["mscg_thermal-low"].train_states == ("T280_rho0.8", "T310_rho0.78")
    assert by_name["mscg-all"].train_states == tuple(LABELS)
    assert all(m.pooled for m in models if "thermal" in m.family)
    # a temperature and a label may be mixed; the same state twice counts once
    mixed = thermal_config(tmp_path, pooled={"mix": ["T280_rho0.8", 280, 340]})
    assert st.plan_models(mixed)[-1].train_states == ("T280_rho0.8", "T340_rho0.76")
    # asked for, the temperature-dependent families get single-state models too
    with_singles = [m.name for m in st.plan_models(thermal_config(tmp_path, thermal_single_states=True))]
    assert "hipnn_ts_thermal-T310_rho0.78" in with_singles and "mscg_thermal-T280_rho0.8" in with_singles
    st.validate_study(config)


def test_family_settings_override_one_key(tmp_path):
    config = thermal_config(tmp_path, train={"temperature_dependence": "linear", "energy_weight": 0.5},
                            pair={"temperature_dependence": "linear", "reference_temperature_K": 300})
    by_name = {m.name: m for m in st.plan_models(config)}
    plain = family_settings(config, by_name["hipnn_ts-ends"])
    thermal = family_settings(config, by_name["hipnn_ts_thermal-ends"])
    assert plain.temperature_dependence == "none" and plain.energy_weight == 0.0
    assert thermal.temperature_dependence == "linear" and thermal.energy_weight == 0.5
    # every other key is the section's own
    assert dataclasses.replace(thermal, temperature_dependence="none", energy_weight=0.0,
                               max_temperature_extrapolation_K=None) == plain
    pair_plain = family_settings(config, by_name["mscg-low"])
    pair_thermal = family_settings(config, by_name["mscg_thermal-low"])
    assert pair_plain.temperature_dependence == "none" and pair_plain.reference_temperature_K is None
    assert pair_thermal.temperature_dependence == "linear" and pair_thermal.reference_temperature_K == 300
    # the study runs every model at every state: the extrapolation design must reach 340 K from [280, 310] K
    assert extrapolation_needed_K(config, by_name["mscg_thermal-low"].train_states) == pytest.approx(30.0)
    assert pair_thermal.max_temperature_extrapolation_K == pytest.approx(30.0)
    assert family_settings(config, by_name["mscg_thermal-ends"]).max_temperature_extrapolation_K is None
    assert pair_plain.max_temperature_extrapolation_K is None


def test_two_families_never_share_a_unit(tmp_path):
    config = thermal_config(tmp_path)
    units = st.plan_units(config)
    keys = {u.name: u.key for u in units}
    assert len(set(keys.values())) == len(keys)
    for a, b in (("hipnn_ts", "hipnn_ts_thermal"), ("mscg", "mscg_thermal")):
        assert keys[f"model/{a}-ends"] != keys[f"model/{b}-ends"]
        assert keys[f"md/{a}-ends/T310_rho0.78"] != keys[f"md/{b}-ends/T310_rho0.78"]
    # adding the temperature-dependent families leaves every unit of the others as it was (nothing reruns)
    plain = {u.name: u.key for u in st.plan_units(thermal_config(tmp_path, families=["hipnn_ts", "mscg"]))}
    assert plain and all(keys[name] == key for name, key in plain.items())
    # the family's key holds its own section: a temperature key of the pair section reaches mscg_thermal only
    warmer = thermal_config(tmp_path, pair={"temperature_dependence": "linear", "reference_temperature_K": 320})
    warm = {u.name: u.key for u in st.plan_units(warmer)}
    assert warm["model/mscg-ends"] == keys["model/mscg-ends"]
    assert warm["model/mscg_thermal-ends"] != keys["model/mscg_thermal-ends"]


# ---------------------------------------------------------------------------- checks before any work

@pytest.mark.parametrize("kwargs, message", [
    ({"pooled": {}}, r"study\.families: hipnn_ts_thermal is temperature-dependent and gets pooled models only"),
    ({"pooled": {"cold": [280]}}, r"study\.pooled\.cold: every state of it is at 280 K, so the hipnn_ts_thermal "
                                  r"model trained on it would be the plain hipnn_ts model"),
    ({"pooled": {"warm": [300]}}, r"study\.pooled\.warm\[0\]: no state point of this study is at 300 K \(its "
                                  r"temperatures are 280, 310, 340 K\)"),
    ({"pooled": {"warm": ["T300_rho0.8"]}}, r"study\.pooled\.warm: 'T300_rho0.8' is not a state point"),
    ({"pair": {"temperature_dependence": "linear", "max_temperature_extrapolation_K": 10}},
     r"pair\.max_temperature_extrapolation_K: 10 K, but the mscg_thermal model of study\.pooled\.low \(trained at "
     r"280, 310 K\) would be run 30 K outside that range"),
    ({"families": ["hipnn_ts", "mscg"], "train": {"temperature_dependence": "input"}},
     r"train\.temperature_dependence: input, but study\.families has no hipnn_ts_tinput"),
])
def test_thermal_config_errors_are_clear(tmp_path, kwargs, message):
    kwargs = dict(kwargs)
    sections = {k: kwargs.pop(k) for k in ("train", "pair") if k in kwargs}
    config = thermal_config(tmp_path / "run", **sections, **kwargs)
    with pytest.raises(ConfigError, match=message):
        st.run_study(config, tmp_path / "run", stages=THERMAL_STAND_INS)
    assert not (tmp_path / "run").exists()


def test_thermal_config_errors_when_loading(tmp_path):
    with pytest.raises(ConfigError, match=r"study\.families\[1\]: 'mscg_termal' is not one of .*did you mean "
                                          r"'mscg_thermal'"):
        thermal_config(tmp_path, families=["mscg", "mscg_termal"])
    with pytest.raises(ConfigError, match=r"study\.pooled\.ends\[1\]: a temperature must be positive"):
        thermal_config(tmp_path, pooled={"ends": [280, -340]})


def test_one_temperature_pooled_set_with_energy_terms_is_allowed(tmp_path):
    # energy matching gives the temperature dependence at one temperature (docs/temperature.md)
    config = thermal_config(tmp_path, families=["hipnn_ts", "hipnn_ts_thermal"], pooled={"cold": [280]},
                            train={"temperature_dependence": "linear", "energy_weight": 1.0,
                                   "max_temperature_extrapolation_K": 60})
    st.validate_study(config)
    assert [m.name for m in st.plan_models(config)][-1] == "hipnn_ts_thermal-cold"


# ---------------------------------------------------------------------------- a stand-in study and its report

@pytest.fixture(scope="module")
def thermal_study(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("thermal") / "run"
    config = thermal_config(run_dir, single_states=["T310_rho0.78"])
    out = st.run_study(config, run_dir, stages=THERMAL_STAND_INS)
    return run_dir, out


def test_tiny_thermal_study_held_out_errors(thermal_study):
    run_dir, out = thermal_study
    assert not out.failed
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert {m["name"] for m in summary["models"]} >= {"hipnn_ts_thermal-ends", "mscg_thermal-low", "mscg-T310_rho0.78"}
    rdf = summary["matrices"]["rdf_error"]
    # ends: mean training T 310 K; at 340 K the thermal model is 0.01 + 0.01 x 0.3
    assert rdf["hipnn_ts_thermal"]["ends"]["T340_rho0.76"] == pytest.approx(0.013)
    held = summary["comparison"]["held_out"]
    ends = held["hipnn_ts_thermal-ends"]
    assert ends["trained_at"] == ["T280_rho0.8", "T340_rho0.76"] and ends["held_out"] == ["T310_rho0.78"]
    assert ends["baseline"] == "hipnn_ts-ends"
    assert ends["rdf_error_held_out"] == pytest.approx(0.01) and ends["rdf_error_seen"] == pytest.approx(0.013)
    # extrapolation: trained at 280 and 310 (mean 295 K), held out at 340 K: 0.03 + 0.02 x 0.45 vs 0.03 + 0.05 x 0.45
    low = held["mscg_thermal-low"]
    assert low["held_out"] == ["T340_rho0.76"] and low["baseline"] == "mscg-low"
    assert low["rdf_error_held_out"] == pytest.approx(0.039)
    assert low["baseline_rdf_error_held_out"] == pytest.approx(0.0525)
    assert low["rdf_error_held_out_ratio"] == pytest.approx(0.039 / 0.0525)
    assert low["rdf_error_held_out_noise_floor"] == pytest.approx(0.025)
    assert held["mscg-low"]["baseline"] is None and held["hipnn_ts_thermal-all"]["held_out"] == []
    # the single-state comparison still weighs HIP-NN-TS against MS-CG (the thermal families have no single-state models)
    assert st.metrics.compared_families(summary) == ["hipnn_ts", "mscg"]
    figures = st.metrics.key_figures(summary)
    assert figures["mscg_thermal-low.rdf_error.held_out_ratio"] == pytest.approx(0.039 / 0.0525)
    # single-state models away from home: HIP-NN-TS 0.016 vs MS-CG 0.045, a gap above the 0.025 floor
    assert figures["verdict.rdf_error"] == "HIP-NN-TS"


def test_thermal_report_marks_trained_on_states(thermal_study):
    run_dir, _ = thermal_study
    md = (run_dir / "report" / "summary.md").read_text()
    html = (run_dir / "report" / "index.html").read_text()
    # the matrices name the states each model trained at
    assert "| trained on | T280_rho0.8 | T310_rho0.78 | T340_rho0.76 | trained at |" in md
    assert "| ends | 0.013 | 0.01 | 0.013 | T280_rho0.8, T340_rho0.76 |" in md  # the hipnn_ts_thermal RDF row
    assert "| all | 0.013 | 0.01 | 0.013 | every state |" in md
    assert "**HIP-NN-TS thermal (E_0 + tau E_1)**" in md
    # held-out vs seen, against the agnostic model of the same states, with the noise floor: MS-CG low at
    # 340 K, 0.039 vs 0.0525, a gap of 0.0135 within the RDF noise floor 0.025
    line = next(x for x in md.splitlines() if "Held-out states of mscg_thermal-low" in x)
    assert "trained at T280_rho0.8, T310_rho0.78; held out: T340_rho0.76" in line
    assert "RDF error 0.039 held out vs 0.033 seen (noise floor 0.025); mscg-low there: 0.0525, ratio 0.743, " \
           "indistinguishable from it: the gap is within the noise floor" in line
    # the HTML matrices highlight the cells of training states: the thermal ends model has two per metric
    start = html.index("<b>HIP-NN-TS thermal (E_0 + tau E_1)</b>")
    table = html[start:html.index("</table>", start)]
    assert table.count("class='home'") == 3 + 2 + 2  # rows all, ends, low


# ---------------------------------------------------------------------------- the shipped config

def test_shipped_thermal_config():
    config = load_config(ROOT / "configs" / "methanol_thermal_cpu.yaml")
    states = st.validate_study(config)
    temperatures = sorted({s.temperature_K for s in states.values()})
    assert len(temperatures) >= 5
    assert Path(config.run_dir) == ROOT / "runs" / "methanol_thermal_cpu"
    models = st.plan_models(config)
    assert {m.family for m in models} == set(FAMILIES)
    by_name = {m.name: m for m in models}
    hot = [s for s, v in states.items() if v.temperature_K == temperatures[-1]]
    for family in FAMILIES:
        # interpolation: trained at the two ends, so the middle states are held out
        ends = by_name[f"{family}-interpolation"]
        assert {states[s].temperature_K for s in ends.train_states} == {temperatures[0], temperatures[-1]}
        # extrapolation: the two lowest temperatures, the highest held out
        low = by_name[f"{family}-extrapolation"]
        assert {states[s].temperature_K for s in low.train_states} == set(temperatures[:2])
        assert not set(hot) & set(low.train_states)
    assert not any(m.family.endswith("thermal") and not m.pooled for m in models)


# ---------------------------------------------------------------------------- the real stages

@pytest.mark.slow
def test_real_tiny_thermal_study_end_to_end(tmp_path):
    """OpenMM -> mapping -> HIP-NN-TS thermal, MS-CG and MS-CG thermal on the ends (interpolation) and
    the two low temperatures (extrapolation) -> CG MD at every state -> report, 32 molecules."""
    from test_study import TINY_REAL

    from thermocg.potentials.base import load_potential

    run_dir = tmp_path / "run"
    states = [{"temperature_K": 280, "density_g_cm3": 0.80}, {"temperature_K": 310, "density_g_cm3": 0.78},
              {"temperature_K": 340, "density_g_cm3": 0.75}]
    study = {**TINY_REAL["study"], "families": ["hipnn_ts_thermal", "mscg", "mscg_thermal"], "single_states": [],
             "pooled": {"ends": [280, 340], "low": [280, 310]}}
    config = from_dict(Config, {**TINY_REAL, "states": states, "study": study, "run_dir": str(run_dir)})
    out = st.run_study(config, run_dir)
    assert not out.failed
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    labels = list(summary["states"])
    for name in ("hipnn_ts_thermal-ends", "mscg_thermal-low", "mscg-low"):
        # every model ran at every state, the extrapolation design's 30 K beyond its training range included
        assert set(summary["evaluations"][name]) == set(labels)
        family, train_set = name.split("-")
        assert all(v is not None and 0 <= v < 1.5 for v in summary["matrices"]["rdf_error"][family][train_set].values())
    # the trained models are temperature-dependent, with their training range and the study's extrapolation
    low = load_potential(run_dir / "models" / "mscg_thermal-low" / "model.safetensors")
    assert low.temperature_dependent and tuple(low.valid_temperature_range_K) == (280.0, 310.0)
    assert low.extrapolation_limit_K() == pytest.approx(30.0)
    assert load_potential(run_dir / "models" / "hipnn_ts_thermal-ends" / "model.safetensors").temperature_dependent
    assert not load_potential(run_dir / "models" / "mscg-low" / "model.safetensors").temperature_dependent
    held = summary["comparison"]["held_out"]["mscg_thermal-low"]
    assert held["held_out"] == [labels[2]] and held["baseline"] == "mscg-low"
    assert np.isfinite(held["rdf_error_held_out_ratio"])
    assert "Held-out states of mscg_thermal-low" in (run_dir / "report" / "summary.md").read_text()


def test_force_errors_of_a_thermal_model_are_at_the_state_temperature(tmp_path):
    """Known answer: frames whose forces are the model's own at the state's 330 K give a force RMSE of 0,
    where the model at its T_ref (300 K) is off by 30 K x F_1 = 3/40 of the forces."""
    from test_potential_contract import POTENTIAL_FACTORIES, configuration, forces_of

    from thermocg.dataset import write_frames
    from thermocg.frames import Frames, StatePoint
    from thermocg.potentials import save_potential
    from thermocg.rundir import RunDir
    from thermocg.study.stages import _force_evaluation, _progress

    model = POTENTIAL_FACTORIES["pair_table_thermal"](("A", "B"))
    configurations = [configuration(seed) for seed in range(4)]
    types = configurations[0][2]

    def forces_at(temperature_K):
        model.set_temperature(temperature_K)
        return np.stack([forces_of(model, pos, box, types)[1].reshape(pos.shape) for pos, box, _ in configurations])

    forces, at_reference = forces_at(330.0), forces_at(300.0)
    model.set_temperature(None)
    path = save_potential(model, tmp_path / "model.safetensors")
    label = "T330_rho0.75"
    write_frames(Frames(positions=np.stack([c[0] for c in configurations]), box=np.stack([c[1] for c in configurations]),
                        types=types, type_names=("A", "B"), masses=np.full(len(types), 30.0), forces=forces,
                        state=StatePoint(temperature_K=330.0, density_g_cm3=0.75)),
                 RunDir(tmp_path).cg_dataset(label), kind="cg")
    config = thermal_config(tmp_path, families=["mscg"], pooled={"all": []}, single_states=[],
                            states=[{"temperature_K": 330.0, "density_g_cm3": 0.75}])
    with _progress(config, 4, "test") as progress:
        force, _, _ = _force_evaluation(config, tmp_path, path, label, progress)
    scale = float(np.sqrt(np.mean(forces ** 2)))
    assert force["rmse"] < 1e-9 * scale
    # the temperature matters: at T_ref the same model is off by 30 / 400 of the forces
    assert np.sqrt(np.mean((at_reference - forces) ** 2)) == pytest.approx(30 / 430 * scale, rel=1e-6)

"""Network size as a study axis (``study.network_sizes``): the plan and its keys, the checks before any
work, the speed-accuracy frontier from known typed results, and a stand-in study with two sizes."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_study import STAND_INS, adf_result, fake_evaluate, fake_simulate, rdf_result, tiny_config  # noqa: E402

from thermocg import report
from thermocg import study as st
from thermocg.config import ConfigError, load_config
from thermocg.md import MDRunSummary
from thermocg.model_summary import ModelSummary
from thermocg.study.metrics import json_text
from thermocg.study.plan import family_settings

ROOT = Path(__file__).resolve().parents[1]
S1, S2 = "T300_rho0.75", "T400_rho0.75"
SIZES = {"small": {"n_features": 16, "n_sensitivities": 8, "cutoff_A": 6.0}, "deep": {"n_interaction_layers": 2}}


# ---------------------------------------------------------------------------- plan and keys

def test_sizes_add_units_and_leave_every_base_unit_and_key_alone(tmp_path):
    off = {u.name: u for u in st.plan_units(tiny_config(tmp_path))}
    on = {u.name: u for u in st.plan_units(tiny_config(tmp_path, network_sizes=SIZES))}
    assert all(on[name].key == unit.key and on[name].deps == unit.deps for name, unit in off.items())
    added = [name for name in on if name not in off]
    # per size, the HIP-NN-TS models (two single-state, one pooled) and their MD and evaluation at both
    # states; MS-CG gets none
    assert len(added) == 2 * 3 * (1 + 2 * 2)
    assert {name.split("/")[1].split("-")[0] for name in added} == {"hipnn_ts.small", "hipnn_ts.deep"}
    assert "model/hipnn_ts.small-pooled" in added and "eval/hipnn_ts.deep-T300_rho0.75/T400_rho0.75" in added
    assert len({u.key for u in on.values()}) == len(on)
    names = list(on)
    assert all(names.index(d) < names.index(u.name) for u in on.values() for d in u.deps)


def test_the_demo_plan_keeps_its_keys_when_sizes_are_added():
    config = load_config(ROOT / "configs" / "demo.yaml")
    before = {u.name: u.key for u in st.plan_units(config)}
    sizes = {"tiny": {"n_features": 8}}
    sized = dataclasses.replace(config, study=dataclasses.replace(config.study, network_sizes=sizes))
    after = {u.name: u.key for u in st.plan_units(sized)}
    assert {n: after[n] for n in before} == before
    assert len(after) == len(before) + 4 * (1 + 2 * 3)  # 3 single-state + 1 pooled hipnn_ts, 3 states


def test_a_size_trains_with_its_overrides_and_the_rest_of_the_train_section(tmp_path):
    config = tiny_config(tmp_path, families=["hipnn_ts", "hipnn_ts_thermal", "mscg"], network_sizes=SIZES)
    models = {m.name: m for m in st.plan_models(config)}
    small, base = models["hipnn_ts.small-pooled"], models["hipnn_ts-pooled"]
    assert (small.family, small.size, small.variant, small.train_states) == (
        "hipnn_ts", "small", "hipnn_ts.small", base.train_states)
    settings = family_settings(config, small)
    assert (settings.n_features, settings.n_sensitivities, settings.cutoff_A) == (16, 8, 6.0)
    back = dataclasses.replace(settings, n_features=128, n_sensitivities=20, cutoff_A=None)
    assert back == family_settings(config, base)
    deep = family_settings(config, models["hipnn_ts_thermal.deep-pooled"])
    assert (deep.n_interaction_layers, deep.n_features, deep.temperature_dependence) == (2, 128, "linear")
    assert not any(m.family.startswith("mscg") and m.size for m in models.values())
    units = {u.name: u for u in st.plan_units(config)}
    # a fixed cutoff needs only the training state's data; the automatic one every state's boxes
    assert units["model/hipnn_ts.small-T300_rho0.75"].deps == (f"map/{S1}",)
    assert units["model/hipnn_ts.deep-T300_rho0.75"].deps == (f"map/{S1}", f"map/{S2}")
    # two sizes that differ only in the cutoff are two models with two keys
    cut = tiny_config(tmp_path, network_sizes={"a": {"cutoff_A": 6.0}, "b": {"cutoff_A": 7.0}})
    keys = {u.name: u.key for u in st.plan_units(cut)}
    assert keys["model/hipnn_ts.a-pooled"] != keys["model/hipnn_ts.b-pooled"]


@pytest.mark.parametrize("sizes, message", [
    ({"small": {"n_featurs": 16}}, r"study\.network_sizes\.small\.n_featurs: not a key a network size may change "
                                   r"\(did you mean 'n_features'\?"),
    ({"small": {"learning_rate": 0.1}}, r"study\.network_sizes\.small\.learning_rate: not a key a network size may "
                                        r"change \(a size overrides only n_features, n_sensitivities"),
    ({"small-net": {"n_features": 16}}, r"study\.network_sizes\.small-net: a size name is letters, digits and '_'"),
    ({"base": {"n_features": 16}}, r"study\.network_sizes\.base: a size name .* not 'base'"),
    ({"small": {}}, r"study\.network_sizes\.small: give a mapping of the train keys this size changes"),
    ({"small": {"n_features": 1.5}}, r"study\.network_sizes\.small\.n_features: expected an integer"),
    ({"small": {"n_features": 0}}, r"study\.network_sizes\.small\.n_features: must be positive"),
    ({"small": {"cutoff_A": -6}}, r"study\.network_sizes\.small\.cutoff_A: must be positive"),
])
def test_bad_network_sizes_are_config_errors(tmp_path, sizes, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, network_sizes=sizes)


def test_network_size_checks_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"study\.network_sizes: sizes of the HIP-NN-TS network, but study\.families "
                                          r"has none of hipnn_ts"):
        tiny_config(run_dir, families=["mscg"], network_sizes=SIZES)
    with pytest.raises(ConfigError, match=r"study\.network_sizes\.same: the same network as the train section's"):
        st.run_study(tiny_config(run_dir, network_sizes={"same": {"n_features": 128}}), run_dir, stages=STAND_INS)
    with pytest.raises(ConfigError, match=r"study\.network_sizes\.b: the same network as study\.network_sizes\.a's "
                                          r"\(n_features 16, n_sensitivities 20"):
        st.validate_study(tiny_config(run_dir, network_sizes={"a": {"n_features": 16}, "b": {"n_features": 16}}))
    with pytest.raises(ConfigError, match=r"study\.network_sizes\.big\.cutoff_A: 10 A does not fit the box of state "
                                          r"T300_rho0.75"):
        st.run_study(tiny_config(run_dir, network_sizes={"big": {"cutoff_A": 10.0}}), run_dir, stages=STAND_INS)
    assert not run_dir.exists()
    # names are unique: YAML refuses a size given twice
    path = tmp_path / "study.yaml"
    path.write_text("study:\n  network_sizes:\n    small: {n_features: 16}\n    small: {n_features: 8}\n")
    with pytest.raises(ConfigError, match=r"the key 'small' is given twice in one mapping"):
        load_config(path)


# ---------------------------------------------------------------------------- the frontier from known results

#: all-atom ns/day per state; per size: CG ns/day per state (the same for every model of the size),
#: RDF error at home / away (single-state models), ADF error at home / away, cutoff, parameters
AA_NS_PER_DAY = {S1: 2.0, S2: 4.0}
KNOWN = {"base": {"cg": {S1: 10.0, S2: 12.0}, "rdf": {S1: (0.02, 0.07), S2: (0.03, 0.05)},
                  "adf": {S1: (0.1, 0.2), S2: (0.1, 0.2)}, "cutoff_A": 8.0, "n_parameters": 5882},
         "small": {"cg": {S1: 30.0, S2: 40.0}, "rdf": {S1: (0.03, 0.12), S2: (0.04, 0.10)},
                   "adf": {S1: (0.1, 0.15), S2: (0.1, 0.15)}, "cutoff_A": 6.0, "n_parameters": 1602}}
NOISE = {"rdf_error": 0.02, "adf_error": 0.08}


def known_results(config, run_dir: Path) -> dict:
    """Typed results of every unit of a two-state study with single-state HIP-NN-TS models of two sizes;
    the errors of a model at a state: KNOWN[size][metric][the model's training state][home or away]."""
    results = {}
    for s in (S1, S2):
        results[f"aa/{s}"] = st.AllAtomResult(s, run_dir / s, AA_NS_PER_DAY[s], "measured by the all-atom runner",
                                              "CPU", 1)
        results[f"ref/{s}"] = st.ReferenceResult(rdf=rdf_result(np.ones(200)), adf=adf_result(), adf_cutoff_A=5.0,
                                                 diffusion_A2_fs=1e-4, noise=dict(NOISE), n_frames=8, n_beads=8)
    for m in st.plan_models(config):
        size = KNOWN[m.size or "base"]
        results[f"model/{m.name}"] = ModelSummary(
            family=m.family, name=m.name, model_path=run_dir / m.name, train_states=m.train_states, wall_s=1.0,
            n_epochs=3, best_epoch=3, stopped_at_max_epochs=False, test_force_rmse_kcal_mol_A=None,
            test_force_mae_kcal_mol_A=None, test_r2=None, cutoff_A=size["cutoff_A"], n_parameters=size["n_parameters"])
        home = m.train_states[0]
        for s in (S1, S2):
            results[f"md/{m.name}/{s}"] = MDRunSummary(
                model=m.name, model_file="", state=s, out_dir=run_dir, trajectory=run_dir, ns_per_day=size["cg"][s],
                blowup=None, simulated_ps=8.0, n_steps=2000, mean_temperature_K=300.0, seed=1, wall_s=30.0,
                n_threads=1)
            where = 0 if s == home else 1
            results[f"eval/{m.name}/{s}"] = st.Evaluation(
                force={"rmse": 1.0}, parity=np.zeros((0, 2)), ns_per_day=size["cg"][s],
                rdf_error=size["rdf"][home][where], adf_error=size["adf"][home][where])
    return results


def test_frontier_table_and_figure_from_known_typed_results(tmp_path):
    config = tiny_config(tmp_path, families=["hipnn_ts"], pooled={}, network_sizes={"small": {"n_features": 16}})
    summary = st.summarize(config, known_results(config, tmp_path))
    base, small = summary["frontier"]["hipnn_ts"]
    # CG / AA per run: base 10/2, 12/4 -> median 4 (3-5); small 30/2, 40/4 -> 12.5 (10-15)
    assert (base["speed_ratio"], base["speed_ratio_range"]) == (pytest.approx(4.0), [3.0, 5.0])
    assert (small["speed_ratio"], small["speed_ratio_range"]) == (pytest.approx(12.5), [10.0, 15.0])
    assert small["cg_ns_per_day"] == pytest.approx(35.0) and small["cg_threads"] == [1]
    # RDF at home: base (0.02 + 0.03) / 2, small (0.03 + 0.04) / 2; away: (0.07 + 0.05) / 2, (0.12 + 0.10) / 2
    assert (base["rdf_error_at"], base["rdf_error_away"]) == (pytest.approx(0.025), pytest.approx(0.06))
    assert (small["rdf_error_at"], small["rdf_error_away"]) == (pytest.approx(0.035), pytest.approx(0.11))
    assert small["rdf_error_away_noise_floor"] == pytest.approx(0.02)
    assert small["vs_base"]["rdf_error_at"]["resolved"] is False  # a gap of 0.01 within the floor 0.02
    assert small["vs_base"]["rdf_error_away"]["in_floors"] == pytest.approx(2.5)
    assert summary["md_speed"]["hipnn_ts.small-T300_rho0.75"][S2]["ns_per_day"] == 40.0
    assert summary["aa_run"][S1] == {"platform": "CPU", "n_threads": 1}

    rows = report.frontier_rows(summary)
    assert [r["size"] for r in rows] == ["base", "small", "noise floor"]
    assert rows[0] == {"size": "base", "features / sens. / int. / atom layers": "128 / 20 / 1 / 3", "cutoff (A)": "8",
                       "parameters": "5,882", "CG ns/day": "11", "CG / AA ns/day": "4 (3-5)",
                       "RDF error at training states": "0.025", "RDF error away": "0.06",
                       "ADF error at training states": "0.1", "ADF error away": "0.2"}
    assert rows[1] == {"size": "small", "features / sens. / int. / atom layers": "16 / 20 / 1 / 3", "cutoff (A)": "6",
                       "parameters": "1,602", "CG ns/day": "35", "CG / AA ns/day": "12.5 (10-15)",
                       "RDF error at training states": "0.035 (indistinguishable)",
                       "RDF error away": "0.11 (higher by 0.05, 2.5x the noise floor)",
                       "ADF error at training states": "0.1 (indistinguishable)",
                       "ADF error away": "0.15 (indistinguishable)"}
    assert rows[2]["RDF error away"] == "0.02" and rows[2]["ADF error at training states"] == "0.08"
    # the report rebuilt from summary.json (NaN as null) gives the same table
    assert report.frontier_rows(json.loads(json_text(summary))) == rows
    line = next(x for x in report.verdict_lines(summary) if x.startswith("Network sizes"))
    assert "median over each size's runs: base 4x, small 12.5x" in line
    assert "RDF error away from them 0.11 vs 0.06: higher by 0.05, 2.5x the noise floor" in line
    assert "ADF error away from them 0.15 vs 0.2: indistinguishable" in line
    path = report.frontier_figure(summary, tmp_path / "frontier.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    # one size: no frontier
    one = tiny_config(tmp_path, families=["hipnn_ts"], pooled={})
    plain = st.summarize(one, known_results(one, tmp_path))
    assert plain["frontier"] == {} and report.frontier_rows(plain) == []
    assert report.frontier_figure(plain, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


# ---------------------------------------------------------------------------- a stand-in study with two sizes

def sized_simulate(config, run_dir, model, trained, label):
    """The stand-in MD, twice as fast for the small network."""
    summary = fake_simulate(config, run_dir, model, trained, label)
    return dataclasses.replace(summary, ns_per_day=summary.ns_per_day * (2 if model.size == "small" else 1))


def sized_evaluate(config, run_dir, model, trained, label, md, reference):
    """The stand-in errors, 0.01 higher in RDF for the small network."""
    out = fake_evaluate(config, run_dir, model, trained, label, md, reference)
    return dataclasses.replace(out, rdf_error=out.rdf_error + (0.01 if model.size == "small" else 0.0))


def test_stand_in_study_with_two_sizes_draws_the_frontier(tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_config(run_dir, network_sizes={"small": {"n_features": 16, "cutoff_A": 6.0}})
    stages = dataclasses.replace(STAND_INS, simulate=sized_simulate, evaluate=sized_evaluate)
    out = st.run_study(config, run_dir, stages=stages)
    assert not out.failed
    assert (run_dir / "models" / "hipnn_ts.small-pooled" / "model.safetensors").exists()
    assert (run_dir / "md" / "hipnn_ts.small-T300_rho0.75" / S2 / "traj.h5md").exists()
    unit = next(u for u in st.plan_units(config) if u.name == "model/hipnn_ts.small-pooled")
    manifest = st.read_manifest(run_dir, unit)
    assert manifest.model == st.ModelSpec("hipnn_ts", "pooled", (S1, S2), "small")
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert summary["families"] == ["hipnn_ts", "mscg", "hipnn_ts.small"]
    # stand-in errors: 0.01 + 0.02 |dT| / 100 for HIP-NN-TS, +0.01 for the small size
    assert summary["matrices"]["rdf_error"]["hipnn_ts.small"]["T300_rho0.75"][S2] == pytest.approx(0.04)
    base, small = summary["frontier"]["hipnn_ts"]
    assert (base["speed_ratio"], small["speed_ratio"]) == (pytest.approx(10.0), pytest.approx(20.0))  # 20, 40 over 2
    assert small["rdf_error_away"] - base["rdf_error_away"] == pytest.approx(0.01)
    assert small["vs_base"]["rdf_error_away"]["resolved"] is False  # within the stand-in floor 0.025
    assert "mscg" not in summary["frontier"]
    assert (run_dir / "report" / "figures" / "frontier.png").exists()
    text = (run_dir / "report" / "summary.md").read_text()
    assert "## Speed-accuracy frontier of the network sizes" in text and "![speed-accuracy frontier]" in text
    assert "| small | 16 / 20 / 1 / 3 |" in text and "on a shared machine they measure its load too" in text
    assert "HIP-NN-TS [small]" in (run_dir / "report" / "index.html").read_text()
    again = st.run_study(config, run_dir, stages=stages)
    assert again.ran == [] and not again.failed
    assert math.isfinite(summary["frontier"]["hipnn_ts"][1]["cg_ns_per_day"])


def test_real_stages_train_and_run_a_size_with_its_network(tmp_path, rng):
    """The real training and MD stages on a sized model: its network and cutoff, its name and
    directories, and the speed its run records."""
    import torch
    import yaml
    from helpers import lj_force_frames

    from thermocg.config import Config, from_dict
    from thermocg.dataset import write_frames
    from thermocg.frames import StatePoint
    from thermocg.potentials.base import load_potential
    from thermocg.potentials.lj import LennardJones
    from thermocg.rundir import RunDir
    from thermocg.train import TrainWarning

    label, run_dir = "T120_rho0.5", tmp_path / "run"
    lj = LennardJones(("X",), epsilon_kcal_mol=0.2, sigma_A=3.4, cutoff_A=8.0)
    frames = lj_force_frames(lj, 10, rng=rng, n_particles=64, state=StatePoint(120.0, density_g_cm3=0.5))
    write_frames(frames, RunDir(run_dir).cg_dataset(label), kind="cg")
    config = from_dict(Config, {
        "run_dir": str(run_dir), "states": [{"temperature_K": 120.0, "density_g_cm3": 0.5}],
        "train": {"n_features": 4, "n_sensitivities": 4, "n_atom_layers": 1, "max_epochs": 1, "progress": False},
        "simulate": {"duration_ps": 0.04, "timestep_fs": 2.0, "save_interval_fs": 20.0, "thermo_interval_fs": 20.0,
                     "device": "cpu", "min_distance_A": 0.0},
        "study": {"families": ["hipnn_ts"], "pooled": {}, "progress": False,
                  "network_sizes": {"tiny": {"n_features": 6, "n_sensitivities": 3, "cutoff_A": 4.0}}},
    })
    model = next(m for m in st.plan_models(config) if m.size == "tiny")
    with pytest.warns(TrainWarning, match="stopped at max_epochs"):  # one epoch
        trained = st.stages.train_model(config, run_dir, model)
    assert trained.name == "hipnn_ts.tiny-T120_rho0.5" and trained.cutoff_A == 4.0
    assert Path(trained.model_path).parent == RunDir(run_dir).model(model.name)
    resolved = yaml.safe_load((Path(trained.model_path).parent / "resolved.yaml").read_text())["config"]["train"]
    assert (resolved["n_features"], resolved["n_sensitivities"], resolved["n_atom_layers"]) == (6, 3, 1)
    assert trained.n_parameters == sum(p.numel() for p in load_potential(trained.model_path).parameters())
    md = st.stages.simulate_model(config, run_dir, model, trained, label)
    assert md.out_dir == RunDir(run_dir).md(model.name, label) and md.n_steps == 20
    assert md.n_threads == torch.get_num_threads() and md.steps_per_s == pytest.approx(md.n_steps / md.wall_s)
    assert json.loads((md.out_dir / "summary.json").read_text())["n_threads"] == md.n_threads

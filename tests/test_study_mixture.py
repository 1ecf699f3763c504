"""The study of a two-type mixture: composition as a state variable, errors per type pair, per centre
bead type and per bead type, and the report of them.

The stand-in stages below make a methanol-water study at x(methanol) = 0.25, 0.5 and 0.75 whose
errors are known exactly: a model trained at mole fraction x_m (a pooled model: the mean of its
states') and tested at x_s has, for the type pair p, the RDF error

    PAIR_BASE[family][p] + PAIR_SLOPE[family][p] * |x_m - x_s|

(the stand-in CG RDF is the AA one shifted by that much, and the study's own functions measure it),
an ADF error around the centre type t of ADF_BASE[family][t] + ADF_SLOPE * |x_m - x_s| (the CG
angle distribution is a known mixture of the AA one and a step), a D ratio per type D_RATIO[family]
and a force RMSE per type 3 + |dx| (methanol) and 2 + |dx| (water). The real stages on a tiny mixture
run in ``test_real_tiny_mixture_study_end_to_end`` (slow).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from thermocg import study as st
from thermocg.analysis.adf import ADFResult, adf_error
from thermocg.analysis.rdf import RDFResult, rdf_error
from thermocg.config import Config, from_dict
from thermocg.frames import Frames
from thermocg.md import MDRunSummary
from thermocg.model_summary import ModelSummary
from thermocg.rundir import RunDir
from thermocg.study.metrics import Structure, structure_errors
from thermocg.study.per_type import composition_distance, per_type_errors

M, W = "methanol_trappe", "water_spce"
MM, MW, WW = f"{M}-{M}", f"{M}-{W}", f"{W}-{W}"
PAIR_BASE = {"hipnn_ts": {MM: 0.010, MW: 0.020, WW: 0.010}, "mscg": {MM: 0.012, MW: 0.040, WW: 0.030}}
PAIR_SLOPE = {"hipnn_ts": {MM: 0.02, MW: 0.04, WW: 0.02}, "mscg": {MM: 0.02, MW: 0.16, WW: 0.08}}
ADF_BASE = {"hipnn_ts": {M: 0.05, W: 0.04}, "mscg": {M: 0.20, W: 0.10}}
ADF_SLOPE = 0.1
D_RATIO = {"hipnn_ts": {M: 2.0, W: 2.0}, "mscg": {M: 3.0, W: 4.0}}
D_AA = {M: 1e-4, W: 2e-4}
#: the AA noise floors of every state: per pair, per centre type, and the headline ones
PAIR_FLOOR = {MM: 0.02, MW: 0.01, WW: 0.015}
CENTRE_FLOOR = {M: 0.03, W: 0.02}
STATES = ["T298_rho0.938_x0.25", "T298_rho0.886_x0.5", "T298_rho0.836_x0.75"]


def _x(label: str) -> float:
    return float(label.split("_x")[1])


# ---------------------------------------------------------------------------- stand-in stages

def _rdf(shifts: dict[str, float] | None = None) -> RDFResult:
    """Three pair RDFs on 100 bins over [0, 10] A, each a peak (at a pair-specific r) plus ``shifts``."""
    edges = np.linspace(0.0, 10.0, 101)
    r = 0.5 * (edges[1:] + edges[:-1])
    centres = {MM: 4.4, MW: 3.1, WW: 2.8}
    g = {pair: 1 + 2 * np.exp(-((r - c) / 0.3) ** 2) + (shifts or {}).get(pair, 0.0) for pair, c in centres.items()}
    return RDFResult(r_A=r, edges_A=edges, g=g, counts={}, n_frames=10, n_per_type={M: 4, W: 4})


def _adf(weights: dict[str, float] | None = None) -> ADFResult:
    """Uniform angle distributions around each centre type; a weight w moves w of the probability
    onto [0, 90) degrees, which makes the integral |p - p_uniform| exactly w."""
    edges = np.linspace(0.0, 180.0, 91)
    theta = 0.5 * (edges[1:] + edges[:-1])
    uniform = np.full(90, 1 / 180)
    step = np.where(theta < 90, 1 / 90, 0.0)
    weights = weights or {}
    p = {key: (1 - weights.get(key, 0.0)) * uniform + weights.get(key, 0.0) * step for key in ("all", M, W)}
    return ADFResult(angle_deg=theta, edges_deg=edges, p=p, n_angles={"all": 200, M: 100, W: 100}, cutoff_A=3.7,
                     n_frames=10)


def mix_allatom(config, run_dir, label):
    d = RunDir(run_dir).allatom(label)
    d.mkdir(parents=True, exist_ok=True)
    (d / "traj.h5md").write_text("stand-in")
    return st.AllAtomResult(label, d / "traj.h5md", ns_per_day=5.0)


def mix_map(config, run_dir, label):
    """A CG dataset of 4 methanol and 4 water beads (what the force evaluation reads)."""
    from thermocg.dataset import write_frames

    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 12, (4, 8, 3))
    frames = Frames(positions=pos, box=np.eye(3) * 12, types=np.repeat([0, 1], 4), type_names=(M, W),
                    masses=np.repeat([32.04, 18.02], 4), forces=rng.normal(size=pos.shape))
    write_frames(frames, RunDir(run_dir).cg_dataset(label), kind="cg")
    return st.MapResult(label, RunDir(run_dir).cg_dataset(label))


def mix_reference(config, run_dir, label):
    return st.ReferenceResult(rdf=_rdf(), adf=_adf(), adf_cutoff_A=3.7, diffusion_A2_fs=1.5e-4,
                              noise={"rdf_error": 0.015, "adf_error": 0.025}, n_frames=10, n_beads=8,
                              density_g_cm3=0.9, diffusion_per_type_A2_fs=dict(D_AA),
                              noise_per_type={"rdf_pair_errors": dict(PAIR_FLOOR),
                                              "adf_centre_errors": dict(CENTRE_FLOOR)})


def mix_train(config, run_dir, model):
    from thermocg.potentials.base import save_potential
    from thermocg.potentials.lj import LennardJones

    path = RunDir(run_dir).model(model.name) / "model.safetensors"
    save_potential(LennardJones((M, W), epsilon_kcal_mol=0.2, sigma_A=3.5, cutoff_A=5.0), path)
    return ModelSummary(family=model.family, name=model.name, model_path=path, train_states=model.train_states,
                        wall_s=0.1, n_epochs=None, best_epoch=None, stopped_at_max_epochs=False,
                        test_force_rmse_kcal_mol_A=None, test_force_mae_kcal_mol_A=None, test_r2=None, cutoff_A=5.0)


def mix_simulate(config, run_dir, model, trained, label):
    d = RunDir(run_dir).md(model.name, label)
    d.mkdir(parents=True, exist_ok=True)
    (d / "traj.h5md").write_text("stand-in")
    return MDRunSummary(model=model.name, model_file=str(trained.model_path), state=label, out_dir=d,
                        trajectory=d / "traj.h5md", ns_per_day=30.0, blowup=None, simulated_ps=1.0, n_steps=250,
                        mean_temperature_K=298.0, seed=config.seed, wall_s=0.1)


def distance(model: st.ModelSpec, label: str) -> float:
    return abs(np.mean([_x(s) for s in model.train_states]) - _x(label))


def mix_evaluate(config, run_dir, model, trained, label, md, reference):
    """The CG structure of the known errors, measured with the study's own error functions."""
    dx = distance(model, label)
    f = model.family
    rdf = _rdf({pair: PAIR_BASE[f][pair] + PAIR_SLOPE[f][pair] * dx for pair in PAIR_BASE[f]})
    weights = {t: ADF_BASE[f][t] + ADF_SLOPE * dx for t in (M, W)}
    adf = _adf({**weights, "all": float(np.mean(list(weights.values())))})
    d_types = {t: D_RATIO[f][t] * D_AA[t] for t in (M, W)}
    structure = Structure(rdf=rdf, adf=adf, adf_cutoff_A=3.7, diffusion_A2_fs=float(np.mean(list(d_types.values()))),
                          diffusion_per_type_A2_fs=d_types)
    per_type = {t: {"rmse": base + dx} for t, base in ((M, 3.0), (W, 2.0))}
    force = {"rmse": 2.5 + dx, "per_type": per_type, "rmse_halves": [2.45 + dx, 2.55 + dx],
             "per_type_rmse_halves": {t: [v["rmse"] - 0.05, v["rmse"] + 0.05] for t, v in per_type.items()}}
    return st.Evaluation(force=force, parity=np.array([[1.0, 1.1]]), ns_per_day=md.ns_per_day, rdf=rdf, adf=adf,
                         diffusion_A2_fs=structure.diffusion_A2_fs, diffusion_per_type_A2_fs=d_types,
                         **structure_errors(structure, reference), **per_type_errors(structure, reference))


MIX_STAGES = st.Stages(allatom=mix_allatom, map=mix_map, reference=mix_reference, train=mix_train,
                       simulate=mix_simulate, evaluate=mix_evaluate)


def mixture_config(run_dir: Path, **study) -> Config:
    return from_dict(Config, {
        "run_dir": str(run_dir),
        "system": {"molecules": [{"molecule": M, "n": 100}, {"molecule": W, "n": 100}]},
        "states": [{"temperature_K": 298.0, "density_g_cm3": rho, "mole_fractions": {M: x}}
                   for x, rho in ((0.25, 0.938), (0.5, 0.886), (0.75, 0.836))],
        "pair": {"cutoff_A": 8.0},
        "study": {"progress": False, "pooled": {"all": [], "ends": [STATES[0], STATES[2]]}, **study},
    })


@pytest.fixture(scope="module")
def mixture_study(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mixture") / "run"
    out = st.run_study(mixture_config(run_dir), run_dir, stages=MIX_STAGES)
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    return run_dir, out, summary


# ---------------------------------------------------------------------------- per-type errors

def test_per_type_errors_known_answers():
    ref = Structure(rdf=_rdf(), adf=_adf(), adf_cutoff_A=3.7, diffusion_A2_fs=1.5e-4, diffusion_per_type_A2_fs=D_AA)
    cg = Structure(rdf=_rdf({MM: 0.1, MW: -0.3}), adf=_adf({M: 0.4, W: 0.1}), adf_cutoff_A=3.7, diffusion_A2_fs=3e-4,
                   diffusion_per_type_A2_fs={M: 5e-4, W: 2e-4})
    errors = per_type_errors(cg, ref)
    assert errors["rdf_pair_errors"] == pytest.approx({MM: 0.1, MW: 0.3, WW: 0.0}, abs=1e-12)
    # the study's RDF error stays the mean over the pairs
    assert rdf_error(cg.rdf, ref.rdf) == pytest.approx(np.mean(list(errors["rdf_pair_errors"].values())))
    assert errors["adf_centre_errors"] == pytest.approx({M: 0.4, W: 0.1}, abs=1e-12)
    assert errors["adf_centre_errors"][M] == adf_error(cg.adf, ref.adf, key=M)
    assert errors["d_ratio_per_type"] == pytest.approx({M: 5.0, W: 1.0})
    # a centre type without angles on either side has no ADF error; a D unknown gives no ratio
    no_water = _adf({M: 0.4})
    no_water.n_angles[W] = 0
    cg_no_water = Structure(rdf=cg.rdf, adf=no_water, adf_cutoff_A=3.7, diffusion_A2_fs=None)
    errors = per_type_errors(cg_no_water, ref)
    assert set(errors["adf_centre_errors"]) == {M} and errors["d_ratio_per_type"] == {}


def test_typed_results_round_trip_the_per_type_fields():
    ref = mix_reference(None, None, STATES[0])
    back = st.ReferenceResult.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert back.diffusion_per_type_A2_fs == D_AA and back.noise_per_type["rdf_pair_errors"] == PAIR_FLOOR
    model = st.ModelSpec("mscg", STATES[0], (STATES[0],))
    md = MDRunSummary(model=model.name, model_file="m", state=STATES[2], out_dir=Path("."), trajectory=Path("t"),
                      ns_per_day=1.0, blowup=None, simulated_ps=1.0, n_steps=1, mean_temperature_K=298.0, seed=1,
                      wall_s=0.1)
    ev = mix_evaluate(None, None, model, None, STATES[2], md, ref)
    back = st.Evaluation.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back.rdf_pair_errors == pytest.approx(ev.rdf_pair_errors)
    assert back.adf_centre_errors == pytest.approx(ev.adf_centre_errors)
    assert back.d_ratio_per_type == pytest.approx({M: 3.0, W: 4.0})
    # results written before the per-type fields existed still read (as None)
    old = {k: v for k, v in ev.to_dict().items() if k not in ("rdf_pair_errors", "adf_centre_errors",
                                                               "diffusion_per_type_A2_fs", "d_ratio_per_type")}
    assert st.Evaluation.from_dict(old).rdf_pair_errors is None


def test_composition_distance():
    assert composition_distance({M: 0.25, W: 0.75}, {M: 0.75, W: 0.25}) == pytest.approx(0.5)
    assert composition_distance({"a": 0.2, "b": 0.3, "c": 0.5}, {"a": 0.2, "b": 0.5, "c": 0.3}) == pytest.approx(0.2)
    assert math.isnan(composition_distance(None, {M: 1.0}))


# ---------------------------------------------------------------------------- the study

def expected_pair_error(family: str, pair: str, train_states: tuple[str, ...], label: str) -> float:
    dx = abs(np.mean([_x(s) for s in train_states]) - _x(label))
    return PAIR_BASE[family][pair] + PAIR_SLOPE[family][pair] * dx


def test_compositions_are_rows_and_columns_of_the_matrices(mixture_study):
    run_dir, out, summary = mixture_study
    assert not out.failed
    assert list(summary["states"]) == STATES
    assert summary["states"][STATES[0]]["mole_fractions"] == {M: 0.25, W: 0.75}
    rows = summary["matrices"]["rdf_error"]["mscg"]
    assert list(rows) == STATES + ["all", "ends"] and all(list(r) == STATES for r in rows.values())
    for model in st.plan_models(mixture_config(run_dir)):
        for label in STATES:
            pairs = [expected_pair_error(model.family, p, model.train_states, label) for p in (MM, MW, WW)]
            # the headline RDF error is the mean over the pairs, each pair's in the per-type matrices
            assert summary["matrices"]["rdf_error"][model.family][model.train_set][label] == pytest.approx(np.mean(pairs))
            for pair, value in zip((MM, MW, WW), pairs):
                cell = summary["per_type"]["matrices"]["rdf_pair_error"][pair][model.family][model.train_set][label]
                assert cell == pytest.approx(value)
                assert summary["evaluations"][model.name][label]["rdf_pair_errors"][pair] == pytest.approx(value)
            dx = distance(model, label)
            for t in (M, W):
                cell = summary["per_type"]["matrices"]["adf_centre_error"][t][model.family][model.train_set][label]
                assert cell == pytest.approx(ADF_BASE[model.family][t] + ADF_SLOPE * dx)
                assert summary["per_type"]["matrices"]["d_ratio"][t][model.family][model.train_set][label] == \
                    pytest.approx(D_RATIO[model.family][t])
            force = summary["per_type"]["matrices"]["force_rmse"]
            assert force[M][model.family][model.train_set][label] == pytest.approx(3.0 + dx)
            assert force[W][model.family][model.train_set][label] == pytest.approx(2.0 + dx)


def test_per_type_means_and_their_noise_floors(mixture_study):
    _, _, summary = mixture_study
    per_type = summary["per_type"]
    assert per_type["types"] == [M, W] and per_type["pairs"] == [MM, MW, WW]
    assert per_type["noise"]["rdf_pair_error"][MW] == {s: 0.01 for s in STATES}
    means = per_type["means"]["rdf_pair_error"]
    # away from home, the single-state models are on average 1/3 away in x (6 entries: 4 x 0.25, 2 x 0.5)
    assert means[MW]["hipnn_ts"]["single_away"]["mean"] == pytest.approx(0.02 + 0.04 / 3)
    assert means[MW]["mscg"]["single_away"]["mean"] == pytest.approx(0.04 + 0.16 / 3)
    assert means[MW]["mscg"]["single_at_training_state"]["mean"] == pytest.approx(0.04)
    assert means[MW]["mscg"]["single_away"]["noise_floor"] == pytest.approx(0.01)
    # pooled models (mean x = 0.5): 1/6 away on average over the three states
    assert means[WW]["mscg"]["pooled"]["ends"]["mean"] == pytest.approx(0.03 + 0.08 / 6)
    assert means[WW]["mscg"]["pooled"]["all"]["noise_floor"] == pytest.approx(0.015)
    # per-type force floors: the two halves of the evaluated frames differ by 0.1
    assert per_type["means"]["force_rmse"][M]["hipnn_ts"]["single_away"]["noise_floor"] == pytest.approx(0.1)
    # D ratios judged as |log ratio|
    assert per_type["means"]["d_ratio"][W]["mscg"]["single_away"]["mean"] == pytest.approx(math.log(4.0))


def test_errors_by_composition_distance(mixture_study):
    _, _, summary = mixture_study
    composition = summary["composition"]
    assert composition["compositions"][STATES[1]] == {M: 0.5, W: 0.5}
    rows = composition["by_distance"]["rdf_error"]["mscg"]
    assert [(r["delta_x"], r["delta_T_K"], r["n"]) for r in rows] == [(0.0, 0.0, 3), (0.25, 0.0, 4), (0.5, 0.0, 2)]
    base = np.mean(list(PAIR_BASE["mscg"].values()))
    slope = np.mean(list(PAIR_SLOPE["mscg"].values()))
    assert [r["mean"] for r in rows] == pytest.approx([base, base + 0.25 * slope, base + 0.5 * slope])
    assert all(r["noise_floor"] == pytest.approx(0.015) for r in rows)


def test_report_of_a_mixture_study(mixture_study):
    run_dir, _, summary = mixture_study
    text = (run_dir / "report" / "summary.md").read_text()
    # the states table gives each state's composition
    assert "x(methanol_trappe) = 0.25, x(water_spce) = 0.75" in text
    assert "## Per bead type" in text and "## Composition" in text
    # per-pair family comparisons against that pair's noise floor: the methanol pair is within it
    # (0.0167 vs 0.0187, floor 0.02), the cross pair is not (0.0333 vs 0.0933, floor 0.01)
    assert (f"RDF error of the pair {MM} away from the training state (single-state models, mean): HIP-NN-TS 0.0167 "
            "vs MS-CG 0.0187: indistinguishable (a gap of 0.002, within the noise floor 0.02)") in text
    assert (f"RDF error of the pair {MW} away from the training state (single-state models, mean): HIP-NN-TS 0.0333 "
            "vs MS-CG 0.0933: HIP-NN-TS is lower by 0.06, 6x the noise floor (0.01)") in text
    # composition: MS-CG's error grows beyond the noise floor, HIP-NN-TS's does not
    assert "MS-CG single-composition models, RDF error by composition distance" in text
    assert "at |dx| 0.5 the error is higher by 0.0433, 2.9x the noise floor (0.015)" in text
    assert ("HIP-NN-TS single-composition models, RDF error by composition distance: 0.0133 at |dx| 0, 0.02 at "
            "|dx| 0.25, 0.0267 at |dx| 0.5: the error at |dx| 0.5 is indistinguishable") in text
    figures = run_dir / "report" / "figures"
    for name in ("heatmap_per_type_rdf_pair_error.png", "heatmap_per_type_adf_centre_error.png",
                 f"rdf_{STATES[1]}_{MW}.png", f"adf_{STATES[0]}_{W}.png"):
        assert (figures / name).stat().st_size > 1000, name
    assert not (figures / f"rdf_{STATES[0]}.png").exists()  # one figure per pair instead
    # D per bead type: the AA value (1 and 2 x 1e-4 A^2/fs = 1 and 2 x 1e-5 cm^2/s) and the ratios' range
    assert "| T298_rho0.886_x0.5 | 1 | 2-3 | 2 | 2-4 |" in text
    html = (run_dir / "report" / "index.html").read_text()
    assert "<h2>Per bead type</h2>" in html and f"rdf_{STATES[2]}_{WW}.png" in html
    with open(run_dir / "analysis" / "study" / "per_type.csv") as f:
        rows = list(csv.DictReader(f))
    # (3 pairs + 2 centre types + 2 force types + 2 D types) x 2 families x 5 models x 3 states
    assert len(rows) == 9 * 2 * 5 * 3
    row = next(r for r in rows if r["metric"] == "rdf_pair_error" and r["key"] == MW and r["family"] == "mscg"
               and r["train_set"] == STATES[0] and r["test_state"] == STATES[2])
    assert float(row["value"]) == pytest.approx(0.04 + 0.16 * 0.5) and float(row["noise_floor"]) == 0.01


def test_train_at_one_or_two_compositions_and_test_at_the_others(tmp_path):
    """One single-composition model (x = 0.25) and one pooled over the two ends, each run at all three."""
    run_dir = tmp_path / "run"
    config = mixture_config(run_dir, single_states=[STATES[0]], pooled={"ends": [STATES[0], STATES[2]]})
    assert [m.name for m in st.plan_models(config)] == [
        f"hipnn_ts-{STATES[0]}", "hipnn_ts-ends", f"mscg-{STATES[0]}", "mscg-ends"]
    st.run_study(config, run_dir, stages=MIX_STAGES)
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert list(summary["matrices"]["rdf_error"]["hipnn_ts"]) == [STATES[0], "ends"]
    assert list(summary["matrices"]["rdf_error"]["hipnn_ts"]["ends"]) == STATES
    rows = summary["composition"]["by_distance"]["adf_error"]["hipnn_ts"]
    assert [(r["delta_x"], r["n"]) for r in rows] == [(0.0, 1), (0.25, 1), (0.5, 1)]
    pooled = summary["comparison"]["pooled_vs_single"]["mscg"]["ends"]
    # the ends model is at x = 0.5 on average: RDF error at x = 0.5 and 0.75 (where the single model is away)
    expected = np.mean([np.mean([expected_pair_error("mscg", p, (STATES[0], STATES[2]), s) for p in (MM, MW, WW)])
                        for s in STATES[1:]])
    assert pooled["pooled_rdf_error"] == pytest.approx(expected)


def test_a_one_component_study_reports_no_per_type_sections(tmp_path):
    from test_study import STAND_INS, tiny_config

    run_dir = tmp_path / "run"
    st.run_study(tiny_config(run_dir), run_dir, stages=STAND_INS)
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    assert summary["per_type"]["pairs"] == ["MeOH-MeOH"] and summary["composition"] is None
    text = (run_dir / "report" / "summary.md").read_text()
    assert "## Per bead type" not in text and "## Composition" not in text and "composition" not in text.lower()
    assert (run_dir / "report" / "figures" / "rdf_T300_rho0.75.png").exists()


# ---------------------------------------------------------------------------- the real stages

TINY_MIXTURE = {
    "seed": 11,
    "system": {"molecules": [{"molecule": M, "n": 20}, {"molecule": W, "n": 20}]},
    "states": [{"temperature_K": 298.0, "density_g_cm3": 0.938, "mole_fractions": {M: 0.25}},
               {"temperature_K": 298.0, "density_g_cm3": 0.836, "mole_fractions": {M: 0.75}}],
    "generate": {"equilibration_ps": 0.5, "production_ps": 2.0, "save_interval_fs": 50, "thermo_interval_fs": 100,
                 "n_threads": 1, "save_velocities": False},
    "rdf": {"bin_width_A": 0.1},
    "train": {"n_features": 8, "n_sensitivities": 6, "n_atom_layers": 1, "max_epochs": 2, "batch_size": 4,
              "max_batch_size": 8, "patience_epochs": 1, "early_stopping_epochs": 2},
    "pair": {"cutoff_A": 5.0, "spacing_A": 0.25, "lammps_table_points": 0, "min_pairs_per_interval": 5},
    "simulate": {"duration_ps": 1.0, "timestep_fs": 4.0, "save_interval_fs": 20, "thermo_interval_fs": 20,
                 "device": "cpu"},
    "study": {"pooled": {"both": []}, "single_states": ["T298_rho0.938_x0.25"], "force_eval_frames": 10,
              "parity_samples": 200, "progress": False},
}


@pytest.mark.slow
def test_real_tiny_mixture_study_end_to_end(tmp_path):
    """OpenMM -> mapping -> HIP-NN-TS and MS-CG with two bead types -> CG MD -> per-type analysis ->
    report: 20 methanol + 20 water molecules at x = 0.25 and 0.75."""
    import warnings

    run_dir = tmp_path / "run"
    config = from_dict(Config, {**TINY_MIXTURE, "run_dir": str(run_dir)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the force fields' cutoffs do not fit a 40-molecule box
        out = st.run_study(config, run_dir)
    assert not out.failed
    summary = json.loads((run_dir / "analysis" / "study" / "summary.json").read_text())
    labels = ["T298_rho0.938_x0.25", "T298_rho0.836_x0.75"]
    assert list(summary["states"]) == labels
    per_type = summary["per_type"]
    assert per_type["types"] == [M, W] and per_type["pairs"] == [MM, MW, WW]
    for label in labels:
        ref = summary["references"][label]
        assert ref["rdf"]["n_per_type"] == ({M: 10, W: 30} if label.endswith("0.25") else {M: 30, W: 10})
        assert set(ref["noise_per_type"]["rdf_pair_errors"]) == {MM, MW, WW}
        assert set(ref["diffusion_per_type_A2_fs"]) == {M, W} and all(d > 0 for d in ref["diffusion_per_type_A2_fs"].values())
    for name, evaluations in summary["evaluations"].items():
        for label, ev in evaluations.items():
            assert ev["blowup"] is None, (name, label)
            # one definition: the headline RDF error is the mean of the pairs' errors
            assert ev["rdf_error"] == pytest.approx(np.mean(list(ev["rdf_pair_errors"].values())))
            assert set(ev["rdf_pair_errors"]) == {MM, MW, WW} and set(ev["adf_centre_errors"]) == {M, W}
            assert set(ev["force"]["per_type"]) == {M, W} and set(ev["d_ratio_per_type"]) == {M, W}
            # the per-type force RMSEs bracket the overall one (it is their component-weighted mean square)
            per = [ev["force"]["per_type"][t]["rmse"] for t in (M, W)]
            assert min(per) - 1e-9 <= ev["force"]["rmse"] <= max(per) + 1e-9
    for family in ("hipnn_ts", "mscg"):
        for pair in (MM, MW, WW):
            cells = per_type["matrices"]["rdf_pair_error"][pair][family]
            assert all(0 <= v < 2 for row in cells.values() for v in row.values())
    text = (run_dir / "report" / "summary.md").read_text()
    assert "x(methanol_trappe) = 0.75, x(water_spce) = 0.25" in text and "## Per bead type" in text
    assert (run_dir / "report" / "figures" / f"rdf_{labels[1]}_{MW}.png").exists()
    assert st.run_study(config, run_dir).ran == []

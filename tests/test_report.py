"""The report from a hand-made study summary with known numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thermocg import report
from thermocg.analysis.adf import ADFResult
from thermocg.analysis.rdf import RDFResult
from thermocg.study import compare_families, verdicts
from thermocg.study.metrics import state_tolerances

STATES = ["T280_rho0.8", "T340_rho0.75"]


def summary_with(errors: dict[str, dict[str, dict[str, float]]], *, blowup: tuple[str, str] | None = None) -> dict:
    """A summary whose RDF error matrix is ``errors[family][train_set][state]``; ADF error = RDF/2.

    References and evaluations hold the JSON of typed results (RDFResult, ADFResult), as the study's."""
    r_edges = np.linspace(0.0, 8.0, 81)
    r = 0.5 * (r_edges[1:] + r_edges[:-1])
    edges = np.linspace(0.0, 180.0, 46)
    theta = 0.5 * (edges[1:] + edges[:-1])

    def rdf(shift):
        return RDFResult(r_A=r, edges_A=r_edges, g={"M-M": 1 + shift + np.exp(-(r - 4) ** 2)}, counts={},
                         n_frames=1).to_dict()

    adf = ADFResult(angle_deg=theta, edges_deg=edges, p={"all": np.sin(np.radians(theta)) / 114.6},
                    n_angles={"all": 100}, cutoff_A=4.0, n_frames=1).to_dict()
    ref = {"rdf": rdf(0.0), "adf": adf, "diffusion_A2_fs": 1e-4}
    models, evaluations = [], {}
    matrices = {m: {} for m in ("force_rmse", "rdf_error", "adf_error", "d_ratio")}
    for family, table in errors.items():
        for metric in matrices:
            matrices[metric][family] = {}
        for train_set, row in table.items():
            name = f"{family}-{train_set}"
            train_states = STATES if train_set == "pooled" else [train_set]
            models.append({"name": name, "family": family, "train_set": train_set, "train_states": train_states,
                           "pooled": train_set == "pooled"})
            evaluations[name] = {}
            for s, err in row.items():
                failed = blowup == (name, s)
                ev = {"force": {"rmse": 4 + err}, "parity": [[1.0, 0.9], [-3.0, -2.5], [2.0, 2.2]],
                      "rdf": rdf(err), "adf": ref["adf"], "rdf_error": None if failed else err,
                      "adf_error": None if failed else err / 2, "d_ratio": 3.0, "ns_per_day": 50.0 if family == "mscg" else 10.0,
                      "blowup": "temperature above 5x" if failed else None}
                evaluations[name][s] = ev
                matrices["force_rmse"][family][train_set] = {**matrices["force_rmse"][family].get(train_set, {}), s: 4 + err}
                matrices["rdf_error"][family][train_set] = {**matrices["rdf_error"][family].get(train_set, {}),
                                                            s: math.nan if failed else err}
                matrices["adf_error"][family][train_set] = {**matrices["adf_error"][family].get(train_set, {}),
                                                            s: math.nan if failed else err / 2}
                matrices["d_ratio"][family][train_set] = {**matrices["d_ratio"][family].get(train_set, {}), s: 3.0}
    noise = {"T280_rho0.8": {"rdf_error": 0.01, "adf_error": 0.04}, "T340_rho0.75": {"rdf_error": 0.02, "adf_error": 0.06}}
    rule = {"noise_multiple": 2.0, "absolute": {"rdf_error": 0.05, "adf_error": 0.1}}
    summary = {
        "states": {s: {"temperature_K": float(s[1:4]), "density_g_cm3": 0.8} for s in STATES},
        "imported": ["T340_rho0.75"], "measured_density_g_cm3": {"T280_rho0.8": 0.8, "T340_rho0.75": 0.7861},
        "models": models, "families": list(errors),
        "tolerances": {**rule, "per_state": state_tolerances(rule, noise, STATES)},
        "references": {s: ref for s in STATES}, "aa_ns_per_day": {"T280_rho0.8": 2.0, "T340_rho0.75": None},
        "aa_speed_note": {"T280_rho0.8": "measured by the all-atom runner",
                          "T340_rho0.75": "no GROMACS log with a Performance line beside traj.trr (traj.log or md.log)"},
        "evaluations": evaluations, "matrices": matrices, "training": {}, "noise": noise, "failed": {},
        "stability": {"checks": {"check_interval_steps": 10, "max_temperature_factor": 5.0,
                                 "max_force_kcal_mol_A": 1000.0, "min_distance_A": 0.5},
                      "n_runs": sum(len(v) for v in evaluations.values()),
                      "unstable": {f"md/{blowup[0]}/{blowup[1]}": "temperature above 5x"} if blowup else {}},
        "friction": {"mode": "simulate", "simulate_friction_per_ps": 1.0, "integrator": "langevin"},
    }
    summary["verdicts"] = verdicts(summary)
    summary["comparison"] = compare_families(summary)
    return summary


ERRORS = {
    # MS-CG better at home, HIP-NN-TS better away: the verdict must follow "away"
    "hipnn_ts": {"T280_rho0.8": {"T280_rho0.8": 0.04, "T340_rho0.75": 0.06},
                 "T340_rho0.75": {"T280_rho0.8": 0.08, "T340_rho0.75": 0.02},
                 "pooled": {"T280_rho0.8": 0.03, "T340_rho0.75": 0.03}},
    "mscg": {"T280_rho0.8": {"T280_rho0.8": 0.02, "T340_rho0.75": 0.2},
             "T340_rho0.75": {"T280_rho0.8": 0.1, "T340_rho0.75": 0.01},
             "pooled": {"T280_rho0.8": 0.2, "T340_rho0.75": 0.2}},
}


def test_verdict_lines_known_numbers():
    """Known matrices and noise floors give known sentences (tolerances here absolute: 0.05 and 0.1)."""
    text = "\n".join(report.verdict_lines(summary_with(ERRORS)))
    # away from home: HIP-NN-TS (0.06 + 0.08) / 2 = 0.07, MS-CG (0.2 + 0.1) / 2 = 0.15; the noise floor of the
    # comparison is the mean of its entries' states' floors, (0.01 + 0.02) / 2 = 0.015: a gap of 5.3 floors
    assert "Verdict (RDF): across the study's states, HIP-NN-TS transfers better: mean RDF error away from the " \
           "training state 0.07 vs 0.15, a gap of 0.08, 5.3x the noise floor (0.015)." in text
    # ADF away: 0.035 vs 0.075, a gap of 0.04 within the ADF floor (0.04 + 0.06) / 2 = 0.05
    assert "Verdict (ADF): neither family transfers better: mean ADF error away from the training state HIP-NN-TS " \
           "0.035 vs MS-CG 0.075, a gap of 0.04 within the noise floor (0.05): indistinguishable." in text
    # at home: HIP-NN-TS 0.03, MS-CG 0.015: a gap of 0.015, not above the floor 0.015
    assert "RDF error at the training state (single-state models, mean): HIP-NN-TS 0.03 vs MS-CG 0.015: " \
           "indistinguishable (a gap of 0.015, within the noise floor 0.015)." in text
    assert "RDF error away from the training state (single-state models, mean): HIP-NN-TS 0.07 vs MS-CG 0.15: " \
           "HIP-NN-TS is lower by 0.08, 5.3x the noise floor (0.015)." in text
    # force RMSE halves are not in this summary: the gap is stated without a verdict on it
    assert "Force RMSE away from the training state (single-state models, mean): HIP-NN-TS 4.07 vs MS-CG 4.15: " \
           "HIP-NN-TS is lower by 0.08 (no noise floor known to judge the gap against)." in text
    assert "HIP-NN-TS pooled model 'pooled': mean RDF error 0.03 vs 0.07 for single-state models away from their " \
           "training state: the pooled model is lower by 0.04, 2.7x the noise floor (0.015)." in text
    assert "HIP-NN-TS pooled model 'pooled': mean ADF error 0.015 vs 0.035 for single-state models away from their " \
           "training state: indistinguishable (a gap of 0.02, within the noise floor 0.05)." in text
    assert "MS-CG pooled model 'pooled': mean RDF error 0.2 vs 0.15 for single-state models away from their " \
           "training state: the pooled model is higher by 0.05, 3.3x the noise floor (0.015)." in text
    assert "Noise floor (the AA data, first half vs second half): T280_rho0.8: RDF 0.01, ADF 0.04; T340_rho0.75: " \
           "RDF 0.02, ADF 0.06." in text
    # tolerance 0.05 on RDF (ADF = RDF/2 <= 0.1 whenever RDF passes); within the noise floor at T340 only
    assert "hipnn_ts-T280_rho0.8 (trained on T280_rho0.8): reproduces the AA structure at 1 of 2 states " \
           "(T280_rho0.8)." in text
    assert "hipnn_ts-T340_rho0.75 (trained on T340_rho0.75): reproduces the AA structure at 1 of 2 states " \
           "(T340_rho0.75); indistinguishable from the AA data (both errors within the noise floor) at T340_rho0.75." \
           in text
    assert "hipnn_ts-pooled (trained on T280_rho0.8, T340_rho0.75): reproduces the AA structure at 2 of 2 states" in text
    assert "mscg-pooled (trained on T280_rho0.8, T340_rho0.75): reproduces the AA structure at 0 of 2 states (none)." \
           in text
    assert "Stability: all 12 evaluated CG runs passed the blow-up checks (every 10 steps and at every saved frame: " \
           "temperature below 5x the target, forces below 1000 kcal/mol/A, no two beads closer than 0.5 A)." in text


def test_force_comparison_weighs_the_rmse_of_the_two_halves():
    """With the RMSEs of each half of the frames, the force comparison has a noise floor: |half 1 - half 2|."""
    summary = summary_with(ERRORS)
    for name, evs in summary["evaluations"].items():
        for ev in evs.values():
            ev["force"]["rmse_halves"] = [ev["force"]["rmse"] - 0.05, ev["force"]["rmse"] + 0.05]  # floor 0.1
    summary["comparison"] = compare_families(summary)
    text = "\n".join(report.verdict_lines(summary))
    assert "Force RMSE away from the training state (single-state models, mean): HIP-NN-TS 4.07 vs MS-CG 4.15: " \
           "indistinguishable (a gap of 0.08, within the noise floor 0.1)." in text


def test_tolerances_as_multiples_of_the_noise_floor():
    summary = summary_with(ERRORS)
    rule = {"noise_multiple": 3.0, "absolute": {"rdf_error": None, "adf_error": None}}
    summary["tolerances"] = {**rule, "per_state": state_tolerances(rule, summary["noise"], STATES)}
    assert summary["tolerances"]["per_state"]["T280_rho0.8"] == pytest.approx({"rdf_error": 0.03, "adf_error": 0.12})
    assert summary["tolerances"]["per_state"]["T340_rho0.75"] == pytest.approx({"rdf_error": 0.06, "adf_error": 0.18})
    summary["verdicts"] = verdicts(summary)
    # hipnn_ts-T280: 0.04 at T280 > 0.03; 0.06 at T340 <= 0.06
    assert summary["verdicts"]["hipnn_ts-T280_rho0.8"]["reproduces_at"] == ["T340_rho0.75"]
    text = "\n".join(report.verdict_lines(summary))
    assert "Tolerance: a model reproduces the AA structure at a state when its RDF error is at most 3x that state's " \
           "noise floor and its ADF error is at most 3x that state's noise floor (T280_rho0.8: RDF 0.03, ADF 0.12; " \
           "T340_rho0.75: RDF 0.06, ADF 0.18)." in text
    # no noise floor and no absolute tolerance: not judged
    del summary["noise"]["T340_rho0.75"]
    summary["tolerances"]["per_state"] = state_tolerances(rule, summary["noise"], STATES)
    summary["verdicts"] = verdicts(summary)
    assert summary["verdicts"]["hipnn_ts-T280_rho0.8"]["unjudged"] == ["T340_rho0.75"]
    assert "reproduces the AA structure at 0 of 1 evaluated state (none); not judged at T340_rho0.75 (no noise floor " \
           "and no absolute tolerance)" in "\n".join(report.verdict_lines(summary))


def test_blown_up_run_is_not_a_match_and_is_reported(tmp_path):
    summary = summary_with(ERRORS, blowup=("hipnn_ts-T280_rho0.8", "T280_rho0.8"))
    assert summary["verdicts"]["hipnn_ts-T280_rho0.8"]["reproduces_at"] == []
    text = "\n".join(report.verdict_lines(summary))
    assert "Unstable CG runs (stopped by the blow-up checks; no structure, counted as no match): 1 of 12: " \
           "md/hipnn_ts-T280_rho0.8/T280_rho0.8 (temperature above 5x)." in text
    assert "Stability: all" not in text


def test_failed_and_not_evaluated_models_are_named():
    summary = summary_with(ERRORS)
    del summary["evaluations"]["mscg-pooled"]
    del summary["evaluations"]["hipnn_ts-pooled"]["T340_rho0.75"]
    summary["failed"] = {"model/mscg-pooled": "RuntimeError: singular matrix",
                         "md/mscg-pooled/T280_rho0.8": "not run: model/mscg-pooled failed",
                         "md/hipnn_ts-pooled/T340_rho0.75": "ValueError: no frames"}
    summary["verdicts"] = verdicts(summary)
    text = "\n".join(report.verdict_lines(summary))
    assert "mscg-pooled (trained on T280_rho0.8, T340_rho0.75): not evaluated (model/mscg-pooled: RuntimeError: " \
           "singular matrix)." in text
    assert "0/2" not in text and "0 of 2 states (none)" not in text.split("mscg-pooled (trained")[1].split("\n")[0]
    assert "hipnn_ts-pooled (trained on T280_rho0.8, T340_rho0.75): reproduces the AA structure at 1 of 1 evaluated " \
           "state (T280_rho0.8); not evaluated at T340_rho0.75 (md/hipnn_ts-pooled/T340_rho0.75: ValueError: no " \
           "frames)." in text
    assert "Failed or not run (3 units): model/mscg-pooled: RuntimeError: singular matrix;" in text


def test_speed_rows_and_state_table():
    summary = summary_with(ERRORS)
    rows = report.speed_rows(summary)
    assert rows[0] == ("all-atom", "T280_rho0.8", 2.0, 1.0, "measured by the all-atom runner")
    assert rows[1][:2] == ("all-atom", "T340_rho0.75") and math.isnan(rows[1][2])
    assert rows[1][4].startswith("no GROMACS log")
    mscg = next(r for r in rows if r[0] == "mscg-pooled")
    assert mscg[2] == pytest.approx(50.0) and mscg[3] == pytest.approx(25.0)
    states = {r["state"]: r for r in report._state_rows(summary)}
    assert states["T340_rho0.75"]["AA data"] == "imported"
    assert states["T340_rho0.75"]["measured density (g/cm^3)"] == "0.7861"
    assert states["T340_rho0.75"]["AA ns/day"].startswith("n/a (no GROMACS log")


def test_write_report_files_and_links(tmp_path):
    index = report.write_report(summary_with(ERRORS), tmp_path / "report")
    html = index.read_text()
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*.png"))
    assert figures == sorted(
        [f"heatmap_{m}.png" for m in ("force_rmse", "rdf_error", "adf_error", "d_ratio")]
        + [f"{k}_{s}.png" for k in ("rdf", "adf") for s in STATES] + ["parity_hipnn_ts.png", "parity_mscg.png"])
    for name in figures:  # every figure is linked from the page, and is a real PNG
        assert f"figures/{name}" in html
        assert (tmp_path / "report" / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "class='headline'" in html and "HIP-NN-TS transfers better" in html
    assert "<th>measured density (g/cm^3)</th>" in html and "<td>0.7861</td>" in html
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| T340_rho0.75 | 0.08 | 0.02 |" in md  # the HIP-NN-TS RDF matrix row
    assert "| mscg-pooled | mean over states | 50 | 25 |  |" in md


def test_no_winner_within_the_noise_floor():
    summary = summary_with(ERRORS)
    summary["noise"] = {s: {"rdf_error": 0.2, "adf_error": 0.01} for s in STATES}
    summary["comparison"] = compare_families(summary)
    text = "\n".join(report.verdict_lines(summary))
    # RDF gap 0.08 within 0.2: indistinguishable; ADF gap 0.04 above 0.01: HIP-NN-TS
    assert "Verdict (RDF): neither family transfers better: mean RDF error away from the training state " \
           "HIP-NN-TS 0.07 vs MS-CG 0.15, a gap of 0.08 within the noise floor (0.2): indistinguishable." in text
    assert "Verdict (ADF): across the study's states, HIP-NN-TS transfers better: mean ADF error away from the " \
           "training state 0.035 vs 0.075, a gap of 0.04, 4x the noise floor (0.01)." in text


def test_epoch_cap_warning_next_to_the_learning_curve(tmp_path):
    """A training that stopped at max_epochs while improving: a finding, and a warning beside its curve
    (drawn from metrics.csv with plain tick labels)."""
    summary = summary_with(ERRORS)
    summary["training"] = {"hipnn_ts-pooled": {"name": "hipnn_ts-pooled", "n_epochs": 5, "best_epoch": 5,
                                               "stopped_at_max_epochs": True},
                           "hipnn_ts-T280_rho0.8": {"name": "hipnn_ts-T280_rho0.8", "n_epochs": 5, "best_epoch": 3,
                                                    "stopped_at_max_epochs": False}}
    run_dir = tmp_path / "run"
    for name in summary["training"]:
        model_dir = run_dir / "models" / name
        model_dir.mkdir(parents=True)
        rows = ["epoch,train_loss,val_loss,val_force_rmse_kcal_mol_A,val_force_mae_kcal_mol_A,batch_size,"
                "learning_rate,best,wall_s"]
        rows += [f"{e},{1.0 / e},{1.2 / e},{4 + 1.0 / e},{3.0},8,0.001,1,{e}" for e in range(1, 6)]
        (model_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    text = "\n".join(report.verdict_lines(summary))
    assert "Training of hipnn_ts-pooled stopped at train.max_epochs (5) while still improving (best epoch 5): its " \
           "errors would likely fall with more epochs." in text
    assert "Training of hipnn_ts-T280_rho0.8" not in text
    html = report.write_report(summary, tmp_path / "report", run_dir=run_dir).read_text()
    block = html.split("<p><b>hipnn_ts-pooled</b></p>")[1].split("<p><b>")[0]
    assert "class='warning'" in block and "learning_curve_hipnn_ts-pooled.png" in block
    assert "class='warning'" not in html.split("<p><b>hipnn_ts-T280_rho0.8</b></p>")[1].split("<p><b>")[0]
    assert (tmp_path / "report" / "figures" / "learning_curve_hipnn_ts-pooled.png").exists()
    assert report.read_learning_history(run_dir / "models" / "hipnn_ts-pooled" / "metrics.csv")[4]["epoch"] == 5.0


def test_plain_tick_labels_on_log_axes():
    fig, axes = report.new_figure(1, 1)
    ax = axes[0, 0]
    ax.plot([1, 2, 3], [0.3, 1.0, 4.0])
    report._plain_log_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in x and "$" not in x for x in labels)
    assert {"0.5", "1", "2"} <= set(labels)
    report.pyplot().close(fig)


def test_first_peak_window_known_answer():
    r = np.linspace(0.025, 9.975, 200)
    g = np.where(r < 3.0, 0.0, 1 + 1.5 * np.exp(-((r - 3.6) ** 2) / (2 * 0.2**2)) - 0.4 * np.exp(-((r - 4.6) ** 2) / 0.5))
    lo, hi = report.first_peak_window(r, g)
    # onset 3.0 A (g jumps from 0), g falls below 1 at about 4.1 A: the window holds the peak and the edge of the shell
    assert 2.8 < lo <= 3.0 and 4.1 < hi < 5.0
    assert report.first_peak_window(r, np.ones_like(r)) is None  # an ideal gas has no peak


def test_key_figures_and_their_ranges_over_runs():
    """The headline numbers of a study, and their ranges over runs at several seeds (the demo's claims)."""
    from thermocg.study.metrics import key_figures, ranges_over_runs

    first = key_figures(summary_with(ERRORS))
    assert first["hipnn_ts.rdf_error.single_away"] == pytest.approx(0.07)
    assert first["mscg.rdf_error.single_at_training_state"] == pytest.approx(0.015)
    assert first["hipnn_ts-pooled.rdf_error"] == pytest.approx(0.03) and first["mscg-pooled.adf_error"] == pytest.approx(0.1)
    assert first["noise.rdf_error"] == pytest.approx(0.015)
    assert first["hipnn_ts-pooled.states_within_tolerance"] == 2
    assert first["verdict.rdf_error"] == "HIP-NN-TS" and first["verdict.adf_error"] == "indistinguishable"
    other = {f: {t: {s: v * 2 for s, v in row.items()} for t, row in table.items()} for f, table in ERRORS.items()}
    second = key_figures(summary_with(other))
    ranges = ranges_over_runs({"seed 1": first, "seed 2": second})
    assert ranges["hipnn_ts.rdf_error.single_away"]["min"] == pytest.approx(0.07)
    assert ranges["hipnn_ts.rdf_error.single_away"]["max"] == pytest.approx(0.14)
    assert ranges["verdict.rdf_error"]["distinct"] == ["HIP-NN-TS"]
    assert ranges["verdict.adf_error"]["distinct"] == ["HIP-NN-TS", "indistinguishable"]


@pytest.mark.parametrize("kind", ["rdf", "adf"])
def test_overlay_legends_give_each_models_error(kind, tmp_path, monkeypatch):
    """The legend of the RDF/ADF overlay names each model's error at the state (the ADF's read "n/a"
    when a loop variable shadowed the figure's type key), and the whole-system title names no pair."""
    summary = summary_with(ERRORS)
    captured = {}
    monkeypatch.setattr(report, "finish_figure", lambda fig, path, **kw: captured.setdefault("fig", fig))
    assert report.overlay_figure(summary, "T340_rho0.75", kind, tmp_path / f"{kind}.png") is not None
    axes = captured["fig"].axes
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    divisor = 1 if kind == "rdf" else 2
    expected = {f"{train_set} ({report._fmt(row['T340_rho0.75'] / divisor, 2)})"
                for train_set, row in ERRORS["hipnn_ts"].items()}
    assert expected <= set(labels), labels
    assert not any("n/a" in label for label in labels)
    assert "pair" not in axes[0].get_title() and "around" not in axes[0].get_title()


def test_state_distances_known_answer_and_their_finding(tmp_path):
    """AA-vs-AA distances between states, in the study's own metrics: g(r) shifted by a constant c differs
    by exactly |c| in RDF error; the same ADF gives 0. The finding names the widest pair and the pairs
    closer than the noise floor; the Markdown report gets the matrix."""
    from types import SimpleNamespace

    from thermocg.study.metrics import state_distances

    r_edges = np.linspace(0.0, 8.0, 81)
    r = 0.5 * (r_edges[1:] + r_edges[:-1])
    edges = np.linspace(0.0, 180.0, 46)
    theta = 0.5 * (edges[1:] + edges[:-1])
    adf = ADFResult(angle_deg=theta, edges_deg=edges, p={"all": np.sin(np.radians(theta)) / 114.6},
                    n_angles={"all": 100}, cutoff_A=4.0, n_frames=1)
    shifts = {"T260": 0.0, "T300": 0.005, "T340": 0.03}
    refs = {s: SimpleNamespace(adf=adf, rdf=RDFResult(r_A=r, edges_A=r_edges, g={"M-M": 1 + c + np.exp(-(r - 4) ** 2)},
                                                       counts={}, n_frames=1)) for s, c in shifts.items()}
    distances = state_distances(refs)
    for a, ca in shifts.items():
        for b, cb in shifts.items():
            assert distances["rdf_error"][a][b] == pytest.approx(abs(ca - cb), abs=1e-12)
            assert distances["adf_error"][a][b] == pytest.approx(0.0, abs=1e-12)
    summary = summary_with(ERRORS)
    summary["states"] = {s: {"temperature_K": float(s[1:]), "density_g_cm3": 0.8} for s in shifts}
    summary["noise"] = {s: {"rdf_error": 0.01, "adf_error": 0.04} for s in shifts}
    summary["state_distances"] = distances
    line = report.state_distance_line(summary)
    assert "the widest pair, T260 against T340, differs by RDF 0.03 (3x the noise floor) and ADF 0 (0x)" in line
    assert "1 of 3 pairs differ by less than the noise floor in both (T260/T300)" in line
    rows = report.state_distance_rows(summary)
    assert [row["AA structure of \\ judged at"] for row in rows] == list(shifts)
    assert rows[0]["T340"] == "0.03 / 0 (3x / 0x)" and rows[1]["T300"] == "-"
    assert line in report.verdict_lines(summary)
    # in the Markdown report, with the states of the matrices
    study = summary_with(ERRORS)
    study["state_distances"] = state_distances(dict(zip(STATES, (refs["T260"], refs["T340"]))))
    text = report._markdown(study, "t", [], report._Figures(heatmaps={}, rdf={}, adf={}, parity={}, curves={}))
    assert "## How far apart the states are (AA against AA)" in text
    assert "| T280_rho0.8 | - | 0.03 / 0 (1.5x / 0x) |" in text  # T340_rho0.75's noise floor: RDF 0.02

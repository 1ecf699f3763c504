"""The report from a hand-made study summary with known numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thermocg import report
from thermocg.analysis.adf import ADFResult
from thermocg.analysis.rdf import RDFResult
from thermocg.study import compare_families, verdicts

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
    summary = {
        "states": {s: {"temperature_K": float(s[1:4]), "density_g_cm3": 0.8} for s in STATES},
        "models": models, "families": list(errors), "tolerances": {"rdf_error": 0.05, "adf_error": 0.1},
        "references": {s: ref for s in STATES}, "aa_ns_per_day": {s: 2.0 for s in STATES},
        "evaluations": evaluations, "matrices": matrices, "training": {},
        "noise": {"T280_rho0.8": {"rdf_error": 0.01, "adf_error": 0.04}, "T340_rho0.75": {"rdf_error": 0.02, "adf_error": 0.06}},
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
    lines = report.verdict_lines(summary_with(ERRORS))
    text = "\n".join(lines)
    # away from home: HIP-NN-TS (0.06 + 0.08) / 2 = 0.07, MS-CG (0.2 + 0.1) / 2 = 0.15
    assert "Verdict (RDF): across the study's states, HIP-NN-TS transfers better (mean RDF error away from the " \
           "training state 0.07 vs 0.15)" in text
    # at home: HIP-NN-TS 0.03, MS-CG 0.015: MS-CG lower by x2
    assert "RDF error at the training state (single-state models, mean): HIP-NN-TS 0.03 vs MS-CG 0.015: " \
           "MS-CG is lower by x2." in text
    assert "HIP-NN-TS pooled model 'pooled': mean RDF error 0.03 vs 0.07" in text and "pooled model beats them" in text
    assert "MS-CG pooled model 'pooled': mean RDF error 0.2 vs 0.15" in text and "does not beat them" in text
    assert "Noise floor (the AA data, first half vs second half, mean over states): RDF error 0.015, ADF error 0.05;" in text
    # tolerance 0.05 on RDF (ADF = RDF/2 <= 0.1 whenever RDF passes)
    assert "hipnn_ts-T280_rho0.8 (trained on T280_rho0.8): reproduces the AA structure at 1/2 states (T280_rho0.8)" in text
    assert "hipnn_ts-pooled (trained on T280_rho0.8, T340_rho0.75): reproduces the AA structure at 2/2 states" in text
    assert "mscg-pooled (trained on T280_rho0.8, T340_rho0.75): reproduces the AA structure at 0/2 states" in text


def test_blown_up_run_is_not_a_match_and_is_reported(tmp_path):
    summary = summary_with(ERRORS, blowup=("hipnn_ts-T280_rho0.8", "T280_rho0.8"))
    assert summary["verdicts"]["hipnn_ts-T280_rho0.8"]["reproduces_at"] == []
    text = "\n".join(report.verdict_lines(summary))
    assert "Unstable CG runs (stopped by the blow-up checks; no structure, counted as no match): 1: " \
           "hipnn_ts-T280_rho0.8 at T280_rho0.8." in text


def test_speed_rows():
    rows = report.speed_rows(summary_with(ERRORS))
    assert rows[0] == ("all-atom", "T280_rho0.8", 2.0, 1.0)
    mscg = next(r for r in rows if r[0] == "mscg-pooled")
    assert mscg[2] == pytest.approx(50.0) and mscg[3] == pytest.approx(25.0)


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
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| T340_rho0.75 | 0.08 | 0.02 |" in md  # the HIP-NN-TS RDF matrix row
    assert "| mscg-pooled | mean over states | 50 | 25 |" in md


def test_no_winner_within_the_noise_floor():
    summary = summary_with(ERRORS)
    summary["noise"] = {s: {"rdf_error": 0.2, "adf_error": 0.01} for s in STATES}
    text = "\n".join(report.verdict_lines(summary))
    # RDF gap 0.08 < half of 0.2: no winner; ADF gap 0.04 > half of 0.01: HIP-NN-TS
    assert "Verdict (RDF): neither family transfers clearly better: mean RDF error away from the training state " \
           "HIP-NN-TS 0.07 vs MS-CG 0.15, a gap of 0.08, below half the noise floor (0.2)." in text
    assert "Verdict (ADF): across the study's states, HIP-NN-TS transfers better (mean ADF error away from the " \
           "training state 0.035 vs 0.075)." in text

"""scripts/timestep_evidence.py: its errors are the study's, and its verdicts follow the stated rule."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import timestep_evidence  # noqa: E402


def structure(g_shift: float = 0.0, p_scale: float = 1.0) -> dict:
    r = np.linspace(0.05, 7.95, 80)
    theta = np.linspace(2.0, 178.0, 45)
    p = np.sin(np.radians(theta))
    p /= np.sum(p * np.gradient(theta))
    return {"rdf": {"r_A": r.tolist(), "g": {"M-M": (1.0 + g_shift + np.exp(-(r - 4) ** 2)).tolist()}},
            "adf": {"theta_deg": theta.tolist(), "p": (p * p_scale).tolist()}}


def test_errors_are_the_studys_known_answers():
    ref = structure()
    assert timestep_evidence.errors_against(ref, ref) == {"rdf_error": 0.0, "adf_error": 0.0}
    errors = timestep_evidence.errors_against(ref, structure(g_shift=0.1, p_scale=1.5))
    assert errors["rdf_error"] == pytest.approx(0.1)       # a g shifted by c everywhere: |c|
    assert errors["adf_error"] == pytest.approx(0.5)       # integral of |1.5 p - p| = 0.5


def test_verdict_rule():
    floor = {"rdf_error": 0.01, "adf_error": 0.03}
    ok = {"rdf_error": 0.005, "adf_error": 0.02, "temperature_K": 303.0}
    assert timestep_evidence.verdict(ok, floor, 300.0) == "unchanged"
    assert timestep_evidence.verdict({**ok, "temperature_K": 310.0}, floor, 300.0) == "changed: T +3.3%"
    assert timestep_evidence.verdict({**ok, "rdf_error": 0.02}, floor, 300.0) == "changed: RDF"
    assert timestep_evidence.verdict({"blowup": "step 20"}, floor, 300.0) == "blew up"

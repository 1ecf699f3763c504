"""CG-vs-AA comparison of one state point: a trajectory compared with itself has zero error in every
metric, and the comparison files and overlay figure are written."""

import json

import numpy as np
import pytest

from helpers import lj_fluid
from thermocg.analysis.plots import compare_to_reference
from thermocg.dataset import read_frames
from thermocg.frames import Frames, StatePoint
from thermocg.md import simulate
from thermocg.potentials.lj import LennardJones


def test_a_trajectory_against_itself(rng, tmp_path):
    pos, box = lj_fluid(64, 0.01, rng=rng)
    frames = Frames(positions=pos, box=box, types=np.zeros(64, int), type_names=("Ar",), masses=np.full(64, 39.948),
                    state=StatePoint(120.0, density_g_cm3=1.0))
    lj = LennardJones(["Ar"], epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=8.5, switch_width_A=1.0)
    simulate(lj, frames, temperature_K=120.0, timestep_fs=4.0, n_steps=300, seed=2, save_interval_steps=20,
             out_dir=tmp_path / "md", progress=False)
    traj = tmp_path / "md" / "traj.h5md"
    from thermocg.config import AnalysisConfig

    out = compare_to_reference(traj, traj, tmp_path / "cmp", label="lj", reference_label="AA", potential=lj,
                               settings=AnalysisConfig(discard_fraction=0.0, adf_cutoff_A=5.0))
    assert out["rdf"]["Ar-Ar"]["mean_abs_dg"] == 0.0
    assert out["adf"]["all"]["integrated_abs_dp"] == 0.0
    assert out["diffusion_1e5_cm2_s"]["relative_error"] == 0.0
    assert out["force_errors"]["rmse"] < 1e-9 and out["force_errors"]["r2"] == pytest.approx(1.0)
    expected_density = read_frames(traj).density_g_cm3.mean()
    assert out["density_g_cm3"]["lj"] == pytest.approx(expected_density)
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["adf"]["all"]["cutoff_A"] == 5.0
    for name in ("overlay.png", "rdf_lj.json", "adf_AA.json", "msd_lj.json", "density_AA.json"):
        assert (tmp_path / "cmp" / name).exists()

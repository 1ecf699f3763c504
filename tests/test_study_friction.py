"""The study's Langevin friction that matches the AA diffusion, through its real stage functions, on a
system with a known answer: free particles (no forces) whose "AA" diffusion is that of a Langevin bath
of 8/ps. The pilot run at simulate.friction_per_ps = 3/ps must find 8/ps, the production run must use
it, and the evaluation must find the run's D equal to the AA one and the same friction again (600
particles, MSD fitted over lags up to 3 ps: D to about 3%)."""

from __future__ import annotations

import numpy as np
import pytest

from test_study import adf_result, rdf_result
from thermocg import study as st
from thermocg.analysis.msd import langevin_diffusion_A2_fs
from thermocg.config import Config, from_dict
from thermocg.dataset import read_frames, write_frames
from thermocg.frames import Frames, StatePoint
from thermocg.model_summary import ModelSummary
from thermocg.rundir import RunDir

TARGET_PER_PS, MASS, TEMPERATURE, N, BOX = 8.0, 10.0, 300.0, 600, 36.0


def test_friction_matching_the_aa_diffusion_is_found_and_used(tmp_path, rng):
    from thermocg.potentials.base import save_potential
    from thermocg.potentials.lj import LennardJones

    label = "T300_rho0.1"
    run_dir = tmp_path / "run"
    state = StatePoint(TEMPERATURE, density_g_cm3=0.1)
    frames = Frames(positions=rng.uniform(0, BOX, (2, N, 3)), box=np.eye(3) * BOX, types=np.zeros(N, int),
                    type_names=("X",), masses=np.full(N, MASS), forces=np.zeros((2, N, 3)), state=state,
                    time_fs=np.array([0.0, 50.0]))
    write_frames(frames, RunDir(run_dir).cg_dataset(label), kind="cg")
    model_path = RunDir(run_dir).model("free") / "model.safetensors"
    save_potential(LennardJones(("X",), epsilon_kcal_mol=0.0, sigma_A=1.0, cutoff_A=1.0, switch_width_A=0.0),
                   model_path)
    trained = ModelSummary(family="mscg", name="free", model_path=model_path, train_states=(label,), wall_s=0.0,
                           n_epochs=None, best_epoch=None, stopped_at_max_epochs=False, test_force_rmse_kcal_mol_A=None,
                           test_force_mae_kcal_mol_A=None, test_r2=None, cutoff_A=1.0)
    config = from_dict(Config, {
        "states": [{"temperature_K": TEMPERATURE, "density_g_cm3": 0.1}],
        "simulate": {"timestep_fs": 5.0, "friction_per_ps": 3.0, "duration_ps": 10.0, "save_interval_fs": 50.0,
                     "thermo_interval_fs": 50.0, "min_distance_A": 0.0, "device": "cpu", "save_velocities": False},
        "analysis": {"discard_fraction": 0.0, "adf_cutoff_A": 6.0, "msd_fit_end_fraction": 0.3},
        "study": {"families": ["mscg"], "langevin_friction": "match_diffusion", "friction_pilot_ps": 10.0,
                  "force_eval_frames": 2, "parity_samples": 10, "progress": False},
    })
    d_aa = langevin_diffusion_A2_fs(TEMPERATURE, MASS, TARGET_PER_PS)
    reference = st.ReferenceResult(rdf=rdf_result(np.ones(200)), adf=adf_result(), adf_cutoff_A=6.0,
                                   diffusion_A2_fs=d_aa, noise=None, n_frames=2, n_beads=N)
    gamma, note = st.stages.diffusion_matching_friction(config, run_dir, trained, label, reference)
    assert gamma == pytest.approx(TARGET_PER_PS, rel=0.1)
    assert note.startswith("pilot 10 ps at 3/ps: D_CG/D_AA ")
    model = st.ModelSpec("mscg", label, (label,))
    md = st.stages.simulate_model(config, run_dir, model, trained, label, reference=reference)
    assert read_frames(md.trajectory).metadata["friction_per_ps"] == pytest.approx(gamma, rel=1e-12)
    evaluation = st.evaluate_model(config, run_dir, model, trained, label, md, reference)
    assert evaluation.friction_per_ps == pytest.approx(gamma, rel=1e-12)
    assert evaluation.d_ratio == pytest.approx(1.0, rel=0.15)
    assert evaluation.friction_fit_per_ps == pytest.approx(TARGET_PER_PS, rel=0.15)
    # the study refuses to match the diffusion with an NVE integrator (there is no friction to set)
    config.simulate.integrator = "nve"
    with pytest.raises(st.plan.ConfigError, match=r"study\.langevin_friction: match_diffusion needs"):
        st.validate_study(config)

"""The MD stage: typed summaries, `thermocg simulate --continue` equal to one uninterrupted run, the exit
status of a blown-up run, and the refusals of a continuation that would not be one."""

import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from helpers import lj_fluid
from thermocg.cli import main
from thermocg.config import load_config
from thermocg.dataset import write_frames
from thermocg.frames import Frames, StatePoint
from thermocg.md import MDRunSummary, load_restart, run_simulate
from thermocg.potentials.base import save_potential
from thermocg.potentials.lj import LennardJones

STATE = StatePoint(120.0, density_g_cm3=1.0)


def make_run(tmp_path, name: str, rng, **simulate) -> tuple:
    """A run directory with one CG state (64 argon beads) and an LJ model; returns (config path, model)."""
    pos, box = lj_fluid(64, 0.01, rng=rng)
    frames = Frames(positions=pos[None], box=box[None], types=np.zeros(64, int), type_names=("Ar",),
                    masses=np.full(64, 39.948), state=STATE)
    run_dir = tmp_path / name
    write_frames(frames, run_dir / "cg" / f"{STATE.label}.h5md", kind="cg")
    lj = LennardJones(["Ar"], epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=8.5, switch_width_A=1.0)
    model = save_potential(lj, run_dir / "models" / "lj" / "model.safetensors")
    settings = {"duration_ps": 0.2, "timestep_fs": 4.0, "save_interval_fs": 40.0, "thermo_interval_fs": 20.0,
                "device": "cpu", "extxyz": True, **simulate}
    config = {"run_dir": str(run_dir), "seed": 3, "states": [{"temperature_K": 120.0, "density_g_cm3": 1.0}],
              "simulate": settings}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, model


def set_simulate(config_path, **changes) -> None:
    config = yaml.safe_load(config_path.read_text())
    config["simulate"].update(changes)
    config_path.write_text(yaml.safe_dump(config))


def h5md_arrays(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f["particles"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                                  else None)
    return out


def test_run_simulate_returns_typed_summaries(rng, tmp_path):
    config_path, model = make_run(tmp_path, "run", rng)
    config = load_config(config_path)
    summaries = run_simulate(config, config.run_dir, model=model, progress=False)
    assert len(summaries) == 1
    summary = summaries[0]
    assert isinstance(summary, MDRunSummary)
    assert (summary.model, summary.state, summary.n_steps, summary.start_step) == ("lj", STATE.label, 50, 0)
    assert summary.simulated_ps == pytest.approx(0.2) and summary.blowup is None and summary.ns_per_day > 0
    assert summary.trajectory == summary.out_dir / "traj.h5md" and summary.trajectory.exists()
    assert summary.n_thermo_samples == 11 and 30 < summary.mean_temperature_K < 400
    assert summary.seed == 3 and summary.wall_s > 0
    # the speed it records: steps over this invocation's wall time, and the threads it ran with
    assert summary.steps_per_s == pytest.approx(summary.n_steps / summary.wall_s)
    assert summary.ns_per_day == pytest.approx(summary.steps_per_s * summary.timestep_fs * 1e-6 * 86400.0)
    assert summary.n_threads == torch.get_num_threads()
    on_disk = json.loads((summary.out_dir / "summary.json").read_text())
    assert MDRunSummary.from_dict(on_disk) == summary
    assert on_disk["out_dir"] == str(summary.out_dir) and on_disk["wall_s"] == summary.wall_s
    # summary.json of an older thermocg (wall_time_s, no out_dir/trajectory keys) still reads
    old = {k: v for k, v in on_disk.items() if k not in ("out_dir", "trajectory", "wall_s", "n_thermo_samples",
                                                           "start_step")}
    old["wall_time_s"] = 1.5
    read = MDRunSummary.from_dict(old)
    assert read.out_dir == summary.out_dir and read.trajectory == summary.trajectory and read.wall_s == 1.5
    # config passed one way: a dict section is refused
    config.simulate = {"duration_ps": 0.2}
    with pytest.raises(TypeError, match="SimulateConfig"):
        run_simulate(config, config.run_dir, model=model, progress=False)


def test_continue_equals_one_uninterrupted_run(tmp_path):
    """0.216 ps, then --continue to 0.44 ps == 0.44 ps at once. Neither length (54, 110 steps) is a multiple
    of the save (10) or thermo (5) interval: the continuation's frames must still fall where the
    uninterrupted run's do."""
    straight_config, straight_model = make_run(tmp_path, "straight", np.random.default_rng(8), duration_ps=0.44)
    split_config, split_model = make_run(tmp_path, "split", np.random.default_rng(8), duration_ps=0.216)
    assert main(["simulate", str(straight_config), "--model", str(straight_model)]) == 0
    assert main(["simulate", str(split_config), "--model", str(split_model)]) == 0
    set_simulate(split_config, duration_ps=0.44, max_force_kcal_mol_A=2000.0)  # thresholds may change
    assert main(["simulate", str(split_config), "--model", str(split_model), "--continue"]) == 0
    a = tmp_path / "straight" / "md" / "lj" / STATE.label
    b = tmp_path / "split" / "md" / "lj" / STATE.label
    traj_a, traj_b = h5md_arrays(a / "traj.h5md"), h5md_arrays(b / "traj.h5md")
    assert traj_a.keys() == traj_b.keys() and len(traj_a["trajectory/position/step"]) == 12  # steps 0..100
    for key in traj_a:
        assert traj_a[key].tobytes() == traj_b[key].tobytes(), key
    assert (a / "thermo.csv").read_bytes() == (b / "thermo.csv").read_bytes()
    assert (a / "traj.extxyz").read_bytes() == (b / "traj.extxyz").read_bytes()
    restart_a, restart_b = load_restart(a / "restart.npz"), load_restart(b / "restart.npz")
    assert restart_a["step"] == restart_b["step"] == 110
    for key in ("positions", "velocities", "rng_state", "neighbor_reference_positions"):
        assert restart_a[key].tobytes() == restart_b[key].tobytes(), key
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    assert summary_b["start_step"] == 54 and summary_b["n_steps"] == summary_a["n_steps"] == 110
    assert summary_b["simulated_ps"] == summary_a["simulated_ps"]
    assert summary_b["n_thermo_samples"] == summary_a["n_thermo_samples"] == 23
    assert summary_b["mean_temperature_K"] == pytest.approx(summary_a["mean_temperature_K"], rel=1e-12)
    assert summary_b["seed"] == summary_a["seed"]
    assert not any(p.name.endswith(".partial") for p in b.iterdir())
    # nothing left to do: the summary of the finished run comes back unchanged
    config = load_config(split_config)
    again = run_simulate(config, config.run_dir, model=split_model, progress=False, continue_run=True)
    assert again[0].n_steps == 110 and again[0].start_step == 54


def test_continue_refuses_what_would_not_be_a_continuation(rng, tmp_path, capsys):
    config_path, model = make_run(tmp_path, "run", rng)
    args = ["simulate", str(config_path), "--model", str(model)]
    assert main(args + ["--continue"]) == 2  # no run yet
    assert "restart.npz" in capsys.readouterr().err
    assert main(args) == 0
    set_simulate(config_path, duration_ps=0.4, timestep_fs=2.0)
    assert main(args + ["--continue"]) == 2
    assert "simulate.timestep_fs" in capsys.readouterr().err
    set_simulate(config_path, timestep_fs=4.0)
    out = tmp_path / "run" / "md" / "lj" / STATE.label
    (out / "thermo.csv").write_text((out / "thermo.csv").read_text().rsplit("\n", 2)[0] + "\n")  # a row lost
    assert main(args + ["--continue"]) == 2
    assert "cannot continue without a gap" in capsys.readouterr().err


def test_cli_exits_1_naming_the_state_that_blew_up(rng, tmp_path, capsys):
    config_path, model = make_run(tmp_path, "run", rng, timestep_fs=60.0, duration_ps=60.0, save_interval_fs=120.0,
                                  thermo_interval_fs=120.0, integrator="nve", extxyz=False)
    assert main(["simulate", str(config_path), "--model", str(model)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("thermocg")]  # not the bar
    assert len(err) == 1 and err[0].startswith(f"thermocg simulate: lj at {STATE.label}: simulation blew up at step")
    summary = json.loads((tmp_path / "run" / "md" / "lj" / STATE.label / "summary.json").read_text())
    assert summary["blowup"] and summary["n_steps"] < 1000

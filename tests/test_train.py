"""Force matching (thermocg.train): known answers on a Lennard-Jones fluid, determinism, resume, bad input.

The Lennard-Jones frames come from short velocity-Verlet MD written here (exact, noise-free forces
from thermocg.potentials.lj). A tiny trainable pair potential (a sum of Gaussians in r) stands in for
the network where the test is about the trainer's machinery, so those tests stay fast; HIP-NN-TS
itself must learn the Lennard-Jones forces to R^2 >= 0.99 on held-out frames.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch

from helpers import lj_fluid
from thermocg.config import ConfigError, TrainConfig, from_dict
from thermocg.frames import Frames, StatePoint
from thermocg.neighbors import Graph
from thermocg.potentials.base import Potential, energy_and_forces, load_potential, register
from thermocg.potentials.lj import LennardJones
from thermocg.train import (
    TrainError,
    automatic_cutoff_A,
    force_loss,
    force_metrics,
    split_indices,
    train_potential,
)

ARGON = dict(epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=7.0, switch_width_A=1.0)


def lj_md_frames(n_frames: int, *, seed: int, n_side: int = 4, density_per_A3: float = 0.021,
                 temperature_K: float = 120.0, timestep_fs: float = 4.0, stride: int = 5,
                 type_names: tuple[str, ...] = ("Ar",)) -> Frames:
    """Frames of an argon-like LJ fluid from velocity Verlet with velocity rescaling to T.

    Returns positions, exact LJ forces (kcal/mol/A) and the box, every ``stride`` steps after a
    short equilibration. Two type names split the particles alternately (same LJ parameters).
    """
    from thermocg import units

    rng = np.random.default_rng(seed)
    positions, box = lj_fluid(n_side**3, density_per_A3, rng=rng)
    n = len(positions)
    types = np.arange(n) % len(type_names)
    lj = LennardJones(type_names, **ARGON).to(torch.float64)
    mass = 39.95
    kT = units.kT(temperature_K)
    velocities = rng.normal(0.0, np.sqrt(kT / mass / units.MV2_TO_KCAL_MOL), (n, 3))

    def forces_of(x: np.ndarray) -> np.ndarray:
        return energy_and_forces(lj, x, box, types)[1][0].numpy()

    forces = forces_of(positions)
    out_pos, out_force = [], []
    n_steps = 40 + n_frames * stride
    for step in range(n_steps):
        velocities += 0.5 * timestep_fs * units.FORCE_TO_ACCEL * forces / mass
        positions = positions + timestep_fs * velocities
        forces = forces_of(positions)
        velocities += 0.5 * timestep_fs * units.FORCE_TO_ACCEL * forces / mass
        if step % 10 == 0:  # a crude thermostat: rescale to the target kinetic energy
            ke = 0.5 * mass * np.sum(velocities**2) * units.MV2_TO_KCAL_MOL
            velocities *= np.sqrt(1.5 * n * kT / ke)
        if step >= 40 and (step - 40) % stride == 0:
            out_pos.append(positions.copy())
            out_force.append(forces.copy())
    return Frames(positions=np.array(out_pos), box=box, forces=np.array(out_force), types=types,
                  type_names=type_names, masses=np.full(n, mass),
                  state=StatePoint(temperature_K, density_g_cm3=round(density_per_A3 * mass * 1.66054, 4)))


@pytest.fixture(scope="module")
def lj_frames() -> Frames:
    return lj_md_frames(30, seed=7)


@register
class GaussianPair(Potential):
    """Test stand-in: E = 1/2 sum_{i != j} sum_k c_k exp(-((r_ij - mu_k) / w)^2) cos^2(pi r / 2 r_c)."""

    kind = "test_gaussian_pair"

    def __init__(self, type_names: tuple[str, ...] | list[str], *, cutoff_A: float = 7.0, n_basis: int = 12,
                 r_min_A: float = 2.8, init_seed: int = 0) -> None:
        super().__init__(type_names, cutoff_A)
        self.n_basis, self.r_min_A, self.init_seed = n_basis, r_min_A, init_seed
        generator = torch.Generator().manual_seed(init_seed)
        self.coefficients = torch.nn.Parameter(0.01 * torch.randn(n_basis, generator=generator))
        self.register_buffer("centers", torch.linspace(r_min_A, cutoff_A, n_basis))
        self.width_A = (cutoff_A - r_min_A) / (n_basis - 1)

    def forward(self, graph: Graph) -> torch.Tensor:
        r = graph.pair_dist
        basis = torch.exp(-(((r[:, None] - self.centers) / self.width_A) ** 2))
        envelope = torch.where(r < self.cutoff_A, torch.cos(0.5 * torch.pi * r / self.cutoff_A) ** 2, 0.0)
        u = (basis @ self.coefficients.to(r.dtype)) * envelope
        per_particle = torch.zeros(graph.positions.shape[0], dtype=r.dtype).index_add(0, graph.pair_i, 0.5 * u)
        return graph.frame_sum(per_particle)

    def hyperparameters(self) -> dict[str, Any]:
        return {"type_names": list(self.type_names), "cutoff_A": self.cutoff_A, "n_basis": self.n_basis,
                "r_min_A": self.r_min_A, "init_seed": self.init_seed}


def quick_config(**overrides: Any) -> TrainConfig:
    settings = dict(batch_size=2, max_batch_size=4, max_epochs=6, patience_epochs=2, early_stopping_epochs=50,
                    learning_rate=0.05, dtype="float64", progress=False, prior=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def weights(potential: Potential) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in potential.state_dict().items()}


# ---------------------------------------------------------------------------------------------- splits

def test_split_contiguous_blocks() -> None:
    train, val, test = split_indices(100)
    assert np.array_equal(train, np.arange(80)) and np.array_equal(val, np.arange(80, 90))
    assert np.array_equal(test, np.arange(90, 100))
    train, val, test = split_indices(100, n_blocks=2)
    assert np.array_equal(val, np.r_[40:45, 90:95]) and np.array_equal(test, np.r_[45:50, 95:100])
    assert len(np.intersect1d(train, np.r_[val, test])) == 0 and len(train) + len(val) + len(test) == 100


def test_empty_split_is_an_error() -> None:
    with pytest.raises(TrainError, match="validation split is empty"):
        split_indices(2)
    with pytest.raises(TrainError, match="test split is empty"):
        split_indices(9, (0.8, 0.1, 0.1), n_blocks=3)


# ---------------------------------------------------------------------------------------------- loss

def test_loss_and_metrics_known_values() -> None:
    ref = torch.tensor([1.0, -1.0, 2.0, 0.0])
    pred = ref + torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert float(force_loss(pred, ref, "rmse")) == pytest.approx(1.0)
    assert float(force_loss(pred, ref, "mae")) == pytest.approx(1.0)
    assert float(force_loss(pred, ref, "mse", scale=2.0)) == pytest.approx(0.25)
    assert float(force_loss(pred, ref, "rmse+mae", scale=2.0)) == pytest.approx(1.0)
    m = force_metrics(pred.numpy(), ref.numpy())
    # SST = sum (r - 0.5)^2 = 0.25 + 2.25 + 2.25 + 0.25 = 5, SSE = 4
    assert m["rmse"] == pytest.approx(1.0) and m["r2"] == pytest.approx(1 - 4 / 5)
    assert force_metrics(ref.numpy(), ref.numpy())["r2"] == 1.0


# ---------------------------------------------------------------------------------------------- training machinery

def test_loss_decreases_and_outputs(lj_frames: Frames, tmp_path) -> None:
    model = GaussianPair(("Ar",))
    result = train_potential([lj_frames], quick_config(), tmp_path, seed=1, potential=model)
    losses = [row["val_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    for name in ("model.safetensors", "metrics.csv", "test_metrics.json", "learning_curve.png", "parity.png",
                 "resolved.yaml", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    label = lj_frames.state.label
    assert metrics["per_state"][label]["n_frames"] == 3 and "Ar" in metrics["per_type"]
    assert metrics["split"][label] == {"train": 24, "val": 3, "test": 3}
    # the saved model is the best-validation model, and it loads back with identical forces
    loaded = load_potential(tmp_path / "model.safetensors")
    assert loaded.provenance["training_states"] == [label]
    f_saved = energy_and_forces(loaded, lj_frames.positions[-1], lj_frames.box[-1], lj_frames.types)[1]
    f_mem = energy_and_forces(result.potential, lj_frames.positions[-1], lj_frames.box[-1], lj_frames.types)[1]
    assert torch.equal(f_saved, f_mem)
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.metrics["best_epoch"] == best["epoch"]
    assert result.metrics["validation"]["overall"]["rmse"] == pytest.approx(best["val_force_rmse_kcal_mol_A"], rel=1e-9)


def test_schedule_doubles_batch_then_halves_lr(lj_frames: Frames, tmp_path) -> None:
    # a learning rate of ~0 never improves on epoch 1 by 0.1%: plateaus double the batch, then halve the lr
    config = quick_config(learning_rate=1e-12, batch_size=1, max_batch_size=4, patience_epochs=1,
                          early_stopping_epochs=5, max_epochs=20, improvement_threshold=1e-3)
    result = train_potential([lj_frames], config, tmp_path, seed=0, potential=GaussianPair(("Ar",)))
    sizes = [row["batch_size"] for row in result.history]
    rates = [row["learning_rate"] for row in result.history]
    assert sizes[:5] == [1, 1, 2, 4, 4]
    assert rates[3] == pytest.approx(1e-12) and rates[4] == pytest.approx(0.5e-12)
    # early stopping: epoch 1 was the best, so it stops 5 epochs later
    assert len(result.history) == 6


def test_same_seed_identical_weights_and_resume(lj_frames: Frames, tmp_path) -> None:
    config = quick_config(max_epochs=5)
    first = train_potential([lj_frames], config, tmp_path / "a", seed=3, potential=GaussianPair(("Ar",)))
    second = train_potential([lj_frames], config, tmp_path / "b", seed=3, potential=GaussianPair(("Ar",)))
    for k, v in weights(first.potential).items():
        assert torch.equal(v, weights(second.potential)[k]), k

    class Killed(Exception):
        pass

    def kill_after_two(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_potential([lj_frames], config, tmp_path / "c", seed=3, potential=GaussianPair(("Ar",)),
                        on_epoch_end=kill_after_two)
    assert not (tmp_path / "c" / "model.safetensors").exists()
    resumed = train_potential([lj_frames], config, tmp_path / "c", seed=3, potential=GaussianPair(("Ar",)))
    for k, v in weights(first.potential).items():
        assert torch.equal(v, weights(resumed.potential)[k]), k
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in first.history]
    # a different seed trains differently, and may not resume another run's checkpoint
    other = train_potential([lj_frames], config, tmp_path / "d", seed=4, potential=GaussianPair(("Ar",)))
    assert not torch.equal(other.potential.coefficients, first.potential.coefficients)
    with pytest.raises(TrainError, match="belongs to another run"):
        train_potential([lj_frames], config, tmp_path / "c", seed=4, potential=GaussianPair(("Ar",)))


def test_multi_state_metrics(tmp_path) -> None:
    cold = lj_md_frames(10, seed=1, temperature_K=100.0, type_names=("A", "B"))
    hot = lj_md_frames(10, seed=2, temperature_K=160.0, type_names=("A", "B"))
    result = train_potential([cold, hot], quick_config(max_epochs=2), tmp_path, seed=0,
                             potential=GaussianPair(("A", "B")))
    assert set(result.metrics["per_state"]) == {cold.state.label, hot.state.label}
    assert set(result.metrics["per_state"][hot.state.label]["per_type"]) == {"A", "B"}
    assert result.metrics["overall"]["n_frames"] == 2


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_input(lj_frames: Frames, tmp_path) -> None:
    model = GaussianPair(("Ar",))
    config = quick_config(max_epochs=1)
    with pytest.raises(TrainError, match="empty"):
        train_potential([], config, tmp_path, seed=0, potential=model)
    no_forces = lj_frames.select(slice(0, 10))
    no_forces.forces = None
    with pytest.raises(TrainError, match="no forces"):
        train_potential([no_forces], config, tmp_path, seed=0, potential=model)
    nan = lj_frames.select(slice(0, 10))
    nan.forces = nan.forces.copy()
    nan.forces[3, 5, 1] = np.nan
    with pytest.raises(TrainError, match=r"forces hold NaN.*\(3, 5, 1\)"):
        train_potential([nan], config, tmp_path, seed=0, potential=model)
    bad_shape = lj_frames.select(slice(0, 10))
    bad_shape.forces = bad_shape.forces[:, :-1]
    with pytest.raises(TrainError, match="forces shape"):
        train_potential([bad_shape], config, tmp_path, seed=0, potential=model)
    with pytest.raises(TrainError, match="validation split is empty"):
        train_potential([lj_frames.select(slice(0, 2))], config, tmp_path, seed=0, potential=model)
    with pytest.raises(TrainError, match="unknown to the model"):
        train_potential([lj_frames], config, tmp_path, seed=0, potential=GaussianPair(("CH3OH",)))
    with pytest.raises(TrainError, match="larger than half"):
        train_potential([lj_frames], config, tmp_path, seed=0, potential=GaussianPair(("Ar",), cutoff_A=12.0))
    with pytest.raises(ConfigError, match="train.split"):
        from_dict(TrainConfig, {"split": [0.9, 0.2, 0.1]}, "train")
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        from_dict(TrainConfig, {"learnig_rate": 0.1}, "train")


# ---------------------------------------------------------------------------------------------- HIP-NN-TS + prior

def test_hipnn_ts_learns_lennard_jones_forces(tmp_path) -> None:
    """Known answer: noise-free LJ forces; HIP-NN-TS + the derived prior reach R^2 >= 0.99 on the test frames."""
    from thermocg.neighbors import perpendicular_widths
    from thermocg.potentials.priors import derive_repulsive_prior

    frames = lj_md_frames(40, seed=7)
    config = TrainConfig(n_features=16, n_sensitivities=8, n_atom_layers=1, batch_size=2, max_batch_size=8,
                         learning_rate=5e-3, max_epochs=12, patience_epochs=5, progress=False)
    result = train_potential([frames], config, tmp_path, seed=0)
    test = result.metrics["overall"]
    assert test["n_frames"] == 4 and test["r2"] >= 0.99, test
    assert result.metrics["per_state"][frames.state.label]["per_type"]["Ar"]["r2"] >= 0.99
    # the automatic choices, recorded in the resolved config
    resolved = result.config
    half_box = perpendicular_widths(frames.box[0]).min() / 2
    # the one cutoff rule (automatic_cutoff_A): half the box, 0.1% inside it, floored to 0.01 A
    assert resolved.cutoff_A == automatic_cutoff_A(frames.box)
    assert 0.999 * half_box - 0.01 < resolved.cutoff_A <= 0.999 * half_box < 15.0
    assert resolved.dist_soft_max_A == pytest.approx(13.0 / 15.0 * resolved.cutoff_A)
    train_forces = frames.forces[:32]
    assert resolved.force_scale_kcal_mol_A == pytest.approx(np.sqrt(np.mean(train_forces**2)))
    onset = float(derive_repulsive_prior([frames.select(slice(0, 32))]).taper.min())
    assert resolved.dist_soft_min_A == pytest.approx(max(onset - 1.0, onset / 2))
    import yaml

    recorded = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    assert recorded["config"]["dist_soft_min_A"] == resolved.dist_soft_min_A
    assert recorded["automatic"]["cutoff_A"] == resolved.cutoff_A
    assert recorded["automatic"]["prior_taper_A"] == [[pytest.approx(onset)]]
    # the model file: HIP-NN-TS + repulsive prior, loadable with identical forces
    loaded = load_potential(tmp_path / "model.safetensors")
    assert [t.kind for t in loaded.terms] == ["hipnn_ts", "repulsive_prior"]
    assert loaded.provenance["test_metrics"]["r2"] == pytest.approx(test["r2"])
    f_loaded = energy_and_forces(loaded, frames.positions[-1], frames.box[-1], frames.types)[1]
    f_result = energy_and_forces(result.potential, frames.positions[-1], frames.box[-1], frames.types)[1]
    assert torch.equal(f_loaded, f_result)


def test_hipnn_ts_deterministic_and_resumable(tmp_path) -> None:
    frames = lj_md_frames(12, seed=3, type_names=("A", "B"))
    config = TrainConfig(n_features=8, n_sensitivities=6, n_atom_layers=1, batch_size=2, max_epochs=3,
                         patience_epochs=1, max_batch_size=4, progress=False)
    first = train_potential([frames], config, tmp_path / "a", seed=5)
    second = train_potential([frames], config, tmp_path / "b", seed=5)

    def stop_after_one(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_potential([frames], config, tmp_path / "c", seed=5, on_epoch_end=stop_after_one)
    resumed = train_potential([frames], config, tmp_path / "c", seed=5)
    reference = weights(first.potential)
    for other in (second, resumed):
        current = weights(other.potential)
        assert all(torch.equal(reference[k], current[k]) for k in reference)
    changed = train_potential([frames], config, tmp_path / "d", seed=6)
    assert not torch.equal(weights(changed.potential)["terms.0.energy_heads.1.weight"],
                           reference["terms.0.energy_heads.1.weight"])


def test_cli_train_reads_run_dir(tmp_path) -> None:
    import yaml

    from thermocg.cli import main
    from thermocg.dataset import write_frames
    from thermocg.potentials.base import read_model_header

    run_dir = tmp_path / "run"
    frames = lj_md_frames(10, seed=11)
    write_frames(frames, run_dir / "cg" / f"{frames.state.label}.h5md", kind="cg")
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump({
        "run_dir": str(run_dir), "seed": 9,
        "train": {"n_features": 8, "n_sensitivities": 4, "n_atom_layers": 1, "max_epochs": 1, "batch_size": 4,
                  "progress": False, "n_threads": 1},
    }))
    assert main(["train", str(config_path), "--name", "tiny"]) == 0
    out = run_dir / "models" / "tiny"
    for name in ("model.safetensors", "metrics.csv", "test_metrics.json", "learning_curve.png", "parity.png",
                 "resolved.yaml"):
        assert (out / name).exists(), name
    resolved = yaml.safe_load((out / "resolved.yaml").read_text())
    assert resolved["config"]["seed"] == 9 and resolved["config"]["train"]["cutoff_A"] > 0
    assert any(k.endswith(f"{frames.state.label}.h5md") for k in resolved["inputs"])
    header = read_model_header(out / "model.safetensors")
    assert header["provenance"]["training_states"] == [frames.state.label]
    assert header["provenance"]["seed"] == 9
    # a state without a dataset is a clear error (exit code 2)
    assert main(["train", str(config_path), "--train-states", "T999_rho1"]) == 2


# ---------------------------------------------------------------------------------------------- real CG methanol

@pytest.mark.slow
def test_methanol_pipeline_loss_decreases_and_same_seed_same_weights(tmp_path) -> None:
    """All-atom TraPPE methanol (OpenMM) -> one-bead CG -> HIP-NN-TS: the validation loss falls, the
    trained network explains part of the held-out mapped forces (R^2 > 0; a zero or random force does
    not), and training twice with one seed gives identical weights.

    The all-atom data differ from machine to machine (OpenMM's CPU kernels follow the SIMD width), so
    the bounds leave room: on six seeds here the best validation loss was 6-12% below the first
    epoch's and the test R^2 0.13-0.26 (CG forces of methanol are mostly the noise of the eliminated atoms)."""
    from safetensors.torch import load_file

    from thermocg.allatom.runner import run_generate
    from thermocg.config import Config
    from thermocg.mapping import run_map
    from thermocg.train import run_train

    config = from_dict(Config, {
        "run_dir": str(tmp_path), "seed": 1,
        "system": {"molecule": "methanol_trappe", "n_molecules": 64},
        "states": [{"temperature_K": 298.0, "density_g_cm3": 0.786}],
        "generate": {"platform": "CPU", "n_threads": 2, "equilibration_ps": 2.0, "production_ps": 6.0,
                     "save_interval_fs": 100.0, "thermo_interval_fs": 100.0},
        "train": {"n_features": 16, "n_sensitivities": 10, "n_atom_layers": 2, "batch_size": 4,
                  "max_epochs": 8, "learning_rate": 3e-3, "progress": False},
    })
    run_generate(config, tmp_path, progress=False)
    run_map(config, tmp_path, progress=False)
    first = run_train(config, tmp_path).model_path
    losses = np.loadtxt(first.parent / "metrics.csv", delimiter=",", skiprows=1, usecols=2)
    assert len(losses) == 8 and losses.min() < 0.98 * losses[0], losses  # the best model is the one kept
    test_r2 = json.loads((first.parent / "test_metrics.json").read_text())["overall"]["r2"]
    assert 0.05 < test_r2 < 0.6, test_r2
    second = run_train(config, tmp_path, name="again").model_path
    a, b = load_file(first), load_file(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_automatic_choices_are_overridable(lj_frames: Frames) -> None:
    from thermocg.train import resolve_train_config

    auto, prior = resolve_train_config(TrainConfig(), [lj_frames])
    given, prior_given = resolve_train_config(
        TrainConfig(cutoff_A=6.0, dist_soft_min_A=2.5, dist_soft_max_A=5.5, force_scale_kcal_mol_A=2.0,
                    prior_taper_A=3.3, prior_strength_kcal_mol_A=1.5), [lj_frames])
    assert (given.cutoff_A, given.dist_soft_min_A, given.dist_soft_max_A, given.force_scale_kcal_mol_A) == (
        6.0, 2.5, 5.5, 2.0)
    assert prior_given.hyperparameters()["taper_A"] == [[3.3]]
    assert prior_given.hyperparameters()["strength_kcal_mol_A"] == [[1.5]]
    # the prior is derived from the training frames only (the first 80%), never from validation/test
    from thermocg.potentials.priors import derive_repulsive_prior

    expected = derive_repulsive_prior([lj_frames.select(slice(0, 24))]).hyperparameters()
    assert prior.hyperparameters()["strength_kcal_mol_A"] == expected["strength_kcal_mol_A"]
    assert prior.hyperparameters()["taper_A"] == expected["taper_A"]
    assert auto.cutoff_A > given.cutoff_A
    with pytest.raises(TrainError, match="larger than half"):
        resolve_train_config(TrainConfig(cutoff_A=9.0), [lj_frames])
    _, none = resolve_train_config(TrainConfig(prior=False), [lj_frames])
    assert none is None


# ---------------------------------------------------------------------------------------------- the cutoff rule

def test_automatic_cutoff_known_answers() -> None:
    """min(15 A, 0.999 x half the shortest perpendicular width, floored to 0.01 A), over every box."""
    cubic = np.eye(3) * 16.6
    assert automatic_cutoff_A([cubic]) == 8.29  # 8.3 x 0.999 = 8.2917
    # triclinic: a = (10, 0, 0), b = (5, 10, 0), c = (0, 0, 10); the width across the b-c planes is
    # V / |b x c| = 1000 / sqrt(100^2 + 50^2) = 20 / sqrt(5) = 8.944 A, not the 10 A of the edges
    tilted = np.array([[10.0, 0.0, 0.0], [5.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    assert automatic_cutoff_A([tilted]) == 4.46  # 4.4721 x 0.999 = 4.4677
    assert automatic_cutoff_A([np.eye(3) * 10.0]) == 4.99
    # NPT: boxes fluctuate frame to frame and differ between states; the smallest one decides
    npt = np.eye(3) * np.array([20.0, 19.9, 20.1])[:, None, None]
    assert automatic_cutoff_A([npt]) == 9.94  # 9.95 x 0.999 = 9.94005
    assert automatic_cutoff_A([npt, np.eye(3)[None] * 18.5]) == 9.24  # 9.25 x 0.999 = 9.24075
    assert automatic_cutoff_A(b for b in (npt, tilted)) == 4.46  # any iterable
    # wide boxes: the reference study's 15 A (no margin needed), or the largest asked for
    assert automatic_cutoff_A([np.eye(3) * 41.0]) == 15.0
    assert automatic_cutoff_A([np.eye(3) * 41.0], largest_A=12.0) == 12.0
    # the margin keeps the cutoff inside every box, also for a box that round-off nudges
    from thermocg.neighbors import check_cutoff_fits

    nudged = np.eye(3) * 14.400000006
    check_cutoff_fits(automatic_cutoff_A([nudged]), nudged)
    with pytest.raises(ValueError, match="no boxes"):
        automatic_cutoff_A([])
    with pytest.raises(ValueError, match="too small"):
        automatic_cutoff_A([np.eye(3) * 0.01])


def small_npt_frames(n_frames: int = 20) -> Frames:
    """LJ frames in a box under 30 A whose size fluctuates (NPT); the smallest box has an edge,
    14.400000006 A, that rounds *up* at the 8th decimal (the box the old rule tripped on)."""
    rng = np.random.default_rng(0)
    positions, box = lj_fluid(64, 0.021, rng=rng)
    scale = 1 + 0.003 * np.sin(np.arange(n_frames))
    boxes = box[None] * scale[:, None, None]
    boxes[7] = np.eye(3) * 14.400000006
    positions = positions[None] * (np.diagonal(boxes, axis1=1, axis2=2) / np.diag(box))[:, None, :]
    lj = LennardJones(("Ar",), **ARGON)
    forces = energy_and_forces(lj, positions, boxes, np.zeros(64, int))[1].numpy()
    return Frames(positions=positions, box=boxes, forces=forces, types=np.zeros(64, int), type_names=("Ar",),
                  masses=np.full(64, 39.95), state=StatePoint(120.0, density_g_cm3=1.4))


def test_standalone_train_on_a_small_npt_box(tmp_path, capsys) -> None:
    """`thermocg train` with cutoff_A null works on a box under 30 A whose size fluctuates, and an
    explicit cutoff beyond half the box is refused with two numbers that differ (issue: it said
    "cutoff 7.200 A is larger than half ... (7.200 A)")."""
    import re

    import yaml

    from thermocg.cli import main
    from thermocg.dataset import write_frames
    from thermocg.potentials.base import read_model_header

    frames = small_npt_frames()
    run_dir = tmp_path / "run"
    write_frames(frames, run_dir / "cg" / f"{frames.state.label}.h5md", kind="cg")

    def train(cutoff: float | None, name: str) -> int:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({"run_dir": str(run_dir), "train": {
            "n_features": 4, "n_sensitivities": 4, "n_atom_layers": 1, "max_epochs": 1, "batch_size": 4,
            "progress": False, "n_threads": 1, "cutoff_A": cutoff, "prior": False, "dist_soft_min_A": 2.0}}))
        return main(["train", str(tmp_path / "c.yaml"), "--name", name])

    assert train(None, "auto") == 0
    description = read_model_header(run_dir / "models" / "auto" / "model.safetensors")["description"]
    assert json.dumps(description).count('"cutoff_A": 7.19') >= 1  # 7.200000003 x 0.999, floored
    half = 14.400000006 / 2
    assert train(half + 3e-9, "too_large") == 2
    message = capsys.readouterr().err
    assert "train.cutoff_A" in message and "leave train.cutoff_A null" in message
    given, limit = (float(x) for x in re.findall(r"(\d+\.\d+) A", message)[:2])
    assert given > limit and limit == pytest.approx(half, abs=1e-8)


# ---------------------------------------------------------------------------------------------- the trainer's parts

def test_resolve_writes_the_automatic_choices_before_fitting(lj_frames: Frames, tmp_path) -> None:
    import yaml

    from thermocg.train import Trainer

    config = TrainConfig(n_features=4, n_sensitivities=4, n_atom_layers=1, max_epochs=1, progress=False)
    trainer = Trainer(config, tmp_path, seed=0)
    with pytest.raises(RuntimeError, match=r"call prepare\(\) first"):
        trainer.resolve()
    trainer.prepare([lj_frames])
    resolved = trainer.resolve()
    recorded = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    automatic = recorded["automatic"]
    assert set(automatic) == {"cutoff_A", "dist_soft_min_A", "dist_soft_max_A", "force_scale_kcal_mol_A",
                              "prior_type_names", "prior_taper_A", "prior_strength_kcal_mol_A"}
    assert automatic["cutoff_A"] == resolved.cutoff_A == automatic_cutoff_A(lj_frames.box)
    assert automatic["force_scale_kcal_mol_A"] == pytest.approx(np.sqrt(np.mean(lj_frames.forces[:24] ** 2)))
    assert recorded["config"]["dist_soft_max_A"] == pytest.approx(13 / 15 * resolved.cutoff_A)
    assert trainer.potential.cutoff_A == resolved.cutoff_A
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "checkpoint.pt").exists()
    # what the user gave is not an automatic choice
    given = Trainer(dataclasses.replace(config, cutoff_A=6.5, force_scale_kcal_mol_A=1.0), tmp_path / "g", seed=0)
    given.prepare(lj_frames)
    given.resolve()
    assert "cutoff_A" not in given.automatic and "force_scale_kcal_mol_A" not in given.automatic
    assert given.resolved.cutoff_A == 6.5


def test_prepare_validates_and_strides_once(monkeypatch, tmp_path) -> None:
    """One validation and one split per state; frame_stride applied once and never reset."""
    import thermocg.train.data as data_module
    from thermocg.train import Trainer

    calls = {"check": 0, "split": 0}
    check, split = data_module._check_frames, data_module.split_indices

    def counting_check(*args, **kwargs):
        calls["check"] += 1
        return check(*args, **kwargs)

    def counting_split(*args, **kwargs):
        calls["split"] += 1
        return split(*args, **kwargs)

    monkeypatch.setattr(data_module, "_check_frames", counting_check)
    monkeypatch.setattr(data_module, "split_indices", counting_split)
    cold = lj_md_frames(20, seed=1, temperature_K=100.0)
    hot = lj_md_frames(20, seed=2, temperature_K=160.0)
    config = TrainConfig(n_features=4, n_sensitivities=4, n_atom_layers=1, max_epochs=1, frame_stride=2,
                         progress=False)
    result = train_potential([cold, hot], config, tmp_path, seed=0)
    assert calls == {"check": 2, "split": 2}
    # the summary counts the parameters of the model as saved (what scripts/frontier.py counts)
    from thermocg.potentials.base import load_potential

    assert result.summary.n_parameters == sum(p.numel() for p in load_potential(result.model_path).parameters()) > 0
    assert config.frame_stride == 2 and result.config.frame_stride == 2
    assert result.metrics["split"][cold.state.label] == {"train": 8, "val": 1, "test": 1}
    trainer = Trainer(config, tmp_path / "again", seed=0)
    states = trainer.prepare([cold, hot])
    assert np.array_equal(states[0].positions, cold.positions[::2])
    assert np.array_equal(states[1].forces, hot.forces[::2])


# ---------------------------------------------------------------------------------------------- typed summaries

def test_model_summary_round_trip(tmp_path) -> None:
    import os

    from thermocg.model_summary import ModelSummary

    summary = ModelSummary(family="hipnn_ts", name="pooled", model_path=tmp_path / "model.safetensors",
                           train_states=["T280_rho0.8", "T340_rho0.75"], wall_s=12.5, n_epochs=40, best_epoch=37,
                           stopped_at_max_epochs=True, test_force_rmse_kcal_mol_A=4.2,
                           test_force_mae_kcal_mol_A=3.1, test_r2=float("nan"), cutoff_A=8.29)
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["model_path"] == str(tmp_path / "model.safetensors") and data["test_r2"] is None
    again = ModelSummary.from_dict(data)
    assert again == summary and again.train_states == ("T280_rho0.8", "T340_rho0.75")
    assert os.fspath(summary) == str(summary.model_path)
    with pytest.raises(ValueError, match="unknown keys"):
        ModelSummary.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="missing keys"):
        ModelSummary.from_dict({k: v for k, v in data.items() if k != "cutoff_A"})
    # a summary written before n_parameters existed still reads (the key has a default)
    assert data["n_parameters"] is None
    assert ModelSummary.from_dict({k: v for k, v in data.items() if k != "n_parameters"}) == summary


def test_stopped_at_max_epochs_flag(lj_frames: Frames, tmp_path) -> None:
    import warnings

    from thermocg.train import TrainWarning

    # still improving at the last epoch: flagged and warned
    with pytest.warns(TrainWarning, match="stopped at max_epochs = 3 while still improving"):
        improving = train_potential([lj_frames], quick_config(max_epochs=3), tmp_path / "a", seed=1,
                                    potential=GaussianPair(("Ar",)))
    assert improving.history[-1]["best"] == 1
    summary = improving.summary
    assert summary.stopped_at_max_epochs and summary.n_epochs == 3 and summary.best_epoch == 3
    assert summary.test_force_rmse_kcal_mol_A == improving.metrics["overall"]["rmse"]
    assert summary.family == "test_gaussian_pair" and summary.cutoff_A == 7.0
    # a plateau since epoch 1 (learning rate ~0): at max_epochs, but not improving -> not flagged
    flat = quick_config(learning_rate=1e-12, patience_epochs=1, max_epochs=4, improvement_threshold=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainWarning)
        plateau = train_potential([lj_frames], flat, tmp_path / "b", seed=1, potential=GaussianPair(("Ar",)))
        assert not plateau.summary.stopped_at_max_epochs and plateau.summary.best_epoch == 1
        # stopped early (before max_epochs): not flagged
        early = train_potential([lj_frames], dataclasses.replace(flat, max_epochs=20, early_stopping_epochs=2),
                                tmp_path / "c", seed=1, potential=GaussianPair(("Ar",)))
    assert early.summary.n_epochs == 3 and not early.summary.stopped_at_max_epochs


def test_run_train_returns_its_summary(tmp_path) -> None:
    import csv as csv_module

    from thermocg.config import Config
    from thermocg.dataset import write_frames
    from thermocg.model_summary import ModelSummary
    from thermocg.train import run_train

    run_dir = tmp_path / "run"
    frames = lj_md_frames(10, seed=11)
    write_frames(frames, run_dir / "cg" / f"{frames.state.label}.h5md", kind="cg")
    config = Config(seed=2, train=TrainConfig(n_features=4, n_sensitivities=4, n_atom_layers=1, max_epochs=2,
                                              batch_size=4, progress=False, n_threads=1))
    summary = run_train(config, run_dir, name="tiny")
    assert isinstance(summary, ModelSummary) and summary.family == "hipnn_ts" and summary.name == "tiny"
    assert summary.model_path == run_dir / "models" / "tiny" / "model.safetensors" and summary.model_path.exists()
    assert summary.train_states == (frames.state.label,)
    test = json.loads((run_dir / "models" / "tiny" / "test_metrics.json").read_text())
    assert summary.test_force_rmse_kcal_mol_A == test["overall"]["rmse"]
    assert summary.test_r2 == test["overall"]["r2"] and summary.best_epoch == test["best_epoch"]
    rows = list(csv_module.DictReader((run_dir / "models" / "tiny" / "metrics.csv").open()))
    assert summary.n_epochs == len(rows) == 2 and summary.wall_s >= float(rows[-1]["wall_s"]) > 0
    assert summary.cutoff_A == automatic_cutoff_A(frames.box)
    with pytest.raises(ConfigError, match="expected a thermocg Config"):
        run_train(config.train, run_dir)


# ---------------------------------------------------------------------------------------------- temperature

def two_temperature_frames() -> list[Frames]:
    return [lj_md_frames(10, seed=k, temperature_K=t) for k, t in enumerate((110.0, 130.0))]


def test_a_given_temperature_dependent_potential_is_evaluated_at_each_state_temperature(tmp_path) -> None:
    """Trainer(potential=hipnn_ts_thermal): the valid range becomes the training temperatures', and the test
    metrics of each state are those of the model at that state's temperature."""
    from thermocg.potentials.thermal_hipnn import ThermalHipnnTS
    from thermocg.train import Trainer, evaluate, predict_forces

    frames = two_temperature_frames()
    network = ThermalHipnnTS(["Ar"], reference_temperature_K=120.0, n_features=8, n_sensitivities=6,
                             dist_soft_min_A=2.5, dist_soft_max_A=6.0, cutoff_A=7.0, n_atom_layers=1)
    trainer = Trainer(quick_config(max_epochs=2), tmp_path, seed=0, potential=network)
    result = trainer.run(frames)
    model = result.potential
    assert model.valid_temperature_range_K == (110.0, 130.0) and model.temperature_K is None
    assert result.automatic["valid_temperature_range_K"] == [110.0, 130.0]
    for state in trainer.states:
        model.set_temperature(state.temperature_K)
        alone = evaluate(model, [state], "test", keep_predictions=False)["overall"]
        assert result.metrics["per_state"][state.label]["rmse"] == pytest.approx(alone["rmse"], rel=1e-12)
    # evaluate() sets each state's own temperature, whatever the model was set to; and the temperature matters
    model.set_temperature(130.0)
    assert evaluate(model, trainer.states[:1], "test")["overall"]["rmse"] == result.metrics["per_state"][
        trainer.states[0].label]["rmse"]
    state = trainer.states[0]
    at_130 = predict_forces(model, state.positions[state.test], state.box[state.test], state.types)
    model.set_temperature(110.0)
    at_110 = predict_forces(model, state.positions[state.test], state.box[state.test], state.types)
    assert np.abs(at_130 - at_110).max() > 0

"""Data-parallel training (thermocg.train.distributed): two CPU processes (gloo, one thread each) give the
weights of one process training on the same batches, and only rank 0 writes.

The loss of a whole batch is rebuilt from per-shard sums; the first test checks that rebuild on its
own (no processes): the gradients of the per-shard surrogates summed over shards equal the gradient
of force_loss over the batch, for every loss kind, an empty shard included.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import lj_force_frames
from thermocg.config import TrainConfig
from thermocg.frames import StatePoint
from thermocg.potentials.lj import LennardJones
from thermocg.train import Trainer, TrainError, force_loss, train_potential
from thermocg.train.distributed import loss_from_sums

SEED = 5


def training_frames():
    """14 jittered-lattice frames of 64 LJ beads with their exact forces (train 11, val 1, test 2)."""
    lj = LennardJones(["Ar"], epsilon_kcal_mol=0.238, sigma_A=3.4, cutoff_A=7.0, switch_width_A=1.0)
    return lj_force_frames(lj.to(torch.float64), 14, rng=np.random.default_rng(2), n_particles=64,
                           density=0.012, state=StatePoint(120.0, density_g_cm3=0.8))


def two_temperature_frames():
    """Two states of 8 frames each, at 100 K and 140 K, with the forces of an LJ fluid whose epsilon grows
    with T (a temperature dependence to learn): the data of a temperature-dependent fit."""
    out = []
    for k, (temperature, epsilon) in enumerate([(100.0, 0.22), (140.0, 0.26)]):
        lj = LennardJones(["Ar"], epsilon_kcal_mol=epsilon, sigma_A=3.4, cutoff_A=7.0, switch_width_A=1.0)
        out.append(lj_force_frames(lj.to(torch.float64), 8, rng=np.random.default_rng(10 + k), n_particles=64,
                                   density=0.012, state=StatePoint(temperature, density_g_cm3=0.8)))
    return out


def tiny_config(dtype: str) -> TrainConfig:
    """A small HIP-NN-TS; batches of 2 (the last one a single frame: one rank gets none), doubling to 4."""
    return TrainConfig(n_features=8, n_sensitivities=6, n_atom_layers=1, cutoff_A=7.0, dtype=dtype, batch_size=2,
                       max_batch_size=4, patience_epochs=1, max_epochs=3, learning_rate=0.01, progress=False,
                       n_threads=1)


def weights_of(state_dict: dict) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().double().numpy() for k, v in state_dict.items()}


def max_relative_difference(a: dict, b: dict) -> float:
    """max over tensors of max |a - b| / max |a| (the parameter's own scale)."""
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)) for k in a)


@pytest.mark.parametrize("kind", ["rmse+mae", "rmse", "mae", "mse"])
def test_sharded_loss_gradient_equals_the_batch_loss_gradient(kind):
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(3, dtype=torch.float64, generator=generator, requires_grad=True)
    basis = torch.randn(7, 5, 3, 3, dtype=torch.float64, generator=generator)  # 7 frames x 5 beads x 3
    reference = torch.randn(7, 5, 3, dtype=torch.float64, generator=generator)
    scale = 1.7

    def predicted(frames):
        return torch.einsum("fbkj,j->fbk", basis[frames], theta)

    whole = force_loss(predicted(list(range(7))), reference, kind, scale)
    (expected,) = torch.autograd.grad(whole, theta)
    shards = [[0, 3, 6], [1, 4], [2, 5], []]  # as 4 ranks take a batch of 7 (one gets nothing)
    sums = []
    for frames in shards:
        d = (predicted(frames) - reference[frames]) / scale
        sums.append((d.pow(2).sum(), d.abs().sum(), d.numel()))
    total = [float(sum(float(s[k].detach()) if torch.is_tensor(s[k]) else s[k] for s in sums)) for k in range(3)]
    loss, c_sq, c_abs = loss_from_sums(kind, *total)
    assert loss == pytest.approx(float(whole.detach()), rel=1e-14)
    gradient = torch.zeros_like(theta)
    for sq, ab, n in sums:
        if n:
            gradient += torch.autograd.grad(c_sq * sq + c_abs * ab, theta)[0]
    np.testing.assert_allclose(gradient.numpy(), expected.numpy(), rtol=1e-13, atol=0)


def training_jobs() -> dict[str, tuple[TrainConfig, list]]:
    """name -> (config, datasets): the tiny network in float64 and float32 on one state, and its
    temperature-dependent form (W = E_0 + tau E_1, force matching at each state's temperature) on two."""
    frames = training_frames()
    jobs = {dtype: (tiny_config(dtype), [frames]) for dtype in ("float64", "float32")}
    thermal = dataclasses.replace(tiny_config("float64"), temperature_dependence="linear", batch_size=3)
    jobs["thermal"] = (thermal, two_temperature_frames())
    return jobs


def _worker(rank: int, world_size: int, init_file: str, frames, jobs: dict, out_root: str) -> None:
    """One rank: train every job with the gloo group, save what the test compares."""
    import torch.distributed as dist

    from thermocg.train.distributed import DataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for dtype, (config, datasets) in jobs.items():
            result = train_potential(datasets, config, Path(out_root) / f"{dtype}_rank{rank}", seed=SEED,
                                     parallel=DataParallel())
            torch.save({"best": result.potential.state_dict(), "history": result.history,
                        "has_summary": result.summary is not None}, Path(out_root) / f"{dtype}_result{rank}.pt")
        # rank 1 reads other data: every rank refuses before anything is written
        other = frames if rank == 0 else dataclasses.replace(frames, positions=frames.positions + 1e-3)
        trainer = Trainer(jobs["float64"][0], Path(out_root) / f"mismatch_rank{rank}", seed=SEED,
                          parallel=DataParallel())
        trainer.prepare([other])
        try:
            trainer.resolve()
        except TrainError as exc:
            (Path(out_root) / f"mismatch{rank}.txt").write_text(str(exc))
        dist.barrier()  # both ranks done before the group goes away (gloo aborts a rank torn down mid-exchange)
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::thermocg.train.TrainWarning")  # 3 epochs are meant to be too few
def test_two_processes_give_the_weights_of_one_process(tmp_path):
    frames = training_frames()
    jobs = training_jobs()
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / "group"), frames, jobs, str(tmp_path)),
                                nprocs=2, join=True)
    for dtype, (config, datasets) in jobs.items():
        single = train_potential(datasets, config, tmp_path / f"{dtype}_single", seed=SEED)
        ranks = [torch.load(tmp_path / f"{dtype}_result{r}.pt", weights_only=True) for r in range(2)]
        # rank 0 wrote the run; rank 1 wrote nothing, and holds the same weights bit for bit
        written = tmp_path / f"{dtype}_rank0"
        for name in ("model.safetensors", "checkpoint.pt", "metrics.csv", "resolved.yaml", "test_metrics.json"):
            assert (written / name).exists(), name
        assert not (tmp_path / f"{dtype}_rank1").exists()
        assert ranks[0]["has_summary"] and not ranks[1]["has_summary"]
        best = [weights_of(r["best"]) for r in ranks]
        assert all(np.array_equal(best[0][k], best[1][k]) for k in best[0])
        # the same schedule (epochs, batch sizes, learning rates, best epoch) ...
        for row, other in zip(single.history, ranks[0]["history"]):
            assert (row["batch_size"], row["learning_rate"], row["best"]) == (
                other["batch_size"], other["learning_rate"], other["best"])
        assert len(single.history) == len(ranks[0]["history"]) == config.max_epochs
        # ... and the same numbers within round-off: ~1e-15 in float64, ~1e-7 in float32
        tolerance = 1e-4 if config.dtype == "float32" else 1e-10
        for key in ("train_loss", "val_loss", "val_force_rmse_kcal_mol_A"):
            np.testing.assert_allclose([r[key] for r in ranks[0]["history"]], [r[key] for r in single.history],
                                       rtol=tolerance)
        last = [weights_of(torch.load(d / "checkpoint.pt", weights_only=True)["model"])
                for d in (tmp_path / f"{dtype}_single", written)]
        differences = {"best": max_relative_difference(best[0], weights_of(single.potential.state_dict())),
                       "last": max_relative_difference(last[1], last[0])}
        print(f"{dtype}: max relative weight difference, 2 processes vs 1: {differences}")
        assert differences["best"] < tolerance and differences["last"] < tolerance
        if config.temperature_dependence != "none":  # the model of 2 processes is temperature-dependent too
            assert single.potential.temperature_dependent
        trainer = Trainer(config, tmp_path / f"{dtype}_initial", seed=SEED)
        trainer.prepare(datasets)
        trainer.resolve()
        moved = max_relative_difference(last[0], weights_of(trainer.potential.state_dict()))
        assert moved > 1000 * tolerance  # training moved the weights far beyond the tolerance
    for rank in range(2):
        message = (tmp_path / f"mismatch{rank}.txt").read_text()
        assert "rank(s) [1] differ from rank 0's" in message and not (tmp_path / f"mismatch_rank{rank}").exists()


@pytest.mark.slow
def test_torchrun_thermocg_train_equals_one_process(tmp_path):
    """`torchrun --nproc-per-node 2 -m thermocg train CONFIG` writes the model `thermocg train CONFIG` writes
    (float64: the same weights to 1e-10), rank 0 alone, under the run directory's lock."""
    import yaml

    from thermocg.dataset import write_frames
    from thermocg.potentials.base import load_potential

    frames = training_frames()
    settings = {k: v for k, v in dataclasses.asdict(tiny_config("float64")).items()
                if k in ("n_features", "n_sensitivities", "n_atom_layers", "cutoff_A", "dtype", "batch_size",
                         "max_batch_size", "patience_epochs", "max_epochs", "learning_rate", "progress", "n_threads")}
    models = {}
    for name, launcher in (("single", [sys.executable, "-m", "thermocg"]),
                           ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", "2", "-m", "thermocg"])):
        run_dir = tmp_path / name
        write_frames(frames, run_dir / "cg" / f"{frames.state.label}.h5md", kind="cg")
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"run_dir": str(run_dir), "seed": SEED, "train": settings}))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
        done = subprocess.run([*launcher, "train", str(config), "--name", "m"], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        out = run_dir / "models" / "m"
        resolved = yaml.safe_load((out / "resolved.yaml").read_text())
        assert resolved["test_metrics"]["rmse"] > 0
        models[name] = weights_of(load_potential(out / "model.safetensors").state_dict())
    difference = max_relative_difference(models["ddp"], models["single"])
    print(f"torchrun 2 processes vs 1: max relative weight difference {difference:.3g}")
    assert difference < 1e-10
    # other commands refuse to run under torchrun
    env = dict(os.environ, WORLD_SIZE="2", RANK="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "thermocg", "rdf", str(tmp_path / "single.yaml")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "only `thermocg train` runs on several processes" in done.stderr


def test_data_parallel_refuses_the_energy_terms_before_writing(tmp_path):
    """Energy matching and the thermal response need every frame of a state at once (per-state offsets,
    covariances), so a data-parallel fit with them refuses, naming the keys, and writes nothing."""
    import torch.distributed as dist

    from thermocg.train.distributed import DataParallel

    datasets = [dataclasses.replace(d, potential_energy_kcal_mol=np.linspace(-50.0, -40.0, d.n_frames))
                for d in two_temperature_frames()]
    config = dataclasses.replace(tiny_config("float64"), temperature_dependence="linear", energy_weight=0.1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        trainer = Trainer(config, tmp_path / "run", seed=SEED, parallel=DataParallel())
        trainer.prepare(datasets)
        with pytest.raises(TrainError, match=r"data-parallel training with energy matching.*energy_weight: 0\.1"):
            trainer.resolve()
    finally:
        dist.destroy_process_group()
    assert not (tmp_path / "run").exists()

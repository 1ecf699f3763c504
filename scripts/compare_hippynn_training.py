"""Train thermocg's HIP-NN-TS and hippynn 0.1.3's HipnnQuad on the same CG data; compare test forces.

Both sides get the same frames, the same contiguous time split (first 80% train, next 10% validation,
last 10% test), the same architecture hyperparameters (features, sensitivities, soft/hard distances,
interaction and atom layers), the same loss (force RMSE + force MAE in kcal/mol/A), Adam with the same
learning rate, the same fixed batch size and number of epochs, float32, and the best-validation
weights restored at the end. Neither side gets the repulsive prior, so both fit the same function
class (the network alone). Each seed initialises and shuffles both sides differently; the spread over
seeds is the yardstick for "at least as accurate".

Usage (2 cores, minutes per seed):

    python scripts/compare_hippynn_training.py --dataset RUN/cg/T298_rho0.786.h5md \\
        --seeds 0 1 2 --epochs 10 --n-features 32 --frame-stride 2 --out compare.json

Prints a table and ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("HIPPYNN_USE_CUSTOM_KERNELS", "False")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from thermocg.config import TrainConfig  # noqa: E402
from thermocg.dataset import read_frames  # noqa: E402
from thermocg.frames import Frames  # noqa: E402
from thermocg.train import force_metrics, predict_forces, resolve_train_config, split_indices, train_potential  # noqa: E402


def train_ours(frames: Frames, config: TrainConfig, seed: int, workdir: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    result = train_potential([frames], config, workdir, seed=seed, resume=False)
    wall = time.perf_counter() - start
    _, _, test = split_indices(frames.n_frames, config.split)
    types = result.potential.type_indices(frames.type_names, frames.types).numpy()
    pred = predict_forces(result.potential, frames.positions[test], frames.box[test], types)
    return force_metrics(pred, frames.forces[test]), wall


def train_hippynn(frames: Frames, config: TrainConfig, seed: int, workdir: Path) -> tuple[dict, float]:
    """hippynn 0.1.3's own training loop (Database, PatienceController, setup_and_train)."""
    from hippynn.databases import Database
    from hippynn.experiment import SetupParams, setup_and_train
    from hippynn.experiment.assembly import assemble_for_training
    from hippynn.experiment.controllers import PatienceController, RaiseBatchSizeOnPlateau
    from hippynn.graphs import Predictor
    from hippynn.graphs.nodes import loss
    from hippynn.graphs.nodes.indexers import acquire_encoding_padding
    from hippynn.graphs.nodes.inputs import CellNode, PositionsNode, SpeciesNode
    from hippynn.graphs.nodes.networks import HipnnQuad
    from hippynn.graphs.nodes.pairs import KDTreePairsMemory
    from hippynn.graphs.nodes.physics import GradientNode
    from hippynn.graphs.nodes.targets import HEnergyNode
    from hippynn.tools import active_directory

    torch.manual_seed(seed)  # hippynn initialises from torch's global generator
    n_types = len(frames.type_names)
    species_set = list(range(n_types + 1))  # hippynn reserves 0 for padding
    params = {
        "possible_species": species_set, "n_features": config.n_features,
        "n_sensitivities": config.n_sensitivities, "dist_soft_min": config.dist_soft_min_A,
        "dist_soft_max": config.dist_soft_max_A, "dist_hard_max": config.cutoff_A,
        "n_interaction_layers": config.n_interaction_layers, "n_atom_layers": config.n_atom_layers,
        "sensitivity_type": "inverse", "resnet": True,
    }
    species = SpeciesNode(name="species", db_name="species")
    positions = PositionsNode(name="positions", db_name="positions")
    cells = CellNode(name="cells", db_name="cells")
    encoder, padder = acquire_encoding_padding([species], species_set=species_set)
    pairs = KDTreePairsMemory("pairs", (positions, encoder, padder, cells), dist_hard_max=config.cutoff_A, skin=0)
    network = HipnnQuad("HIPNN", (padder, pairs), module_kwargs=params, periodic=True)
    energy = HEnergyNode("HEnergy", parents=(network,))
    force = GradientNode("forces", (energy, positions), sign=-1)
    force.db_name = "forces"
    rmse = loss.MSELoss.of_node(force) ** (1 / 2)
    mae = loss.MAELoss.of_node(force)
    total = rmse + mae
    modules, db_info = assemble_for_training(total, {"ForceRMSE": rmse, "ForceMAE": mae, "TotalLoss": total})

    arrays = {
        "species": np.broadcast_to(frames.types + 1, (frames.n_frames, frames.n_particles)).astype(np.int64),
        "positions": frames.positions.astype(np.float32),
        "cells": frames.box.astype(np.float32),
        "forces": frames.forces.astype(np.float32),
    }
    database = Database(arrays, seed=seed, pin_memory=False, quiet=True, **db_info)
    train, val, test = split_indices(frames.n_frames, config.split)
    database.make_explicit_split("test", torch.as_tensor(test))
    database.make_explicit_split("valid", torch.as_tensor(val))
    database.split_the_rest("train")

    optimizer = torch.optim.Adam(modules.model.parameters(), lr=config.learning_rate)
    # patience beyond the run: a fixed batch size and learning rate, as on our side
    scheduler = RaiseBatchSizeOnPlateau(optimizer=optimizer, max_batch_size=config.batch_size,
                                        patience=config.max_epochs + 1, factor=0.5)
    controller = PatienceController(optimizer=optimizer, scheduler=scheduler, batch_size=config.batch_size,
                                    eval_batch_size=config.eval_batch_size, max_epochs=config.max_epochs,
                                    termination_patience=config.max_epochs + 1, stopping_key="TotalLoss",
                                    fraction_train_eval=0.1)
    start = time.perf_counter()
    with active_directory(str(workdir), create=None), open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), \
            contextlib.redirect_stdout(sink):
        setup_and_train(modules, database, SetupParams(controller=controller, device="cpu"))
    wall = time.perf_counter() - start
    predictor = Predictor.from_graph(modules.model, model_device="cpu")
    out = predictor(species=torch.as_tensor(arrays["species"][test]),
                    positions=torch.as_tensor(arrays["positions"][test]),
                    cells=torch.as_tensor(arrays["cells"][test]), batch_size=config.eval_batch_size)
    pred = out["forces"].detach().cpu().numpy()
    return force_metrics(pred, frames.forces[test]), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="CG dataset (H5MD) of one state point")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--n-sensitivities", type=int, default=20)
    parser.add_argument("--n-atom-layers", type=int, default=3)
    parser.add_argument("--frame-stride", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N frames (after stride)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["both", "thermocg", "hippynn"], default="both")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    frames = read_frames(args.dataset)
    frames = frames.select(slice(None, args.max_frames and args.max_frames * args.frame_stride, args.frame_stride))
    config = TrainConfig(
        prior=False, n_features=args.n_features, n_sensitivities=args.n_sensitivities,
        n_atom_layers=args.n_atom_layers, batch_size=args.batch_size, max_batch_size=args.batch_size,
        learning_rate=args.learning_rate, max_epochs=args.epochs, patience_epochs=args.epochs + 1,
        early_stopping_epochs=args.epochs + 1, loss="rmse+mae", force_scale_kcal_mol_A=1.0,
        eval_batch_size=4, progress=False, dtype="float32",
    )
    # the automatic choices of thermocg (cutoff, sensitivity range), then fixed for both sides; hippynn's
    # KD-tree pair finder needs the cutoff strictly below half the box (in float32), so stay 0.01 A inside
    from thermocg.neighbors import perpendicular_widths

    half = min(perpendicular_widths(b).min() for b in frames.box) / 2
    config.cutoff_A = min(15.0, half - 0.01)
    config, _ = resolve_train_config(config, [frames])
    print(f"# {frames.n_frames} frames x {frames.n_particles} beads, cutoff {config.cutoff_A:.2f} A, "
          f"soft range {config.dist_soft_min_A:.2f}-{config.dist_soft_max_A:.2f} A, {config.n_features} features, "
          f"{args.epochs} epochs, batch {args.batch_size}, lr {args.learning_rate}", file=sys.stderr)
    rows = []
    for seed in args.seeds:
        for code, fn in (("thermocg", train_ours), ("hippynn", train_hippynn)):
            if args.only not in ("both", code):
                continue
            with tempfile.TemporaryDirectory(prefix=f"compare_{code}_") as tmp:
                metrics, wall = fn(frames, config, seed, Path(tmp))
            rows.append({"code": code, "seed": seed, "test_rmse": metrics["rmse"], "test_mae": metrics["mae"],
                         "test_r2": metrics["r2"], "train_wall_s": wall})
            print(f"{code:9s} seed {seed}: test force RMSE {metrics['rmse']:.4f} kcal/mol/A, "
                  f"MAE {metrics['mae']:.4f}, R^2 {metrics['r2']:.4f}, training {wall:.0f} s", file=sys.stderr,
                  flush=True)
    summary = {"dataset": str(args.dataset), "n_frames": frames.n_frames, "n_beads": frames.n_particles,
               "config": {k: getattr(config, k) for k in ("n_features", "n_sensitivities", "n_atom_layers",
                                                          "cutoff_A", "dist_soft_min_A", "dist_soft_max_A",
                                                          "batch_size", "learning_rate", "max_epochs")},
               "runs": rows}
    for code in ("thermocg", "hippynn"):
        mine = [r for r in rows if r["code"] == code]
        if mine:
            for key in ("test_rmse", "test_r2", "train_wall_s"):
                values = np.array([r[key] for r in mine])
                summary[f"{code}_{key}_mean"] = float(values.mean())
                summary[f"{code}_{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    if "thermocg_train_wall_s_mean" in summary and "hippynn_train_wall_s_mean" in summary:
        summary["speedup_vs_hippynn"] = summary["hippynn_train_wall_s_mean"] / summary["thermocg_train_wall_s_mean"]
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

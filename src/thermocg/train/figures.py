"""Figures of a training run: the learning curve and the test-set force parity."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.rundir import atomic_savefig


def plot_learning_curve(history: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Training and validation loss per epoch (log scale), with the validation force RMSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_rmse) = plt.subplots(1, 2, figsize=(9, 3.6))
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="validation")
    ax_rmse.plot(epochs, [r["val_force_rmse_kcal_mol_A"] for r in history], color="C1")
    for prev, row in zip(history, history[1:]):
        if row["batch_size"] != prev["batch_size"] or row["learning_rate"] != prev["learning_rate"]:
            for ax in (ax_loss, ax_rmse):
                ax.axvline(row["epoch"], color="0.8", lw=0.8, zorder=0)
    ax_loss.set(xlabel="epoch", ylabel="loss (force units of the force scale)", yscale="log")
    ax_rmse.set(xlabel="epoch", ylabel="validation force RMSE (kcal/mol/A)", yscale="log")
    ax_loss.legend(frameon=False)
    fig.suptitle("force matching (grey lines: batch size or learning rate changed)", fontsize=9)
    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return out


def plot_parity(predictions: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, *,
                metrics: dict[str, Any] | None = None, max_points: int = 20000) -> Path:
    """Predicted vs reference force components of the test frames, one colour per state point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    rng = np.random.default_rng(0)  # a fixed subsample, for the figure only
    lo, hi = 0.0, 0.0
    for k, (label, (pred, ref)) in enumerate(predictions.items()):
        p, r = pred.ravel(), ref.ravel()
        if p.size > max_points:
            pick = rng.choice(p.size, max_points, replace=False)
            p, r = p[pick], r[pick]
        lo, hi = min(lo, r.min(), p.min()), max(hi, r.max(), p.max())
        m = (metrics or {}).get("per_state", {}).get(label)
        extra = f" (RMSE {m['rmse']:.3g}, R$^2$ {m['r2']:.4f})" if m else ""
        ax.scatter(r, p, s=2, alpha=0.3, color=f"C{k}", label=f"{label}{extra}", rasterized=True)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set(xlabel="reference force (kcal/mol/A)", ylabel="predicted force (kcal/mol/A)",
           title="test-set force parity")
    if predictions:
        ax.legend(frameon=False, fontsize=7, markerscale=4)
    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return out

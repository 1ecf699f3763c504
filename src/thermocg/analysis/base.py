"""The template every analysis follows: ``prepare / single_frame / conclude``, ``run()`` returns self.

Arguments are validated in ``__init__`` (before any frame is read); results are a typed dataclass in
``self.results`` with ``to_dict()`` for JSON. Frames come from a :class:`thermocg.frames.Frames` in
memory or lazily from an H5MD file (:class:`thermocg.dataset.H5MDDataset`), block by block.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames
from thermocg.rundir import atomic_write_text


class AnalysisResults:
    """Mixin for result dataclasses: JSON-ready dict and atomic save."""

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, (np.floating, np.integer)):
                return v.item()
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def save_json(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))


class AnalysisBase:
    """Subclasses implement ``_prepare()``, ``_single_frame(frames, k)`` and ``_conclude()``.

    ``frames`` is a Frames or an H5MDDataset (read in blocks of ``block_size`` frames).
    ``start/stop/step`` select frames as a slice would.
    """

    block_size = 256

    def __init__(self, frames: Frames | H5MDDataset | str | os.PathLike, *, start: int = 0,
                 stop: int | None = None, step: int = 1) -> None:
        if isinstance(frames, (str, os.PathLike)):
            frames = H5MDDataset(frames)
        self.frames = frames
        n = frames.n_frames if isinstance(frames, Frames) else len(frames)
        if step < 1:
            raise ValueError(f"{type(self).__name__}: step must be >= 1, got {step}")
        self.frame_indices = np.arange(n)[slice(start, stop, step)]
        if len(self.frame_indices) == 0:
            raise ValueError(f"{type(self).__name__}: no frames selected")
        self.n_frames = len(self.frame_indices)
        self.results: Any = None

    def _blocks(self):
        for s in range(0, len(self.frame_indices), self.block_size):
            idx = self.frame_indices[s:s + self.block_size]
            if isinstance(self.frames, Frames):
                yield self.frames.select(idx)
            else:
                yield self.frames.read(idx)

    def run(self, *, progress: bool = False) -> "AnalysisBase":
        self._prepare()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.n_frames, desc=type(self).__name__, unit="frame")
        for block in self._blocks():
            for k in range(block.n_frames):
                self._single_frame(block, k)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        self._conclude()
        return self

    def _prepare(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _single_frame(self, frames: Frames, k: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _conclude(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

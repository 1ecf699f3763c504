"""The template every analysis follows: ``prepare / single_frame / conclude``, ``run()`` returns self.

As in MDAnalysis's ``AnalysisBase``, an analysis is built on its frames and parameters, and the frames to
use are chosen when it runs::

    rdf = RDF(dataset, bin_width_A=0.1).run(start=40)      # every frame from the 40th on
    adf = ADF(frames, cutoff_A=4.0).run(0, 100, 2)         # frames 0, 2, ..., 98

Parameters are validated in ``__init__`` (before any frame is read); ``run(start, stop, step)``
selects frames as the slice ``[start:stop:step]`` would; results are a typed dataclass in
``self.results`` with ``to_dict()`` for JSON. Frames come from a :class:`thermocg.frames.Frames` in
memory or lazily from an H5MD file (:class:`thermocg.dataset.H5MDDataset`), block by block.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from thermocg.dataset import H5MDDataset
from thermocg.frames import Frames
from thermocg.progress import Progress
from thermocg.rundir import atomic_write_text


class AnalysisResults:
    """Mixin for result dataclasses: JSON-ready dict, atomic save, and loading back for the results
    that define ``from_dict``."""

    #: what the results are, for error messages
    what = "analysis result"

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

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> Any:
        """The result saved by :meth:`save_json` (a ValueError naming the file if it is not one)."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a readable {cls.what} ({exc})") from None


class AnalysisBase:
    """Subclasses implement ``_prepare()``, ``_single_frame(frames, k)`` and ``_conclude()``.

    ``frames`` is a Frames, an H5MDDataset (read in blocks of ``block_size`` frames) or the path of
    an H5MD file. ``run(start, stop, step)`` sets ``frame_indices`` (the selected frames, indices
    into ``frames``) and ``n_frames`` (how many) before ``_prepare()`` is called.
    """

    block_size = 256

    def __init__(self, frames: Frames | H5MDDataset | str | os.PathLike) -> None:
        if isinstance(frames, (str, os.PathLike)):
            frames = H5MDDataset(frames)
        self.frames = frames
        self.n_frames_total = frames.n_frames if isinstance(frames, Frames) else len(frames)
        if self.n_frames_total == 0:
            raise ValueError(f"{type(self).__name__}: the trajectory has no frames")
        self.frame_indices: np.ndarray = np.arange(self.n_frames_total)
        self.n_frames = self.n_frames_total
        self.results: Any = None

    def all_boxes(self) -> np.ndarray:
        """(n_frames_total, 3, 3) boxes of every frame, A (an H5MD file reads only its box dataset)."""
        if isinstance(self.frames, Frames):
            return np.broadcast_to(self.frames.box, (self.n_frames_total, 3, 3))
        return self.frames.boxes()

    def select_frames(self, start: int | None = None, stop: int | None = None, step: int | None = None) -> np.ndarray:
        """Indices of the frames ``[start:stop:step]``; a ValueError for a bad step or an empty selection."""
        if step is not None and step < 1:
            raise ValueError(f"{type(self).__name__}: step must be >= 1, got {step}")
        indices = np.arange(self.n_frames_total)[slice(start, stop, step)]
        if len(indices) == 0:
            raise ValueError(f"{type(self).__name__}: no frames selected by start={start}, stop={stop}, step={step} "
                             f"of {self.n_frames_total}")
        return indices

    def _blocks(self) -> Iterator[Frames]:
        for s in range(0, len(self.frame_indices), self.block_size):
            idx = self.frame_indices[s:s + self.block_size]
            if isinstance(self.frames, Frames):
                yield self.frames.select(idx)
            else:
                yield self.frames.read(idx)

    def run(self, start: int | None = None, stop: int | None = None, step: int | None = None, *,
            progress: "bool | Progress" = False) -> "AnalysisBase":
        """Analyse the frames ``[start:stop:step]`` (all by default); fills ``self.results``; returns self.

        ``progress``: True shows this analysis's own progress (:class:`thermocg.progress.Progress`: a
        bar on a terminal, plain lines in a log); a Progress object is advanced by one per frame
        (several analyses sharing one progress) and left open."""
        self.frame_indices = self.select_frames(start, stop, step)
        self.n_frames = len(self.frame_indices)
        self._prepare()
        own = progress is True
        bar = Progress(self.n_frames, description=type(self).__name__, unit="frames", leave=False) if own else (
            progress or None)
        try:
            for block in self._blocks():
                for k in range(block.n_frames):
                    self._single_frame(block, k)
                    if bar is not None:
                        bar.update(1)
        finally:
            if own:
                bar.close()
        self._conclude()
        return self

    def _prepare(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _single_frame(self, frames: Frames, k: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _conclude(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

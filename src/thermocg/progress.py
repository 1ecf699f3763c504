"""Progress of long work: a bar on a terminal, a plain line every few seconds in a log file.

A tqdm bar redraws itself with carriage returns, which is what a terminal wants and what a log file
does not: a study's log written through ``> study.log 2>&1`` grew to megabytes of ``\\r``-separated
bar states. :class:`Progress` looks at its stream once: on a terminal it draws a tqdm bar; anywhere
else it writes one plain line at most every ``interval_s`` seconds, and one when it closes::

    study: 12/66 units (18%), 3m05s elapsed, about 14m left [md/hipnn_ts-T280_rho0.805/T310_rho0.777]

Use it as a context manager (or call :meth:`Progress.close`)::

    with Progress(len(units), description="study", unit="units") as progress:
        for unit in units:
            progress.set_postfix(unit.name)
            ...
            progress.update()

:meth:`Progress.write` prints a line (a failure, a warning) without breaking the bar. ``mode``
forces the behaviour (``"bar"``, ``"lines"``, ``"off"``); ``"auto"`` chooses by the stream, and the
environment variable ``THERMOCG_PROGRESS`` (bar, lines or off) overrides ``"auto"``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

__all__ = ["Progress", "ProgressMode", "progress_mode", "format_duration"]

ProgressMode = Literal["auto", "bar", "lines", "off"]

_MODES = ("auto", "bar", "lines", "off")


def progress_mode(mode: ProgressMode = "auto", stream: TextIO | None = None) -> str:
    """The behaviour ``mode`` resolves to for ``stream`` (default: stderr): "bar", "lines" or "off"."""
    if mode not in _MODES:
        raise ValueError(f"progress mode must be one of {list(_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    forced = os.environ.get("THERMOCG_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "lines"


def format_duration(seconds: float) -> str:
    """A short human duration: ``45s``, ``3m05s``, ``2h07m``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class Progress:
    """Progress over ``total`` items (None: unknown), drawn as a bar or written as plain lines.

    Parameters
    ----------
    total : how many items the work has (None when unknown: no percentage or estimate)
    description : what the work is, the start of every line (``study``, ``ref T300_rho0.75``)
    unit : what an item is, plural (``units``, ``frames``)
    mode : "auto" (a bar on a terminal, lines elsewhere), "bar", "lines" or "off"
    stream : where to write (default: sys.stderr)
    interval_s : the least time between two plain lines
    leave : keep the bar on screen when it closes (inner bars usually do not)
    initial : items already done before this work started (a resumed run); the estimate of the time
        left counts only the items done since
    clock : a monotonic clock in seconds (tests pass their own)
    """

    def __init__(self, total: int | None, *, description: str, unit: str = "items", mode: ProgressMode = "auto",
                 stream: TextIO | None = None, interval_s: float = 5.0, leave: bool = True, initial: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if total is not None and total < 0:
            raise ValueError(f"Progress: total must be >= 0, got {total}")
        if not interval_s >= 0:
            raise ValueError(f"Progress: interval_s must be >= 0, got {interval_s}")
        self.total = total
        self.description = description
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.mode = progress_mode(mode, self.stream)
        self.interval_s = float(interval_s)
        if initial < 0 or (total is not None and initial > total):
            raise ValueError(f"Progress: initial must be within 0..total, got {initial} of {total}")
        self.initial = int(initial)
        self.n = self.initial
        self.postfix = ""
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._closed = False
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=description, unit=f" {unit}", leave=leave, file=self.stream,
                             dynamic_ncols=True, initial=self.initial)

    # ---------------------------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and self._clock() - self._last_line >= self.interval_s:
            self._line()

    def set_postfix(self, text: str) -> None:
        """What is being worked on now (shown after the counts)."""
        self.postfix = str(text)
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix)

    def write(self, message: str) -> None:
        """Print one line now (a failure, a warning), without breaking a bar; printed even when off."""
        if self._bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """End the progress: close the bar, or write the last plain line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines":
            self._line(final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------
    def line_text(self, *, final: bool = False) -> str:
        """The plain line for the current state (what lines mode writes)."""
        elapsed = self._clock() - self._start
        if self.total:
            counts = f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            counts = f"{self.n} {self.unit}"
        parts = [f"{self.description}: {counts}", f"{format_duration(elapsed)} elapsed"]
        if final:
            parts[-1] = f"done in {format_duration(elapsed)}"
        elif self.total and self.initial < self.n < self.total:
            rate = (self.n - self.initial) / elapsed if elapsed > 0 else math.inf
            parts.append(f"about {format_duration((self.total - self.n) / rate)} left")
        text = ", ".join(parts)
        if self.postfix and not final:
            text += f" [{self.postfix}]"
        return text

    def _line(self, *, final: bool = False) -> None:
        self._last_line = self._clock()
        print(self.line_text(final=final), file=self.stream, flush=True)

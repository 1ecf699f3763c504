"""The run directory: the one place that says where artifacts live.

::

    RUN_DIR/
      allatom/<state>/traj.h5md        all-atom trajectory with forces (H5MD, see dataset.py)
      allatom/<state>/topology.json    atom names, types, masses, molecule ids, molecule definition
      allatom/<state>/thermo.csv       time_ps, potential energy, temperature, density
      allatom/<state>/metadata.json    state point, force field, seed, versions, timings
      cg/<state>.h5md                  the CG dataset of that state point
      rdf/<state>.json, rdf/<state>.png
      models/<model>/...               trained potentials (model.safetensors), metrics, plots
      md/<model>/<state>/...           CG MD runs
      analysis/...                     observables per run, comparisons
      report/                          index.html, summary.md and figures

``<state>`` is :attr:`thermocg.frames.StatePoint.label`.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    def allatom(self, state_label: str) -> Path:
        return self.root / "allatom" / state_label

    def allatom_trajectory(self, state_label: str) -> Path:
        return self.allatom(state_label) / "traj.h5md"

    def cg_dataset(self, state_label: str) -> Path:
        return self.root / "cg" / f"{state_label}.h5md"

    def rdf(self, state_label: str) -> Path:
        return self.root / "rdf" / f"{state_label}.json"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    def md(self, model_name: str, state_label: str) -> Path:
        return self.root / "md" / model_name / state_label

    def analysis(self) -> Path:
        return self.root / "analysis"

    def report(self) -> Path:
        return self.root / "report"

    def cg_datasets(self) -> list[Path]:
        return sorted((self.root / "cg").glob("*.h5md"))


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before it takes ``path``: ``NAME.partial``, or
    ``STEM.partial.SUFFIX`` where the writer infers the format from the suffix (matplotlib)."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def finish_partial(partial: Path, path: Path, *, success: bool) -> None:
    """End a file written under a temporary name: rename it to ``path`` on success, else remove it."""
    if success:
        os.replace(partial, path)
    else:
        Path(partial).unlink(missing_ok=True)


def _process_umask() -> int:
    mask = os.umask(0o022)  # read it (the only portable way is to set it) ...
    os.umask(mask)  # ... and put it back at once
    return mask


#: the mode an ordinary new file gets here; applied to every atomically written file, whose writer
#: (safetensors, say) may have created it private (0600) unlike every other output
_FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """The one atomic write of thermocg: yield a temporary path to write ``path`` through.

    The caller writes the whole file to the yielded path (with any library: h5py, torch.save,
    safetensors, matplotlib, numpy); when the ``with`` block ends without an exception it is renamed
    to ``path`` (an atomic replace on POSIX), otherwise it is removed. A reader therefore sees the old
    file or the new one, never half of one. ``keep_suffix`` puts ``.partial`` before the suffix for
    writers that infer the format from it. The parent directory is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + path.suffix) if keep_suffix else partial_path(path)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if partial.is_file():
        os.chmod(partial, _FILE_MODE)
    os.replace(partial, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to ``path`` through a temporary name, so no half-written file is ever seen."""
    with atomic_path(path) as partial:
        partial.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary name (see :func:`atomic_path`)."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)
    return Path(path)


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    with atomic_path(path, keep_suffix=True) as partial:
        fig.savefig(partial, **kwargs)
    return Path(path)


# --------------------------------------------------------------------------------------------------
# one writer per run directory
# --------------------------------------------------------------------------------------------------

LOCK_NAME = ".thermocg.lock"


class RunDirError(ValueError):
    """A run directory that cannot be used: held by another process, or not writable."""


class RunDirLocked(RunDirError):
    """Another live process holds the run directory's lock."""


#: locks this process holds: resolved run directory -> (open lock file, nesting depth). A command
#: that calls another stage (the study calling train) takes the same lock again without deadlock.
_HELD: dict[Path, list] = {}


def _lock_owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not owner:
        return "another process"
    return (f"process {owner.get('pid', '?')} on {owner.get('host', '?')} "
            f"({owner.get('command', 'thermocg')}, since {owner.get('started', '?')})")


@contextlib.contextmanager
def run_dir_lock(root: str | os.PathLike, *, command: str | None = None) -> Iterator[Path]:
    """Hold the run directory ``root`` for this process while the block runs.

    The lock is an advisory ``flock`` on ``ROOT/.thermocg.lock``: the kernel releases it when the
    holder exits, however it exits (``kill -9`` included), so a crashed run never leaves it held.
    The file also records the holder (pid, host, command, start time) for the refusal message. A
    second process is refused at once with :class:`RunDirLocked`; the same process may nest the
    lock (the study calling stages). Creating the lock file is also the up-front check that the
    directory is writable: a read-only run directory is a :class:`RunDirError` naming it, before
    any work.

    Dask workers of a study write into the directory while the study's process holds the lock;
    they do not take it themselves.
    """
    import fcntl

    root = Path(root).resolve()
    if root in _HELD:
        _HELD[root][1] += 1
        try:
            yield root / LOCK_NAME
        finally:
            _HELD[root][1] -= 1
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_NAME, "a+")
    except OSError as exc:
        raise RunDirError(f"{root}: the run directory is not writable ({exc.strerror or exc}); "
                          "choose another with --run-dir or fix its permissions") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirLocked(f"{root}: the run directory is in use by {_lock_owner_text(root / LOCK_NAME)}; "
                               "wait for it to finish, stop it, or use another --run-dir") from None
        raise
    try:
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "command": command or " ".join(["thermocg", *sys.argv[1:2]]),
                 "started": datetime.datetime.now().isoformat(timespec="seconds")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(owner))
        handle.flush()
    except OSError as exc:
        handle.close()
        raise RunDirError(f"{root}: the run directory is not writable ({exc.strerror or exc})") from None
    _HELD[root] = [handle, 1]
    try:
        yield root / LOCK_NAME
    finally:
        del _HELD[root]
        try:
            handle.seek(0)
            handle.truncate()  # no stale owner text once released
        except OSError:
            pass
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

"""thermocg's compiled kernels: built from the C++ sources beside this file on first use, then cached.

One source today, ``hipnn_ts.cpp``, registered as ``torch.ops.thermocg.*`` for CPU tensors: the fused
HIP-NN-TS interaction environment and the rotation invariants (forward, backward and double backward;
used by :mod:`thermocg.potentials.hipnn`), and the pair vectors with their adjoint (used by
:func:`thermocg.neighbors.build_graph`). Their PyTorch equivalents are the fallback and the referees in
the tests.

How it is built. :func:`torch.utils.cpp_extension.load` compiles the source with the C++ compiler
(``c++``, or ``$CXX``) and ninja (the ``ninja`` package from PyPI is a dependency) into a cache directory,
``$THERMOCG_EXTENSION_DIR`` or else ``$XDG_CACHE_HOME/thermocg/extensions`` (``~/.cache/...``). The
library's name carries a hash of everything the binary depends on (source, flags, torch and Python
versions, the CPU's instruction-set flags, since it is compiled for the host CPU), so a cached build is
reused only where it fits, and a changed source is rebuilt. The build holds an exclusive ``flock`` on a
lock file, so parallel processes (pytest, Dask workers) wait for one build instead of racing; the lock
dies with its process. Compilers that reject the host-CPU flags get a second, portable build. A failed
build is remembered in the cache (``<name>.failed``), so that later processes fall back at once.
``make setup`` (and ``python -m thermocg._ext``) builds it ahead of time.

Fallback. Without a compiler, or if the build fails, :func:`hipnn_ops` returns None after one warning,
and the models use their PyTorch paths. ``THERMOCG_NO_EXTENSION=1`` forces the fallback silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["hipnn_ops", "extension_disabled", "build_info", "DISABLE_ENV", "DIRECTORY_ENV"]

#: set to 1 (or any value but 0 / empty) to use the PyTorch paths even where the extension would build
DISABLE_ENV = "THERMOCG_NO_EXTENSION"
#: where the compiled libraries are cached (default: $XDG_CACHE_HOME/thermocg/extensions)
DIRECTORY_ENV = "THERMOCG_EXTENSION_DIR"

_SOURCE = Path(__file__).with_name("hipnn_ts.cpp")
#: compiler and linker flags, tried in this order: for the host CPU with OpenMP threads (libgomp.so.1,
#: the runtime torch has loaded already), then portable and single-threaded for compilers that reject
#: those (-fno-math-errno lets sqrt vectorise; -ffp-contract=fast lets a * b + c become one FMA)
_FLAG_SETS = (
    (["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=fast", "-fopenmp", "-Wall"], ["-fopenmp"]),
    (["-O3", "-fno-math-errno", "-ffp-contract=fast"], []),
)

# The one piece of process state: the loaded library (or why it could not be had), and whether the
# fallback warning has been given. Loading a shared library is process-wide anyway.
_loaded: dict[str, Any] = {"ops": None, "path": None, "error": None, "tried": False, "warned": False}


def extension_disabled() -> bool:
    """True when ``THERMOCG_NO_EXTENSION`` asks for the PyTorch paths."""
    return os.environ.get(DISABLE_ENV, "").strip() not in ("", "0")


def _cpu_fingerprint() -> str:
    """The host's instruction-set flags (the binary is compiled with -march=native)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _library_name(cflags: list[str], ldflags: list[str]) -> str:
    import torch

    digest = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), " ".join(cflags + ldflags).encode(), torch.__version__.encode(),
                 sys.version.encode(), platform.machine().encode(), _cpu_fingerprint().encode()):
        digest.update(part)
        digest.update(b"\0")
    return f"thermocg_hipnn_ts_{digest.hexdigest()[:16]}"


def _cache_directory() -> Path:
    explicit = os.environ.get(DIRECTORY_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "thermocg" / "extensions"


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _ninja_on_path():
    """Put the ninja of the ``ninja`` package first on PATH while building (torch looks it up there)."""
    try:
        import ninja

        bin_dir = ninja.BIN_DIR
    except (ImportError, AttributeError):
        yield
        return
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = bin_dir + os.pathsep + before
    try:
        yield
    finally:
        os.environ["PATH"] = before


def _build_and_load_one(cflags: list[str], ldflags: list[str], verbose: bool) -> str:
    """Load the library built with these flags, building it first if the cache has none.

    A failed build leaves ``<name>.failed`` (the error) beside the lock, so that later processes do
    not try again; delete it (or the cache directory) to retry.
    """
    import torch
    from torch.utils import cpp_extension

    name = _library_name(cflags, ldflags)
    root = _cache_directory()
    build_dir = root / name
    build_dir.mkdir(parents=True, exist_ok=True)
    library = build_dir / f"{name}.so"
    failed = root / f"{name}.failed"
    with _exclusive_lock(root / f"{name}.lock"):
        if library.exists():
            torch.ops.load_library(str(library))
            return str(library)
        if failed.exists():
            raise RuntimeError(f"an earlier build failed ({failed.read_text().strip()}); delete {failed} to retry")
        # we hold the only build lock, so a lock file torch's own builder left behind is stale
        with contextlib.suppress(FileNotFoundError):
            (build_dir / "lock").unlink()
        try:
            with _ninja_on_path():
                path = cpp_extension.load(name=name, sources=[str(_SOURCE)], extra_cflags=cflags,
                                          extra_ldflags=ldflags, build_directory=str(build_dir),
                                          is_python_module=False, verbose=verbose)
        except Exception as exc:
            failed.write_text(_last_line(exc) + "\n")
            raise
    return str(path)


def _library_exists(cflags: list[str], ldflags: list[str]) -> bool:
    name = _library_name(cflags, ldflags)
    return (_cache_directory() / name / f"{name}.so").exists()


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"


def _compiler() -> str | None:
    """The C++ compiler torch would use ($CXX or c++), if there is one."""
    import shutil

    return shutil.which(os.environ.get("CXX", "c++"))


def _build_and_load(verbose: bool) -> str:
    if not any(_library_exists(cflags, ldflags) for cflags, ldflags in _FLAG_SETS) and _compiler() is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on PATH")
    errors = []
    for cflags, ldflags in _FLAG_SETS:
        try:
            return _build_and_load_one(cflags, ldflags, verbose)
        except Exception as exc:  # a compiler error, no compiler, no ninja, an unwritable cache
            errors.append(_last_line(exc))
    raise RuntimeError("; ".join(errors))


def hipnn_ops(*, warn: bool = True, verbose: bool = False):
    """``torch.ops.thermocg`` with the HIP-NN-TS kernels, or None (disabled, or no build possible).

    The first call in a process loads the cached library or builds it (tens of seconds); a failure is
    remembered and, when ``warn``, reported by one warning per process.
    """
    if extension_disabled():
        return None
    if not _loaded["tried"]:
        _loaded["tried"] = True
        try:
            _loaded["path"] = _build_and_load(verbose)
            import torch

            _loaded["ops"] = torch.ops.thermocg
        except Exception as exc:  # every flag set failed: fall back to the PyTorch paths
            _loaded["error"] = str(exc)
    if _loaded["ops"] is None and warn and not _loaded["warned"]:
        _loaded["warned"] = True
        warnings.warn(
            f"thermocg: the compiled HIP-NN-TS kernel is not available ({_loaded['error']}); using the "
            f"PyTorch path, which is slower (`python -m thermocg._ext --verbose` shows the build). Set "
            f"{DISABLE_ENV}=1 to choose that path without this warning.",
            RuntimeWarning,
            stacklevel=3,
        )
    return _loaded["ops"]


def build_info() -> dict[str, Any]:
    """What :func:`hipnn_ops` found: ``available``, ``disabled``, ``path`` (the loaded library), ``error``
    (why none could be had), ``directory`` (the cache)."""
    return {
        "available": _loaded["ops"] is not None,
        "disabled": extension_disabled(),
        "path": _loaded["path"],
        "error": _loaded["error"],
        "directory": str(_cache_directory()),
    }

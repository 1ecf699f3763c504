"""Provenance written beside every artifact: versions, host, time, input hashes."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("numpy", "torch", "openmm", "MDAnalysis", "ase", "h5py", "vesin", "hippynn")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def collect(inputs: list[str | os.PathLike] | None = None, **extra: Any) -> dict[str, Any]:
    """Versions, platform, time and the sha256 of each input file."""
    from thermocg import __version__

    data: dict[str, Any] = {
        "thermocg": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(),
    }
    if inputs:
        data["inputs"] = {str(p): file_sha256(p) for p in inputs if Path(p).is_file()}
    data.update(extra)
    return data

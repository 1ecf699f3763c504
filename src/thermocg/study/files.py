"""Files a study reads and writes, known by their contents; paths relative to the run directory.

**Content hashes.** A unit's key holds the sha256 of every input file it reads (a molecule YAML, an
imported trajectory and its topology), so that editing such a file reruns exactly the units that
read it, and a manifest holds the sha256 of every output file its unit wrote, so that a manifest
whose outputs are gone or were changed is not trusted. Hashing a trajectory of gigabytes takes
seconds, so :class:`FileHashes` keeps each hash with the file's size and modification time (in
``RUN_DIR/study/hashes/``, one small JSON file per hashed file, written atomically: Dask workers
hash in parallel) and hashes a file again only when its size or time changed.

**Relative paths.** Typed results name files (a model, a trajectory). In a manifest those inside the
run directory are stored relative to it (:func:`relative_paths`) and made absolute again against the
run directory that reads them (:func:`absolute_paths`): a moved run directory resumes, and a copied
one reads its own models, never the original's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from thermocg.provenance import file_sha256
from thermocg.rundir import atomic_write_text

__all__ = ["FileHashes", "relative_paths", "absolute_paths", "output_files"]


class FileHashes:
    """sha256 of files, cached by (size, mtime) under ``RUN_DIR/study/hashes`` (no cache without a run
    directory). Files inside the run directory are cached under their relative path, so a moved run
    directory keeps its cache."""

    def __init__(self, run_dir: str | os.PathLike | None = None) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir).resolve()
        self._memo: dict[tuple[str, int, int], str] = {}

    def _name(self, path: Path) -> str:
        if self.run_dir is not None:
            try:
                return path.relative_to(self.run_dir).as_posix()
            except ValueError:
                pass
        return str(path)

    def _cache_file(self, name: str) -> Path | None:
        if self.run_dir is None:
            return None
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        return self.run_dir / "study" / "hashes" / f"{digest}.json"

    def sha256(self, path: str | os.PathLike) -> str:
        """The sha256 of the file at ``path`` (a FileNotFoundError when there is none)."""
        path = Path(path).resolve()
        stat = path.stat()
        name = self._name(path)
        signature = (name, stat.st_size, stat.st_mtime_ns)
        if signature in self._memo:
            return self._memo[signature]
        cache = self._cache_file(name)
        if cache is not None:
            try:
                entry = json.loads(cache.read_text())
                if (entry["path"], entry["size"], entry["mtime_ns"]) == signature:
                    self._memo[signature] = entry["sha256"]
                    return entry["sha256"]
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no entry yet, or a damaged one: hash the file
        digest = file_sha256(path)
        self._memo[signature] = digest
        if cache is not None:
            try:
                atomic_write_text(cache, json.dumps({"path": name, "size": stat.st_size,
                                                     "mtime_ns": stat.st_mtime_ns, "sha256": digest}))
            except OSError:  # a read-only cache only costs time
                pass
        return digest

    def files(self, paths: list[Path]) -> dict[str, str]:
        """Relative name -> sha256 of each file (names relative to the run directory when inside it)."""
        return {self._name(Path(p).resolve()): self.sha256(p) for p in paths}


def output_files(path: Path) -> list[Path]:
    """The regular files of an output (a file, or every file under a directory), in a stable order;
    temporary files of interrupted writes (``*.partial*``) are left out."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and ".partial" not in p.name)


def _is_inside(value: str, root: Path) -> str | None:
    if not value or not os.path.isabs(value):
        return None
    try:
        return Path(value).relative_to(root).as_posix()
    except ValueError:
        return None


def relative_paths(data: Any, run_dir: str | os.PathLike) -> tuple[Any, list[str]]:
    """``data`` (plain JSON: dicts, lists, strings) with every absolute path inside ``run_dir`` made
    relative to it, and the places where that was done (``"trajectory"``, ``"paths/restart"``)."""
    root = Path(run_dir).resolve()
    where: list[str] = []

    def walk(value: Any, at: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, f"{at}/{k}" if at else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{at}/{k}" if at else str(k)) for k, v in enumerate(value)]
        if isinstance(value, str):
            rel = _is_inside(value, root)
            if rel is not None:
                where.append(at)
                return rel
        return value

    return walk(data, ""), where


def absolute_paths(data: Any, where: list[str], run_dir: str | os.PathLike) -> Any:
    """The inverse of :func:`relative_paths`: the relative paths at ``where`` joined to ``run_dir``."""
    root = Path(run_dir).resolve()
    for at in where:
        keys = at.split("/")
        node = data
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = str(root / node[int(last)])
        else:
            node[last] = str(root / node[last])
    return data

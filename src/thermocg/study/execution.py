"""Running the units of a study: manifests, in-process or on Dask, and the report.

When a unit finishes, a manifest ``RUN_DIR/study/units/<unit>.json`` is written atomically *after*
its outputs. It holds the unit's key, its stage's typed result (paths relative to the run directory),
the sha256 of every output file, and the sha256 of the manifest of every unit it depends on. A rerun
trusts a manifest only when

- its key is the current key (the config sections and input files the unit reads are unchanged),
- its outputs are all there with the contents it recorded (a deleted or changed ``cg/*.h5md`` or
  model is rebuilt), and
- its dependencies are trusted and are the very ones it was computed from (a rebuilt upstream unit
  reruns everything downstream of it).

A study killed at any point therefore resumes losing at most the units in flight (their outputs are
removed and rebuilt). Later units get their inputs' results from the manifests, as the typed objects
the stages returned (:func:`thermocg.study.stages.result_type`), with paths made absolute against
the run directory that reads them: a moved run directory resumes, a copied one uses its own files.
A unit that fails is printed at once (one line: the unit and the reason; the traceback goes to
``RUN_DIR/study/failed/<unit>.txt``) and the units that do not depend on it go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thermocg.config import Config, result_dict, write_resolved
from thermocg.progress import Progress
from thermocg.rundir import RunDir, atomic_write_text, run_dir_lock
from thermocg.study.files import FileHashes, absolute_paths, output_files, relative_paths
from thermocg.study.metrics import json_text, summarize, write_matrices
from thermocg.study.plan import STUDY_FORMAT_VERSION, ModelSpec, Unit, input_hash, plan_units, validate_study
from thermocg.study.stages import Stages, default_stages, result_type

__all__ = ["StudyError", "StudyRun", "Manifest", "manifest_path", "read_manifest", "trusted_manifests",
           "execute_unit", "run_study", "collect_results"]


class StudyError(ValueError):
    """Some units of work failed; the message lists them and their errors (a ValueError, so the CLI
    prints it as an error message)."""


# --------------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------------

@dataclass
class Manifest:
    """A finished unit: its key, its stage's typed result, its wall time and when it finished, the
    sha256 of its output files (``outputs``: path relative to the run directory -> sha256) and of
    the manifests of the units it depends on (``upstream``: unit name -> sha256)."""

    unit: str
    kind: str
    key: str
    deps: list[str]
    state: str | None
    model: ModelSpec | None
    wall_s: float
    finished: str
    result: Any
    outputs: dict[str, str] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)

    def to_dict(self, run_dir: str | os.PathLike) -> dict[str, Any]:
        """Plain JSON; paths in the result inside ``run_dir`` relative to it (listed in
        ``relative_paths``)."""
        result, where = relative_paths(json.loads(json_text(self.result.to_dict(), nan_as_null=False)), run_dir)
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "model": None if self.model is None else dataclasses.asdict(self.model),
                "result": result, "relative_paths": where}

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: str | os.PathLike) -> "Manifest":
        """The inverse of :meth:`to_dict`, the relative paths joined to ``run_dir``."""
        values = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        model = data["model"]
        values["model"] = None if model is None else ModelSpec(model["family"], model["train_set"],
                                                                tuple(model["train_states"]), model.get("size"))
        result = absolute_paths(data["result"], list(data.get("relative_paths", [])), run_dir)
        values["result"] = result_type(data["kind"]).from_dict(result)
        return cls(**values)


def _manifest_file(run_dir: str | os.PathLike, unit_name: str) -> Path:
    return Path(run_dir) / "study" / "units" / f"{unit_name.replace('/', '__')}.json"


def manifest_path(run_dir: str | os.PathLike, unit: Unit) -> Path:
    """Where the manifest of ``unit`` is written: RUN_DIR/study/units/<unit, / as __>.json."""
    return _manifest_file(run_dir, unit.name)


def _load_manifest(path: Path, run_dir: str | os.PathLike) -> tuple[Manifest | None, str]:
    """The manifest at ``path`` and the sha256 of its text; (None, "") when it is missing,
    unreadable or of an older format."""
    try:
        text = path.read_text()
        return Manifest.from_dict(json.loads(text), run_dir), hashlib.sha256(text.encode()).hexdigest()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, ""


def _outputs_intact(run_dir: Path, manifest: Manifest, hashes: FileHashes) -> bool:
    """Whether every output file the manifest recorded is there with the recorded contents."""
    for rel, digest in manifest.outputs.items():
        try:
            if hashes.sha256(run_dir / rel) != digest:
                return False
        except OSError:
            return False
    return True


def read_manifest(run_dir: str | os.PathLike, unit: Unit, *, hashes: FileHashes | None = None) -> Manifest | None:
    """The manifest of a finished unit, or None if it is missing, unreadable, for other inputs, or
    its outputs are gone or changed (its upstream units are not checked: :func:`trusted_manifests`)."""
    run_dir = Path(run_dir).resolve()
    manifest, _ = _load_manifest(manifest_path(run_dir, unit), run_dir)
    if manifest is None or manifest.key != unit.key:
        return None
    return manifest if _outputs_intact(run_dir, manifest, hashes or FileHashes(run_dir)) else None


def trusted_manifests(run_dir: str | os.PathLike, units: list[Unit], *,
                      hashes: FileHashes | None = None) -> dict[str, Manifest]:
    """unit name -> manifest, for the units whose manifests can be trusted (module docstring): the
    current key, outputs intact, and computed from the trusted manifests of their dependencies.
    ``units`` must be in dependency order (:func:`~thermocg.study.plan.plan_units`)."""
    run_dir = Path(run_dir).resolve()
    hashes = hashes or FileHashes(run_dir)
    trusted: dict[str, Manifest] = {}
    digests: dict[str, str] = {}
    for unit in units:
        manifest, digest = _load_manifest(manifest_path(run_dir, unit), run_dir)
        if (manifest is None or manifest.key != unit.key or any(d not in trusted for d in unit.deps)
                or manifest.upstream != {d: digests[d] for d in unit.deps}
                or not _outputs_intact(run_dir, manifest, hashes)):
            continue
        trusted[unit.name] = manifest
        digests[unit.name] = digest
    return trusted


def _upstream(run_dir: str | os.PathLike, unit_name: str) -> Any:
    """The typed result of a finished dependency."""
    manifest, _ = _load_manifest(_manifest_file(run_dir, unit_name), run_dir)
    if manifest is None:
        raise FileNotFoundError(f"{_manifest_file(run_dir, unit_name)}: the unit {unit_name} has not finished")
    return manifest.result


# --------------------------------------------------------------------------------------------------
# one unit
# --------------------------------------------------------------------------------------------------

def _unit_outputs(run_dir: Path, unit: Unit) -> list[Path]:
    rd = RunDir(run_dir)
    if unit.kind == "aa":
        return [rd.allatom(unit.state)]
    if unit.kind == "map":
        return [rd.cg_dataset(unit.state)]
    if unit.kind == "model":
        return [rd.model(unit.model.name)]
    if unit.kind == "md":
        return [rd.md(unit.model.name, unit.state)]
    return []


def _limit_threads(n: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    os.environ["OPENMM_CPU_THREADS"] = str(n)
    torch = sys.modules.get("torch")  # not imported here: a stage that imports it later reads the env
    if torch is not None:
        torch.set_num_threads(n)


def _call_stage(unit: Unit, config: Config, run_dir: Path, stages: Stages) -> Any:
    """Call the stage of ``unit`` with its dependencies' typed results."""
    if unit.kind == "aa":
        return stages.allatom(config, run_dir, unit.state)
    if unit.kind == "map":
        return stages.map(config, run_dir, unit.state)
    if unit.kind == "ref":
        return stages.reference(config, run_dir, unit.state)
    if unit.kind == "model":
        return stages.train(config, run_dir, unit.model)
    trained = _upstream(run_dir, f"model/{unit.model.name}")
    if unit.kind == "md":
        extra = {}
        if config.study.langevin_friction == "match_diffusion":  # the AA diffusion is the friction's target
            extra["reference"] = _upstream(run_dir, f"ref/{unit.state}")
        return stages.simulate(config, run_dir, unit.model, trained, unit.state, **extra)
    if unit.kind == "eval":
        md = _upstream(run_dir, f"md/{unit.model.name}/{unit.state}")
        reference = _upstream(run_dir, f"ref/{unit.state}")
        return stages.evaluate(config, run_dir, unit.model, trained, unit.state, md, reference)
    raise ValueError(f"unknown unit kind {unit.kind!r}")  # pragma: no cover - plan_units makes only these


def _failure_file(run_dir: Path, unit: Unit) -> Path:
    return run_dir / "study" / "failed" / f"{unit.file_stem}.txt"


def execute_unit(unit: Unit, config: Config, run_dir: str, stages: Stages, *_after: Any) -> Any:
    """Run one unit (its dependencies must be finished) and write its manifest; return its result.

    A failure leaves its traceback in RUN_DIR/study/failed/<unit>.txt (removed when the unit later
    succeeds) and is raised. ``_after`` are the Dask futures of its dependencies (only there to
    order the graph).
    """
    run_dir_p = Path(run_dir).resolve()
    try:
        _limit_threads(config.study.threads_per_worker)
        for path in _unit_outputs(run_dir_p, unit):  # a unit in flight when a study was killed: start clean
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        start = time.perf_counter()
        result = _call_stage(unit, config, run_dir_p, stages)
        expected = result_type(unit.kind)
        if not isinstance(result, expected):
            raise TypeError(f"the {unit.kind} stage returned {type(result).__name__}, not a {expected.__name__}")
        hashes = FileHashes(run_dir_p)
        files = [f for path in _unit_outputs(run_dir_p, unit) for f in output_files(path)]
        upstream = {}
        for dep in unit.deps:
            text = _manifest_file(run_dir_p, dep).read_text()
            upstream[dep] = hashlib.sha256(text.encode()).hexdigest()
        manifest = Manifest(
            unit=unit.name, kind=unit.kind, key=unit.key, deps=list(unit.deps), state=unit.state, model=unit.model,
            wall_s=time.perf_counter() - start,
            finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), result=result,
            outputs=hashes.files(files), upstream=upstream)
        atomic_write_text(manifest_path(run_dir_p, unit), json_text(manifest.to_dict(run_dir_p), nan_as_null=False))
    except Exception:
        atomic_write_text(_failure_file(run_dir_p, unit), traceback.format_exc())
        raise
    _failure_file(run_dir_p, unit).unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------------------------------
# many units: in this process or on Dask
# --------------------------------------------------------------------------------------------------

@dataclass
class StudyRun:
    """What :func:`run_study` did: units run, skipped and failed (name -> reason), the warnings it
    printed, and where the report is."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    report: Path | None = None
    wall_s: float = 0.0


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters), for the one-line failure report."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


def _failed(out: StudyRun, progress: Progress, name: str, reason: str) -> None:
    """Record a failed unit and print it now, one line."""
    out.failed[name] = reason
    progress.write(f"thermocg study: {name} failed: {reason}")


def _finished(out: StudyRun, progress: Progress, unit: Unit, result: Any) -> None:
    """Record a finished unit; warn at once about a training that stopped at its epoch cap."""
    out.ran.append(unit.name)
    if unit.kind == "model" and getattr(result, "stopped_at_max_epochs", False):
        message = (f"{unit.name}: training stopped at train.max_epochs ({result.n_epochs}) while still improving "
                   f"(best epoch {result.best_epoch}); more epochs would likely lower its errors: raise "
                   "train.max_epochs")
        out.warnings.append(message)
        progress.write(f"thermocg study: warning: {message}")


def _run_in_process(pending: list[Unit], config: Config, run_dir: str, stages: Stages, out: StudyRun,
                    progress: Progress) -> None:
    for unit in pending:
        bad = [d for d in unit.deps if d in out.failed]
        if bad:
            _failed(out, progress, unit.name, f"not run: {bad[0]} failed")
        else:
            progress.set_postfix(unit.name)
            try:
                result = execute_unit(unit, config, run_dir, stages)
            except Exception as exc:  # a unit's failure must not stop independent units
                _failed(out, progress, unit.name, _one_line(exc))
            else:
                _finished(out, progress, unit, result)
        progress.update(1)


@contextlib.contextmanager
def _thread_env(n: int) -> Iterator[None]:
    """OMP_NUM_THREADS and OPENMM_CPU_THREADS set to ``n`` (inherited by Dask's worker processes),
    restored afterwards."""
    names = ("OMP_NUM_THREADS", "OPENMM_CPU_THREADS")
    before = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(n) for k in names})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _dask_client(study: Any) -> Iterator[Any]:
    """A Dask client: of ``study.scheduler_address``, or of a LocalCluster of ``study.max_workers``
    single-threaded worker processes (closed afterwards)."""
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    # workers may start processes of their own (OpenMM, torch); they must not be daemons
    with dask.config.set({"distributed.worker.daemon": False, "distributed.admin.tick.limit": "1h"}):
        try:
            if study.scheduler_address:
                client = Client(study.scheduler_address)
            else:
                cluster = LocalCluster(n_workers=study.max_workers, threads_per_worker=1, processes=True,
                                       memory_limit=0, dashboard_address=None)
                client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()


def _run_on_dask(pending: list[Unit], config: Config, run_dir: str, stages: Stages, out: StudyRun,
                 progress: Progress) -> None:
    from distributed import as_completed

    by_name = {u.name: u for u in pending}
    with _thread_env(config.study.threads_per_worker), _dask_client(config.study) as client:
        futures: dict[str, Any] = {}
        for unit in pending:
            deps = [futures[d] for d in unit.deps if d in futures]
            futures[unit.name] = client.submit(execute_unit, unit, config, run_dir, stages, *deps,
                                               key=f"{unit.file_stem}-{unit.key[:12]}", pure=False)
        names = {f.key: name for name, f in futures.items()}
        for future in as_completed(list(futures.values())):
            name = names[future.key]
            unit = by_name[name]
            progress.set_postfix(name)
            if future.status == "finished":
                _finished(out, progress, unit, future.result())
            else:
                # Dask fails the dependents of a failed unit with the same exception: name the cause
                bad = [d for d in unit.deps if d in out.failed or (d in futures and futures[d].status == "error")]
                _failed(out, progress, name, f"not run: {bad[0]} failed" if bad else _one_line(future.exception()))
            progress.update(1)


# --------------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------------

def run_study(config: Config, run_dir: str | os.PathLike | None = None, *, stages: Stages | None = None,
              progress: bool | None = None) -> StudyRun:
    """Run (or resume) the whole study; write the matrices and the report.

    Validates the config first (:func:`validate_study`), takes the run directory's lock (the CLI
    already holds it: the lock nests), then runs every unit whose manifest cannot be trusted (module
    docstring), in parallel where the dependencies allow, then the report. A unit that fails is
    printed at once; the failed units are listed in the report and in a :class:`StudyError` raised at
    the end, after the report of what did finish.
    """
    t0 = time.perf_counter()
    validate_study(config)
    run_dir = Path(run_dir if run_dir is not None else config.run_dir).resolve()
    with run_dir_lock(run_dir, command="thermocg study"):
        out = _run_locked(config, run_dir, stages or default_stages(),
                          config.study.progress if progress is None else progress)
    out.wall_s = time.perf_counter() - t0
    if config.study.progress if progress is None else progress:
        print(f"thermocg study: {len(out.ran)} unit(s) run, {len(out.skipped)} up to date, {len(out.failed)} failed "
              f"in {out.wall_s:.0f} s; report: {out.report}", file=sys.stderr)
    if out.failed:
        lines = "\n".join(f"  {name}: {msg}" for name, msg in out.failed.items())
        raise StudyError(f"{len(out.failed)} unit(s) of the study in {run_dir} failed "
                         f"(tracebacks in {run_dir / 'study' / 'failed'}; the report lists them):\n{lines}")
    return out


def _run_locked(config: Config, run_dir: Path, stages: Stages, progress: bool) -> StudyRun:
    hashes = FileHashes(run_dir)
    write_resolved(config, run_dir / "study" / "resolved.yaml")
    units = plan_units(config, hashes=hashes)
    trusted = trusted_manifests(run_dir, units, hashes=hashes)
    out = StudyRun(run_dir)
    pending = [u for u in units if u.name not in trusted]
    out.skipped = [u.name for u in units if u.name in trusted]
    with Progress(len(pending), description="study", unit="units", mode="auto" if progress else "off",
                  interval_s=10.0) as bar:
        if pending:
            use_dask = config.study.max_workers > 1 or config.study.scheduler_address is not None
            runner = _run_on_dask if use_dask else _run_in_process
            runner(pending, config, str(run_dir), stages, out, bar)
    summary = collect_results(config, run_dir, units, failed=out.failed, hashes=hashes)
    out.report = _report_unit(config, run_dir, units, summary, out, hashes)
    unstable = summary["stability"]["unstable"]
    if unstable and progress:
        print(f"thermocg study: {len(unstable)} CG run(s) blew up (listed in the report): {', '.join(unstable)}",
              file=sys.stderr)
    return out


def collect_results(config: Config, run_dir: str | os.PathLike, units: list[Unit] | None = None, *,
                    failed: dict[str, str] | None = None, hashes: FileHashes | None = None) -> dict[str, Any]:
    """The study summary (:func:`thermocg.study.metrics.summarize`) of the trusted manifests:
    states, models, references, evaluations, matrices, verdicts; ``failed`` (unit -> reason) goes
    into it for the report. Missing evaluations are NaN in the matrices."""
    run_dir = Path(run_dir).resolve()
    hashes = hashes or FileHashes(run_dir)
    units = units or plan_units(config, hashes=hashes)
    trusted = trusted_manifests(run_dir, units, hashes=hashes)
    return summarize(config, {name: m.result for name, m in trusted.items()}, failed=failed)


def _report_unit(config: Config, run_dir: Path, units: list[Unit], summary: dict[str, Any], out: StudyRun,
                 hashes: FileHashes) -> Path:
    """The matrices and the report: rerun when their inputs (the trusted manifests, the failures, the
    study and simulate sections) changed or the report's files are gone."""
    from thermocg.report import write_report

    report_dir = RunDir(run_dir).report()
    trusted = trusted_manifests(run_dir, units, hashes=hashes)
    digests = [(unit.name, _load_manifest(manifest_path(run_dir, unit), run_dir)[1])
               for unit in units if unit.name in trusted]
    key = input_hash(STUDY_FORMAT_VERSION, "report", result_dict(config.study), result_dict(config.simulate),
                     sorted(digests), sorted(out.failed.items()))
    marker = run_dir / "study" / "units" / "report.json"
    try:
        done = json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError):
        done = False
    if done and (report_dir / "index.html").exists() and (report_dir / "summary.md").exists():
        out.skipped.append("report")
        return report_dir / "index.html"
    start = time.perf_counter()
    analysis_dir = RunDir(run_dir).analysis() / "study"
    write_matrices(summary, analysis_dir)
    atomic_write_text(analysis_dir / "summary.json", json_text(summary))
    index = write_report(summary, report_dir, run_dir=run_dir)
    atomic_write_text(marker, json.dumps({"unit": "report", "key": key, "wall_s": time.perf_counter() - start}))
    out.ran.append("report")
    return index

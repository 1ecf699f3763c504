"""Running the units of a study: manifests, in-process or on Dask, and the report.

When a unit finishes, a manifest ``RUN_DIR/study/units/<unit>.json`` (key, typed result, wall time)
is written atomically *after* its outputs; a rerun skips every unit whose manifest holds the current
key. A study killed at any point therefore resumes losing at most the units in flight (their outputs
are removed and rebuilt). Later units get their inputs' results from the manifests, as the typed
objects the stages returned (:func:`thermocg.study.stages.result_type`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
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

from thermocg.config import Config, write_resolved
from thermocg.rundir import RunDir, atomic_write_text
from thermocg.study.metrics import json_text, summarize, write_matrices
from thermocg.study.plan import STUDY_FORMAT_VERSION, ModelSpec, Unit, input_hash, plan_units, validate_study
from thermocg.study.stages import Stages, default_stages, result_type

__all__ = ["StudyError", "StudyRun", "Manifest", "manifest_path", "read_manifest", "execute_unit", "run_study",
           "collect_results"]


class StudyError(ValueError):
    """Some units of work failed; the message lists them and their errors (a ValueError, so the CLI
    prints it as an error message)."""


# --------------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------------

@dataclass
class Manifest:
    """A finished unit: its key, its stage's typed result, its wall time and when it finished."""

    unit: str
    kind: str
    key: str
    deps: list[str]
    state: str | None
    model: ModelSpec | None
    wall_s: float
    finished: str
    result: Any

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "model": None if self.model is None else dataclasses.asdict(self.model),
                "result": self.result.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        values = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        model = data["model"]
        values["model"] = None if model is None else ModelSpec(model["family"], model["train_set"],
                                                                tuple(model["train_states"]))
        values["result"] = result_type(data["kind"]).from_dict(data["result"])
        return cls(**values)


def _manifest_file(run_dir: str | os.PathLike, unit_name: str) -> Path:
    return Path(run_dir) / "study" / "units" / f"{unit_name.replace('/', '__')}.json"


def manifest_path(run_dir: str | os.PathLike, unit: Unit) -> Path:
    """Where the manifest of ``unit`` is written: RUN_DIR/study/units/<unit, / as __>.json."""
    return _manifest_file(run_dir, unit.name)


def _load_manifest(path: Path) -> Manifest | None:
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # missing, half-written or of an older format
        return None


def read_manifest(run_dir: str | os.PathLike, unit: Unit) -> Manifest | None:
    """The manifest of a finished unit, or None if it is missing, unreadable or for other inputs."""
    manifest = _load_manifest(manifest_path(run_dir, unit))
    return manifest if manifest is not None and manifest.key == unit.key else None


def _upstream(run_dir: str | os.PathLike, unit_name: str) -> Any:
    """The typed result of a finished dependency."""
    manifest = _load_manifest(_manifest_file(run_dir, unit_name))
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
        return stages.simulate(config, run_dir, unit.model, trained, unit.state)
    if unit.kind == "eval":
        md = _upstream(run_dir, f"md/{unit.model.name}/{unit.state}")
        reference = _upstream(run_dir, f"ref/{unit.state}")
        return stages.evaluate(config, run_dir, unit.model, trained, unit.state, md, reference)
    raise ValueError(f"unknown unit kind {unit.kind!r}")  # pragma: no cover - plan_units makes only these


def execute_unit(unit: Unit, config: Config, run_dir: str, stages: Stages, *_after: Any) -> Any:
    """Run one unit (its dependencies must be finished) and write its manifest; return its result.

    ``_after`` are the Dask futures of its dependencies (only there to order the graph).
    """
    run_dir_p = Path(run_dir)
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
    manifest = Manifest(
        unit=unit.name, kind=unit.kind, key=unit.key, deps=list(unit.deps), state=unit.state, model=unit.model,
        wall_s=time.perf_counter() - start,
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), result=result)
    atomic_write_text(manifest_path(run_dir_p, unit), json_text(manifest.to_dict(), nan_as_null=False))
    return result


# --------------------------------------------------------------------------------------------------
# many units: in this process or on Dask
# --------------------------------------------------------------------------------------------------

@dataclass
class StudyRun:
    """What :func:`run_study` did: units run, skipped and failed, and where the report is."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: Path | None = None
    wall_s: float = 0.0


def _write_failure(run_dir: str, unit: Unit) -> None:
    path = Path(run_dir) / "study" / "failed" / f"{unit.file_stem}.txt"
    atomic_write_text(path, traceback.format_exc())


def _run_in_process(pending: list[Unit], config: Config, run_dir: str, stages: Stages, out: StudyRun, bar: Any) -> None:
    for unit in pending:
        bad = [d for d in unit.deps if d in out.failed]
        if bad:
            out.failed[unit.name] = f"skipped: {bad[0]} failed"
        else:
            bar.set_postfix_str(unit.name)
            try:
                execute_unit(unit, config, run_dir, stages)
                out.ran.append(unit.name)
            except Exception as exc:  # a unit's failure must not stop independent units
                out.failed[unit.name] = f"{type(exc).__name__}: {exc}"
                _write_failure(run_dir, unit)
        bar.update(1)


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


def _run_on_dask(pending: list[Unit], config: Config, run_dir: str, stages: Stages, out: StudyRun, bar: Any) -> None:
    from distributed import as_completed

    with _thread_env(config.study.threads_per_worker), _dask_client(config.study) as client:
        futures: dict[str, Any] = {}
        for unit in pending:
            deps = [futures[d] for d in unit.deps if d in futures]
            futures[unit.name] = client.submit(execute_unit, unit, config, run_dir, stages, *deps,
                                               key=f"{unit.file_stem}-{unit.key[:12]}", pure=False)
        names = {f.key: name for name, f in futures.items()}
        for future in as_completed(list(futures.values())):
            name = names[future.key]
            bar.set_postfix_str(name)
            if future.status == "finished":
                out.ran.append(name)
            else:
                exc = future.exception()
                out.failed[name] = f"{type(exc).__name__}: {exc}"
            bar.update(1)


# --------------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------------

def run_study(config: Config, run_dir: str | os.PathLike | None = None, *, stages: Stages | None = None,
              progress: bool | None = None) -> StudyRun:
    """Run (or resume) the whole study; write the matrices and the report.

    Validates the config first (:func:`validate_study`), then runs every unit whose manifest is
    missing or stale, in parallel where the dependencies allow, then the report. Units that fail
    are listed in a :class:`StudyError` raised at the end, after the report of what did finish.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    validate_study(config)
    run_dir = Path(run_dir if run_dir is not None else config.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = stages or default_stages()
    progress = config.study.progress if progress is None else progress
    write_resolved(config, run_dir / "study" / "resolved.yaml")
    units = plan_units(config)
    out = StudyRun(run_dir)
    pending = []
    for unit in units:
        if read_manifest(run_dir, unit) is not None:
            out.skipped.append(unit.name)
        else:
            pending.append(unit)
    bar = tqdm(total=len(pending), desc="study", unit="unit", disable=not progress)
    try:
        if pending:
            use_dask = config.study.max_workers > 1 or config.study.scheduler_address is not None
            runner = _run_on_dask if use_dask else _run_in_process
            runner(pending, config, str(run_dir), stages, out, bar)
    finally:
        bar.close()
    summary = collect_results(config, run_dir, units)
    out.report = _report_unit(config, run_dir, units, summary, out)
    out.wall_s = time.perf_counter() - t0
    if progress:
        print(f"thermocg study: {len(out.ran)} unit(s) run, {len(out.skipped)} up to date, {len(out.failed)} failed "
              f"in {out.wall_s:.0f} s; report: {out.report}", file=sys.stderr)
    if out.failed:
        lines = "\n".join(f"  {name}: {msg}" for name, msg in out.failed.items())
        raise StudyError(f"{len(out.failed)} unit(s) of the study in {run_dir} failed "
                         f"(tracebacks in {run_dir / 'study' / 'failed'}):\n{lines}")
    return out


def collect_results(config: Config, run_dir: str | os.PathLike, units: list[Unit] | None = None) -> dict[str, Any]:
    """The study summary (:func:`thermocg.study.metrics.summarize`) of the finished units' manifests:
    states, models, references, evaluations, matrices, verdicts. Missing evaluations (failed units)
    are NaN in the matrices."""
    results = {}
    for unit in units or plan_units(config):
        manifest = read_manifest(run_dir, unit)
        if manifest is not None:
            results[unit.name] = manifest.result
    return summarize(config, results)


def _report_unit(config: Config, run_dir: Path, units: list[Unit], summary: dict[str, Any], out: StudyRun) -> Path:
    """The matrices and the report: rerun when their inputs (the finished units and the study
    section) changed or the report's files are gone."""
    from thermocg.report import write_report

    report_dir = RunDir(run_dir).report()
    key = input_hash(STUDY_FORMAT_VERSION, "report", config.study, sorted(
        (u.name, u.key) for u in units if read_manifest(run_dir, u) is not None))
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

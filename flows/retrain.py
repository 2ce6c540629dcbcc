"""The retrain flow: raw data to a gated champion, as Prefect tasks over the very step
functions the CLI and the DVC stages call (``flows/steps.py``).

ingest -> validate -> split -> features -> embed -> profiles (+ a new Feast online store version) ->
train (search, evaluate beside the baselines, gate, register) -> package.

- One run at a time: the flow holds the run lock (``flows.run_lock``) that every door takes;
  the deployment ``decayrec schedule`` makes allows one run, and cancels (skip) or queues one
  due while another is in flight (``runs.on_overlap``).
- Time limits and retries (``params.runs``): a task past its step's limit fails the run; a
  task retries with backoff when its failure is transient (a refused or dropped
  Redis/PostgreSQL connection, a timeout); a data error fails at once, since the same data
  would fail the same way. Every ending is recorded and announced (``flows.runs``).
- Caching: each task's cache key is a hash of its input files, its ``params.yaml`` sections
  and the source files it runs, all from the step table (``flows/pipeline.py``) that
  dvc.yaml is generated from, so a rerun on unchanged data skips finished work. A task whose
  output files are missing runs anyway (and refreshes its cache entry): a skipped step must
  have left its files.
- A validation failure stops the run before anything downstream: the champion, the feature
  tables and the online store stay as they were, and the run's state carries the report.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.config import Params, RunsConfig, load_params
from flows.pipeline import BY_NAME, Step
from flows.run_lock import RunBusy
from flows.runs import guarded, record, timed_out

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def is_transient(exc: BaseException | None) -> bool:
    """A connection or timeout failure anywhere in the exception's chain."""
    kinds: list[type] = [ConnectionError, TimeoutError]
    try:
        import redis.exceptions

        kinds += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:
        pass
    try:
        import psycopg

        kinds.append(psycopg.OperationalError)
    except ImportError:
        pass
    try:
        import sqlalchemy.exc

        kinds.append(sqlalchemy.exc.OperationalError)
    except ImportError:
        pass
    seen = set()
    while exc is not None and id(exc) not in seen:
        if timed_out(exc):  # a step past its own limit is hung: running it again would hang again
            return False
        if isinstance(exc, tuple(kinds)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def retry_transient(task_, task_run, state) -> bool:
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as err:  # noqa: BLE001 - the failure itself is what we inspect
            exc = err
    return is_transient(exc)


def file_digest(paths: list[Path]) -> str | None:
    """sha256 over the files (folders walked in sorted order); None if any is missing."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        if not path.exists():
            return None
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def cache_key(step: Step):
    """A Prefect ``cache_key_fn`` for ``step``: its input files, its params sections and its
    source files; None (no cache) while an input is missing."""

    def key(context, arguments) -> str | None:
        params: Params = arguments["params"]
        files = file_digest(step.reads(params))
        if files is None:
            return None
        dumped = params.model_dump(mode="json", by_alias=True)
        config = json.dumps({key: _setting(dumped, key) for key in step.sections}, sort_keys=True)
        code = file_digest([ROOT / f for f in step.code()])
        return hashlib.sha256(f"{step.name}|{files}|{config}|{code}".encode()).hexdigest()

    return key


def _setting(params: dict, key: str):
    """A section (``train``) or one key in it (``lm.model``) of the dumped params."""
    for part in key.split("."):
        params = params[part]
    return params


def _task(name: str, cached: bool = True):
    runs = RunsConfig()  # the defaults; a run's own params.runs apply in ``call``
    options = dict(name=name, retries=runs.retries, retry_delay_seconds=runs.backoff_s, retry_condition_fn=retry_transient)
    if cached:
        options.update(cache_key_fn=cache_key(BY_NAME[name]), persist_result=True)
    return task(**options)


def call(step, params: Params):
    """Run a task within its time limit and retries (``params.runs``); with its outputs
    missing, past its cache (and refresh the entry)."""
    runs = params.runs
    step = step.with_options(timeout_seconds=runs.timeout_s.get(step.name), retries=runs.retries,
                             retry_delay_seconds=runs.backoff_s)
    if any(not Path(p).exists() for p in BY_NAME[step.name].outputs(params)):
        step = step.with_options(refresh_cache=True)
    return step(params)


@_task("ingest", cached=False)
def ingest(params: Params) -> dict:
    return BY_NAME["ingest"].run(params)  # cheap; what follows is keyed on its output's content


@_task("validate")
def validate(params: Params) -> dict:
    summary = BY_NAME["validate"].run(params)
    create_markdown_artifact(
        key="validation-summary",
        markdown=(f"# Validation passed: {params.data.dataset}\n\n"
                  f"- events {summary['events']:,}, users {summary['users']:,}, items {summary['items']:,}\n"
                  f"- time span {summary['first_event']} .. {summary['last_event']}\n"
                  f"- quarantined rows {summary['quarantined']}\n- Data Docs: {summary['docs']}\n"),
        description="Great Expectations suites on the ingested tables",
    )
    return summary


@_task("split")
def split(params: Params) -> dict:
    return BY_NAME["split"].run(params)


@_task("features")
def features(params: Params) -> dict:
    return BY_NAME["features"].run(params)


@_task("embed")
def embed(params: Params) -> dict:
    return BY_NAME["embed"].run(params)


@_task("profiles")
def profiles(params: Params) -> dict:
    return BY_NAME["profiles"].run(params)


@_task("train")
def train(params: Params) -> dict:
    summary = BY_NAME["train"].run(params)
    rows = [
        {"protocol": protocol, "model": name, **{k: row.get(k) for k in ("ndcg_at_10", "recall_at_10", "coverage_at_10", "ild_at_10")}}
        for protocol, models in summary["protocols"].items()
        for name, row in sorted(models.items(), key=lambda item: -item[1].get("ndcg_at_10", 0))
    ]
    create_table_artifact(key="evaluation-table", table=rows, description="Test metrics @10: trained models beside the baselines")
    verdict = "promoted" if summary["promoted"] else "not promoted"
    create_markdown_artifact(
        key="training-report",
        markdown=(f"# {summary['model']} ({summary['kind']}): {verdict}\n\n" + "".join(f"- {r}\n" for r in summary["reasons"])
                  + f"\nchampion: {summary['champion']}\n\nsummary: {params.train.out_dir / 'summary.json'}\n"),
    )
    return summary


@_task("package")
def package(params: Params) -> dict:
    summary = BY_NAME["package"].run(params)
    create_markdown_artifact(
        key="bento",
        markdown=f"# Bento {summary['bento']}\n\nmodel {summary['model']}\n\nserve: `bentoml serve {summary['bento']}`\n",
    )
    return summary


# The steps log through the package's own loggers, and Prefect keeps a run's records from its
# own loggers only: without this, the run's page in the UI lacks every step's lines.
STEP_LOGGERS = ("flows", "features", "models", "serving")


@contextmanager
def step_logs_to_prefect() -> Iterator[None]:
    """While the block runs, the steps' INFO lines also go to the flow run's logs (what
    ``PREFECT_LOGGING_EXTRA_LOGGERS`` does, without needing the environment set)."""
    from prefect.logging.handlers import APILogHandler

    handler = APILogHandler(level=logging.INFO)
    loggers = [logging.getLogger(name) for name in STEP_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


@flow(name="retrain")
def retrain(params_path: str = "params.yaml", dataset: str | None = None):
    """Raw data to a gated champion. Each step runs only when its inputs changed. Holds the
    run lock: while another run holds it, this one ends Cancelled (skipped), having done nothing."""
    from prefect.runtime import flow_run
    from prefect.states import Cancelled

    logger = get_run_logger()
    params = load_params(params_path, dataset=dataset)

    def steps() -> dict:
        out = {"ingest": call(ingest, params)}
        out["validate"] = call(validate, params)  # a failure raises here: nothing downstream runs
        for step in (split, features, embed, profiles, train, package):
            out[step.name] = call(step, params)
        return out

    try:
        with step_logs_to_prefect():
            out = guarded(params, f"prefect flow run {flow_run.name}", steps, gate=lambda result: result["train"])
    except RunBusy as error:
        return Cancelled(message=f"skipped: {error}")
    logger.info("retrain: %s (%s) %s; champion %s", out["train"]["model"], out["train"]["kind"],
                "promoted" if out["train"]["promoted"] else "not promoted", out["train"]["champion"])
    return out


@contextmanager
def watch_skipped(params: Params, deployment: str, every_s: float = 10.0) -> Iterator[None]:
    """While the block runs, record (and announce) each run of ``deployment`` that Prefect
    cancelled because one was in flight: those never start, so no hook of theirs runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    seen: set = set()
    stop = threading.Event()

    def look() -> None:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLED]))))
        for run in runs:
            if run.id not in seen:
                seen.add(run.id)
                record(params, "skipped", f"prefect flow run {run.name}",
                       reason=(run.state.message if run.state else None) or "cancelled while another run was in flight")

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                look()
            except Exception as error:  # noqa: BLE001 - the server briefly away: look again next time
                log.warning("could not read the deployment's runs (%s)", error)

    thread = threading.Thread(target=loop, name="watch-skipped", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()

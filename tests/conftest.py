"""Shared fixtures: small real data cut from the bundled MovieLens set, and isolated paths."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Offline machines: no library may phone home or reach a model hub during tests.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# Models saved by tests go to a store of their own, never the user's ~/bentoml.
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="decayrec-bentoml-"))

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "raw" / "ml-latest-small"
MIRROR = os.environ.get("DECAYREC_DATA_MIRROR")

needs_mirror = pytest.mark.skipif(
    not (MIRROR and (Path(MIRROR) / "ml-1m").is_dir()),
    reason="DECAYREC_DATA_MIRROR with ml-1m/ is not set",
)


@pytest.fixture
def ml_small_csv(tmp_path: Path) -> dict[str, Path]:
    """The first 3,000 ratings of ml-latest-small and the movies they use, as CSV files."""
    lines = (BUNDLED / "ratings.csv").read_text().splitlines()[:3001]
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("\n".join(lines) + "\n")
    movies = tmp_path / "movies.csv"
    movies.write_text((BUNDLED / "movies.csv").read_text())
    return {"events": ratings, "items": movies}


@pytest.fixture
def params_for(tmp_path: Path):
    """Params whose every output lives under tmp_path and whose floors suit small data."""
    from flows.config import load_params

    def make(**data_overrides):
        params = load_params(ROOT / "params.yaml")
        data = params.data.model_copy(
            update={"bundled_dir": ROOT / "data" / "raw", "interim_dir": tmp_path / "interim", **data_overrides}
        )
        validation = params.validation.model_copy(
            update={
                "validated_dir": tmp_path / "validated",
                "docs_dir": tmp_path / "docs", "checks_docs_dir": tmp_path / "checks-docs",
                "min_events": 100,
            }
        )
        split = params.split.model_copy(update={"out_dir": tmp_path / "splits"})
        runs = params.runs.model_copy(update={"lock": tmp_path / "run.lock", "status": tmp_path / "runs" / "status.json"})
        store = params.features.store.model_copy(update={"local_dir": tmp_path / "feast"})
        features = params.features.model_copy(
            update={"out_dir": tmp_path / "features", "profiles_dir": tmp_path / "profiles", "store": store})
        lm = params.lm.model_copy(update={"out": tmp_path / "embeddings" / "items.npz"})
        return params.model_copy(update={"data": data, "validate_": validation, "split": split, "runs": runs,
                                         "features": features, "lm": lm})

    return make


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """A copy of params.yaml whose outputs (Data Docs included) go under tmp_path."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["bundled_dir"] = str(ROOT / "data" / "raw")
    raw["data"]["interim_dir"] = str(tmp_path / "interim")
    raw["validate"].update(validated_dir=str(tmp_path / "validated"), docs_dir=str(tmp_path / "docs"), checks_docs_dir=str(tmp_path / "checks-docs"), min_events=100)
    raw["split"]["out_dir"] = str(tmp_path / "splits")
    raw["runs"].update(lock=str(tmp_path / "run.lock"), status=str(tmp_path / "runs" / "status.json"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def small_csv(folder: Path, rows: int = 3000) -> dict[str, Path]:
    """The first ``rows`` ratings of ml-latest-small and only the movies they rate."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_csv(BUNDLED / "ratings.csv", nrows=rows)
    movies = pd.read_csv(BUNDLED / "movies.csv")
    movies = movies[movies["movieId"].isin(ratings["movieId"])]
    paths = {"events": folder / "ratings.csv", "items": folder / "movies.csv"}
    ratings.to_csv(paths["events"], index=False)
    movies.to_csv(paths["items"], index=False)
    return paths


def write_params(folder: Path, csv: dict[str, Path], store: dict | None = None) -> Path:
    """params.yaml for a small, fast run whose every output lives under ``folder``."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    out = folder / "out"
    raw["data"].update(dataset="csv", interim_dir=str(out / "interim"),
                       tabular={"events": str(csv["events"]), "items": str(csv["items"])})
    raw["validate"].update(validated_dir=str(out / "validated"), docs_dir=str(out / "docs"), checks_docs_dir=str(out / "checks-docs"), min_events=100)
    raw["split"].update(protocols=["P2"], out_dir=str(out / "splits"))
    raw["evaluate"].update(protocols=["P2"], out_dir=str(out / "evaluation"),
                           models={"pop": {}, "itemknn_decay": {"k": [20], "half_life_days": [7]}})
    raw["features"].update(out_dir=str(out / "features"), profiles_dir=str(out / "profiles"),
                           store=store or {"profile": "local", "project": "flowtest", "local_dir": str(out / "feast")})
    raw["lm"].update(cache_dir=str(folder / "lm_cache"), out=str(out / "embeddings" / "items.npz"), progress=False)
    raw["train"].update(
        protocols=["P2"], trials=1, p99_users=10, registry_dir=str(out / "registry"), out_dir=str(out / "training"),
        candidates={"cf": 30, "ease": 20, "lm": 10, "pop": 10, "recent_items": 3},
        scorer={**raw["train"]["scorer"], "hidden": 16, "proj": 4, "max_epochs": 2, "batch_users": 32},
        sequence={**raw["train"]["sequence"], "dim": 16, "blocks": 1, "max_len": 20, "epochs": 2, "batch_size": 16},
    )
    raw["serving"].update(bundle_dir=str(out / "serving"), events_log=str(out / "live" / "events.jsonl"))
    raw["runs"].update(lock=str(out / "run.lock"), status=str(out / "runs" / "status.json"))
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """params.yaml of a small run taken through every step up to a promoted champion (no
    Prefect: the steps themselves); the serving tests package it their own way. The sequence
    model is off, so the champion is always the scorer, whose serving features are tested."""
    import yaml

    from flows.config import load_params
    from flows.pipeline import run_all

    folder = tmp_path_factory.mktemp("trained")
    path = write_params(folder, small_csv(folder / "raw"))
    raw = yaml.safe_load(path.read_text())
    raw["train"]["sequence"]["enabled"] = False
    path.write_text(yaml.safe_dump(raw))
    names = ["ingest", "validate", "split", "features", "embed", "profiles", "train"]
    results, _ = run_all(load_params(path), names)
    assert results["train"]["promoted"], results["train"]["reasons"]
    return path


def own_store(trained: Path, folder: Path, store: dict | None = None) -> Path:
    """params.yaml of the ``trained`` run with a Feast store, feature tables and serving
    folders of its own, loaded from the same data: for tests that post live events, which
    would otherwise change the online state other tests read."""
    import yaml

    from flows.config import load_params
    from flows.steps import features_step, profiles_step

    raw = yaml.safe_load(trained.read_text())
    raw["features"].update(out_dir=str(folder / "features"), profiles_dir=str(folder / "profiles"),
                           store=store or {**raw["features"]["store"], "local_dir": str(folder / "feast")})
    raw["serving"].update(bundle_dir=str(folder / "serving"), events_log=str(folder / "live" / "events.jsonl"))
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    features_step(params)
    profiles_step(params)
    return path


def wait_ready(url: str, process, log: Path, timeout_s: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the end of ``log`` when ``process`` exits
    or time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(process, group: bool = False) -> None:
    """SIGTERM to a process we started (its whole group with ``group``), SIGKILL after 30 s."""
    import signal
    import subprocess

    send = (lambda sig: os.killpg(process.pid, sig)) if group else process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1 backed by a PostgreSQL database of its own
    (SQLite-backed servers lock under load); the process and the database go at the end."""
    import subprocess
    import sys
    import uuid

    import sqlalchemy
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    home = tmp_path_factory.mktemp("prefect")
    database = f"prefect_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{database}"'))
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_ready(f"{url}/health", server, home / "server.log", 120, "prefect server")
        updates = {PREFECT_API_URL: url, PREFECT_HOME: home, PREFECT_LOCAL_STORAGE_PATH: home / "storage"}
        with temporary_settings(updates=updates):
            yield {"url": url, "home": home, "database": database, "env": env, "pid": server.pid}
    finally:
        stop(server)
        log.close()
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


# A catalogue title that runs script if a page ever inserts it as HTML.
XSS_TITLE = '<img src=x onerror="document.body.dataset.pwned=1">'
WRITE_TOKEN = "test-write-token"


def serve(tag: str, folder: Path, env: dict[str, str], host: str | None = "127.0.0.1"):
    """`bentoml serve <tag>` on a free port (``host`` None: the bento's own default bind);
    returns (process, base url, log path) once it is ready."""
    import subprocess
    import sys

    port = free_port()
    log_path = folder / f"serve-{port}.log"
    args = [str(Path(sys.executable).parent / "bentoml"), "serve", tag, "--port", str(port)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(args + (["--host", host] if host else []), env={**os.environ, **env}, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/readyz", server, log_path, 180, "bento")
    except BaseException:
        stop(server, group=True)
        raise
    return server, base, log_path


@pytest.fixture(scope="session")
def served(trained, tmp_path_factory):
    """The trained champion packaged as the package step does, with every catalogue title
    carrying markup (``XSS_TITLE``), served by its tag with a write token set; the server and
    its workers go at the end."""
    import bentoml
    import pandas as pd

    from flows.config import load_params
    from models.registry import Registry
    from serving.bundle import build_bento, write_bundle

    folder = tmp_path_factory.mktemp("served")
    params = load_params(own_store(trained, folder))
    registry = Registry(params.train.registry_dir)
    tag = registry.champion()
    bundle = write_bundle(params, tag, registry.info(tag), Path(params.serving.bundle_dir))
    items = pd.read_parquet(bundle / "items.parquet")
    items["title"] = items["title"] + " " + XSS_TITLE
    items.to_parquet(bundle / "items.parquet", index=False)
    bento = build_bento(params, tag)
    env = {"DECAYREC_EVENTS_LOG": str(folder / "events.jsonl"), "DECAYREC_METRICS": "false",
           params.serving.token_env: WRITE_TOKEN}
    server, base, log = serve(bento, folder, env)
    try:
        yield {"base": base, "bento": bentoml.bentos.get(bento), "summary": {"model": tag, "bento": bento}, "folder": folder,
               "params": params, "log": log, "events_log": folder / "events.jsonl", "env": env}
    finally:
        stop(server, group=True)  # the server and the workers it started


def call(base: str, path: str, body=None, token: str | None = WRITE_TOKEN, data: bytes | None = None,
         headers: dict | None = None) -> tuple[int, dict | list | str]:
    """One HTTP request: JSON ``body`` (or raw ``data``) POSTed, else a GET; (status, parsed reply)."""
    import json
    import urllib.error
    import urllib.request

    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            text, status = reply.read().decode(), reply.status
    except urllib.error.HTTPError as error:
        text, status = error.read().decode(), error.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


@pytest.fixture(params=["local", "production"])
def store_cfg(request, tmp_path):
    """Feature settings with a Feast store of their own (the feature-store tests): SQLite under
    tmp_path, or a fresh project, Redis db 3 and PG schema."""
    import uuid

    from features.store import drop_production
    from flows.config import FeaturesConfig, StoreConfig

    name = f"t{uuid.uuid4().hex[:10]}"
    cfg = StoreConfig(
        profile=request.param, project=name, local_dir=tmp_path / "feast",
        redis="127.0.0.1:6379,db=3", postgres_schema=name,
    )
    yield FeaturesConfig(out_dir=tmp_path / "features", profiles_dir=tmp_path / "profiles", store=cfg)
    if request.param == "production":
        drop_production(cfg)

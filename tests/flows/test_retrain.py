"""The retrain flow on a real Prefect server (PostgreSQL-backed): happy path, caching of a
rerun, a validation failure that halts and leaves everything as it was, and a transient
Redis failure that is retried."""
from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BUNDLED, ROOT, free_port, small_csv, stop, write_params

STEPS = ["ingest", "validate", "split", "features", "embed", "profiles", "train", "package"]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(file.relative_to(folder)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def task_states(state, tasks: int = len(STEPS), timeout: float = 60.0) -> dict[str, str]:
    """Task name -> final state name for the flow run behind ``state``, once the server has
    recorded ``tasks`` task runs in a final state (it records task states asynchronously,
    so they can trail the flow's own end)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        final = [run for run in runs if run.state is not None and run.state.is_final()]
        if len(final) >= tasks or time.monotonic() > deadline:
            return {run.name.rsplit("-", 1)[0]: run.state.name for run in final}
        time.sleep(0.5)


@pytest.fixture(scope="module")
def first_run(prefect_api, tmp_path_factory):
    from flows.retrain import retrain

    folder = tmp_path_factory.mktemp("retrain")
    path = write_params(folder, small_csv(folder / "raw"))
    state = retrain(params_path=str(path), return_state=True)
    return {"folder": folder, "params": path, "state": state, "result": state.result(raise_on_failure=False)}


def test_the_flow_runs_every_step_and_promotes_a_first_champion(first_run):
    from models.registry import Registry

    assert first_run["state"].is_completed(), first_run["state"].message
    result = first_run["result"]
    assert set(result) == set(STEPS)
    assert result["train"]["promoted"] and result["train"]["champion"] == result["train"]["model"]
    out = first_run["folder"] / "out"
    assert Registry(out / "registry").champion() == result["train"]["model"]
    assert (out / "features" / "user_interest.parquet").exists() and (out / "embeddings" / "items.npz").exists()
    assert set(task_states(first_run["state"]).values()) == {"Completed"}
    import bentoml

    bento = bentoml.bentos.get(result["package"]["bento"])
    assert [str(m.tag) for m in bento.info.all_models] == [result["train"]["champion"]]


def test_the_flow_publishes_the_validation_summary_and_the_evaluation_table(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = first_run["state"].state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_key = {a.key: a for a in artifacts}
    assert {"validation-summary", "evaluation-table", "training-report", "bento"} <= set(by_key)
    assert "Validation passed" in by_key["validation-summary"].data
    assert "scorer" in str(by_key["evaluation-table"].data) and "itemknn_decay" in str(by_key["evaluation-table"].data)


def test_each_steps_own_log_lines_reach_the_flow_runs_logs(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run_id = first_run["state"].state_details.flow_run_id
    deadline, messages = time.monotonic() + 30, []
    while time.monotonic() < deadline:  # the server takes logs in batches
        messages = []
        with get_client(sync_client=True) as client:
            while page := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), offset=len(messages)):
                messages += [entry.message for entry in page]
        if any(m.startswith("package: ") for m in messages):
            break
        time.sleep(0.5)
    for line in ("split: P2", "train: P2 baselines for comparison", "package: "):
        assert any(m.startswith(line) for m in messages), (line, messages[:20])


def test_a_rerun_on_unchanged_data_skips_every_finished_step(first_run):
    from flows.retrain import retrain

    state = retrain(params_path=str(first_run["params"]), return_state=True)
    assert state.is_completed(), state.message
    states = task_states(state)
    cached = sorted(name for name, s in states.items() if s == "Cached")
    assert cached == sorted(STEPS[1:])  # ingest is cheap and always reads the raw files again
    assert state.result()["train"]["model"] == first_run["result"]["train"]["model"]  # no new model


def test_a_validation_failure_halts_the_run_and_touches_nothing(first_run):
    from flows.retrain import retrain
    from models.registry import Registry

    folder, out = first_run["folder"], first_run["folder"] / "out"
    bad = pd.read_csv(folder / "raw" / "ratings.csv")
    bad.loc[7, "rating"] = 9.0  # outside [0.5, 5]
    bad_csv = folder / "bad" / "ratings.csv"
    bad_csv.parent.mkdir()
    bad.to_csv(bad_csv, index=False)
    raw = yaml.safe_load(first_run["params"].read_text())
    raw["data"]["tabular"]["events"] = str(bad_csv)
    path = folder / "bad" / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    before = {name: digest(out / name) for name in ("validated", "splits", "features", "profiles", "registry", "feast")}
    champion = Registry(out / "registry").champion()

    state = retrain(params_path=str(path), return_state=True)

    assert state.is_failed()
    assert "value" in state.message and "failed" in state.message  # the run's state says why
    states = task_states(state, tasks=2)  # ingest and validate
    assert states["validate"] == "Failed" and not set(states) & {"split", "features", "embed", "profiles", "train"}
    assert {name: digest(out / name) for name in before} == before
    assert Registry(out / "registry").champion() == champion


def test_a_transient_redis_failure_is_retried_then_succeeds(prefect_api, tmp_path, monkeypatch):
    """The first attempt of the profiles task (which loads the online store) meets a closed
    port; the retry meets Redis."""
    from prefect import flow

    from features.online import published
    from features.store import drop_production, online_users, open_store
    from flows import retrain as module
    from flows import steps
    from flows.config import StoreConfig, load_params
    from flows.pipeline import BY_NAME

    name = f"flow{uuid.uuid4().hex[:8]}"
    store = {"profile": "production", "project": name, "local_dir": str(tmp_path / "feast"),
             "redis": "127.0.0.1:6379,db=6", "postgres_schema": name}
    params = load_params(write_params(tmp_path, small_csv(tmp_path / "raw"), store))
    steps.ingest_step(params)
    steps.validate_step(params)
    steps.features_step(params)
    steps.embed_step(params)
    attempts = []
    real = steps.profiles_step

    def first_attempt_on_a_closed_port(p):
        attempts.append(p.features.store.redis)
        if len(attempts) == 1:
            closed = p.features.store.model_copy(update={"redis": f"127.0.0.1:{free_port()},db=6"})
            p = p.model_copy(update={"features": p.features.model_copy(update={"store": closed})})
        return real(p)

    monkeypatch.setitem(BY_NAME, "profiles", dataclasses.replace(BY_NAME["profiles"], run=first_attempt_on_a_closed_port))

    @flow
    def profiles_only(p):
        return module.profiles.with_options(retry_delay_seconds=0.5)(p, return_state=True)

    try:
        state = profiles_only(params)
        assert state.is_completed() and len(attempts) == 2
        assert state.name == "Completed" and attempts[1] == "127.0.0.1:6379,db=6"
        online = online_users(open_store(published(params.features)), [1])
        assert online["user_id"].tolist() == [1]
    finally:
        drop_production(StoreConfig(**store))


def test_a_data_error_is_not_retried():
    from flows.retrain import is_transient
    from features.errors import DataError

    assert not is_transient(DataError("events.csv", "range", "rating above 5", column="rating", row=7))
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError as low:
            raise RuntimeError("materialize failed") from low
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


def test_schedule_creates_a_cron_deployment_whose_triggered_run_completes(prefect_api, tmp_path):
    """`decayrec schedule` on the real server: the deployment exists with its cron, a run
    triggered now completes, and the serve process is stopped by its id."""
    import subprocess
    import sys
    import time

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    path = write_params(tmp_path, small_csv(tmp_path / "raw"))
    env = {**prefect_api["env"], "PREFECT_API_URL": prefect_api["url"], "PREFECT_HOME": str(tmp_path / "serve_home")}
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "decayrec"), "--params", str(path), "schedule", "--cron", "0 3 * * *",
         "--name", "nightly"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while True:
                try:
                    deployment = client.read_deployment_by_name("retrain/nightly")
                    break
                except Exception:  # noqa: BLE001 - not created yet
                    if serve.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
                    time.sleep(1)
        crons = [s.schedule.cron for s in deployment.schedules]
        assert crons == ["0 3 * * *"] and deployment.parameters["params_path"] == str(path)
        run = run_deployment("retrain/nightly", timeout=600)
        assert run.state.is_completed(), (run.state.message, (tmp_path / "serve.log").read_text()[-3000:])
        assert (tmp_path / "out" / "registry" / "champion.json").exists()
    finally:
        stop(serve)
        log.close()


def test_newer_events_load_a_new_online_version_that_the_new_bundle_switches_to(prefect_api, tmp_path):
    """Move the cut time forward: the features step reruns, the new tables are loaded into a
    version of their own beside the served one, and the bundle switches to it; the version
    before stays for a service still on the previous bento. The gate decides the model."""
    from features.online import versions
    from features.store import online_users, open_store
    from flows.config import load_params
    from flows.retrain import retrain
    from models.registry import Registry
    from serving.bundle import served_store

    events = pd.read_csv(BUNDLED / "ratings.csv", nrows=3000)
    movies = pd.read_csv(BUNDLED / "movies.csv")
    cut = events["timestamp"].quantile(0.8)
    raw = tmp_path / "raw"
    raw.mkdir()
    movies[movies["movieId"].isin(events["movieId"])].to_csv(raw / "movies.csv", index=False)
    events[events["timestamp"] <= cut].to_csv(raw / "ratings.csv", index=False)
    path = write_params(tmp_path, {"events": raw / "ratings.csv", "items": raw / "movies.csv"})
    first = retrain(params_path=str(path), return_state=True)
    assert first.is_completed(), first.message
    params = load_params(path)
    old = served_store(params.serving.bundle_dir)
    user = int(events.loc[events["timestamp"] > cut, "userId"].iloc[-1])
    before = online_users(open_store(old), [user])["last_event_s"].iloc[0]

    events.to_csv(raw / "ratings.csv", index=False)  # the newer events arrive
    second = retrain(params_path=str(path), return_state=True)
    assert second.is_completed(), second.message
    assert task_states(second)["features"] == "Completed"  # inputs changed: not cached
    new = served_store(params.serving.bundle_dir)
    assert new.project != old.project and second.result()["package"]["online_project"] == new.project
    assert versions(params.features.store) == sorted([old.project, new.project])
    assert online_users(open_store(new), [user])["last_event_s"].iloc[0] == events.loc[events["userId"] == user, "timestamp"].max()
    assert online_users(open_store(old), [user])["last_event_s"].iloc[0] == before  # untouched
    result = second.result()["train"]
    registry = Registry(params.train.registry_dir)
    expected = result["model"] if result["promoted"] else first.result()["train"]["model"]
    assert registry.champion() == expected
    assert [e["action"] for e in registry.history()] == ["promote"] * (1 + result["promoted"])

"""One run at a time, bounded steps, and a record and a notice for every ending
(flows/run_lock.py, flows/runs.py): real processes, the real CLI, a real HTTP receiver."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, small_csv, stop, write_params

from flows.run_lock import RunBusy, holder, run_lock
from flows.runs import StepTimeout, time_limit

DECAYREC = str(Path(sys.executable).parent / "decayrec")
HOLD = "import sys, time; from flows.run_lock import run_lock\nwith run_lock(sys.argv[1], 'holder'):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))\n"


def hold(lock: Path, seconds: float) -> subprocess.Popen:
    """Another process that takes the run lock and keeps it ``seconds`` (returns once held)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_is_refused_naming_the_one_in_flight(tmp_path):
    lock = tmp_path / "run.lock"
    first = hold(lock, 60)
    try:
        with pytest.raises(RunBusy, match=rf"holder \(pid {first.pid} on .*not started"):
            with run_lock(lock, "second"):
                pass
    finally:
        stop(first)
    with run_lock(lock, "third"):  # released when its holder ended
        assert holder(lock)["what"] == "third" and holder(lock)["pid"] == os.getpid()
    assert holder(lock) is None  # a released lock names nobody


def test_a_lock_left_by_a_run_killed_with_kill_9_is_taken_over(tmp_path, caplog):
    lock = tmp_path / "run.lock"
    first = hold(lock, 60)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert holder(lock)["pid"] == first.pid  # the file still names the dead holder
    with caplog.at_level(logging.WARNING, logger="flows.run_lock"), run_lock(lock, "next"):
        assert holder(lock)["what"] == "next"
    assert f"pid {first.pid}) is gone without releasing it; taking over" in caplog.text


def test_a_queued_run_waits_for_the_one_in_flight(tmp_path):
    lock = tmp_path / "run.lock"
    first = hold(lock, 2)
    started = time.monotonic()
    with run_lock(lock, "queued", wait_s=60):
        waited = time.monotonic() - started
    first.wait()
    assert 0.5 < waited < 30


def test_a_process_started_by_the_holder_runs_inside_its_lock(tmp_path):
    """`decayrec repro` holds the lock while dvc runs `decayrec <step>` stages."""
    lock = tmp_path / "run.lock"
    child = "import sys; from flows.run_lock import run_lock\nwith run_lock(sys.argv[1], 'stage'):\n    print('ran')\n"
    with run_lock(lock, "parent"):
        out = subprocess.run([sys.executable, "-c", child, str(lock)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ran", out.stderr


def test_a_time_limit_stops_the_step_with_its_name():
    started = time.monotonic()
    with pytest.raises(StepTimeout, match=r"step train ran past its time limit of 0.3 s \(runs.timeout_s.train\)"):
        with time_limit(0.3, "train"):
            time.sleep(10)
    assert time.monotonic() - started < 5


@pytest.fixture
def receiver():
    """A local HTTP endpoint that keeps every JSON body POSTed to it."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    server.shutdown()


def fast_run(folder: Path, **runs) -> Path:
    """params.yaml of a small run under ``folder`` (no sequence model), with ``runs`` settings."""
    path = write_params(folder, small_csv(folder / "raw"))
    raw = yaml.safe_load(path.read_text())
    raw["train"]["sequence"]["enabled"] = False
    raw["runs"].update(runs)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_step_past_its_time_limit_fails_the_run_keeps_the_champion_and_sends_a_notice(trained, tmp_path, receiver):
    url, bodies = receiver
    raw = yaml.safe_load(trained.read_text())
    raw["runs"].update(timeout_s={"train": 3}, lock=str(tmp_path / "run.lock"), status=str(tmp_path / "status.json"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    registry = Path(raw["train"]["registry_dir"])
    before = {name: (registry / name).read_bytes() for name in ("champion.json", "promotions.jsonl")}

    done = subprocess.run([DECAYREC, "--params", str(path), "train"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "DECAYREC_NOTIFY_URL": url}, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "step train ran past its time limit of 3 s" in done.stderr
    assert {name: (registry / name).read_bytes() for name in before} == before  # the champion as it was
    assert [(b["outcome"], b["run"]) for b in bodies] == [("timed out", "decayrec train")]
    assert "time limit of 3 s" in bodies[0]["reason"]
    status = subprocess.run([DECAYREC, "--params", str(path), "status"], capture_output=True, text=True, cwd=ROOT)
    assert status.returncode == 0 and "last failure:" in status.stdout and "time limit of 3 s" in status.stdout, status.stdout


def test_two_runs_started_together_promote_once_and_serve_one_runs_bundle(tmp_path, receiver):
    url, bodies = receiver
    path = fast_run(tmp_path)
    env = {**os.environ, "DECAYREC_NOTIFY_URL": url}
    runs = [subprocess.Popen([DECAYREC, "--params", str(path), "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, env=env) for _ in range(2)]
    outs = [run.communicate(timeout=900) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 3], [err[-2000:] for _, err in outs]
    skipped = next(err for run, (_, err) in zip(runs, outs) if run.returncode == 3)
    assert "skipped: another run holds" in skipped
    out = tmp_path / "out"
    log = [json.loads(line) for line in (out / "registry" / "promotions.jsonl").read_text().splitlines()]
    champion = json.loads((out / "registry" / "champion.json").read_text())["champion"]
    assert [e["action"] for e in log] == ["promote"] and log[0]["champion"] == champion
    bundle = json.loads((out / "serving" / "bundle.json").read_text())
    assert bundle["model"] == champion
    from features.online import published
    from flows.config import load_params

    online = published(load_params(path).features).project
    assert bundle["params"]["features"]["store"]["project"] == online
    shown = subprocess.run([DECAYREC, "--params", str(path), "status"], capture_output=True, text=True, cwd=ROOT).stdout
    assert f"online store:   {online}" in shown, shown
    assert [b["outcome"] for b in bodies] == ["skipped"]
    status = json.loads((out / "runs" / "status.json").read_text())
    assert status["last_success"]["model"] == champion and status["last_success"]["promoted"] is True
    assert status["last_skipped"]["run"] == "decayrec run"


def test_a_run_killed_mid_train_leaves_nothing_half_written_and_the_next_run_completes(tmp_path):
    path = fast_run(tmp_path)
    out = tmp_path / "out"
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([DECAYREC, "--params", str(path), "run"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 600
    while "] train" not in (tmp_path / "first.log").read_text():
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.5)
    time.sleep(1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    log.close()
    assert holder(out / "run.lock")["pid"] == first.pid
    assert not (out / "registry" / "champion.json").exists() and not (out / "serving").exists()

    second = subprocess.run([DECAYREC, "--params", str(path), "run"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"pid {first.pid}) is gone without releasing it; taking over" in second.stderr
    champion = json.loads((out / "registry" / "champion.json").read_text())["champion"]
    assert json.loads((out / "serving" / "bundle.json").read_text())["model"] == champion
    assert not list((out / "serving").parent.glob(".serving.*"))  # no staged or old bundle left beside it


def test_a_minutely_schedule_never_runs_two_retrains_at_once_and_records_the_skipped(prefect_api, tmp_path, receiver):
    """`decayrec schedule --cron "* * * * *"` on a real server, its train step slowed to three
    minutes: over five minutes at most one run is ever running; runs due meanwhile are
    cancelled by the deployment's limit, recorded as skipped and announced."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    url, bodies = receiver
    path = fast_run(tmp_path)
    env = {**prefect_api["env"], "PREFECT_API_URL": prefect_api["url"], "PREFECT_HOME": str(tmp_path / "serve_home"),
           "PYTHONPATH": str(Path(__file__).parent / "slow_train"), "DECAYREC_TEST_SLOW_TRAIN_S": "180",
           "DECAYREC_NOTIFY_URL": url}
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([DECAYREC, "--params", str(path), "schedule", "--cron", "* * * * *", "--name", "minutely"],
                             env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    most_running, states = 0, {}
    try:
        with get_client(sync_client=True) as client:
            only = DeploymentFilter(name=DeploymentFilterName(any_=["minutely"]))
            deadline = time.monotonic() + 150  # the first run starts at the next minute
            while not any(r.state and r.state.is_running() for r in client.read_flow_runs(deployment_filter=only)):
                assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(2)
            watch_until = time.monotonic() + 300
            while time.monotonic() < watch_until:
                runs = client.read_flow_runs(deployment_filter=only)
                most_running = max(most_running, sum(1 for r in runs if r.state and r.state.is_running()))
                states = {r.name: r.state.name if r.state else None for r in runs}
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(2)
        time.sleep(12)  # the watcher's next look
    finally:
        stop(serve, group=True)
        log.close()
    assert most_running == 1, states
    skipped = [name for name, state in states.items() if state == "Cancelled"]
    assert len(skipped) >= 2, states
    status = json.loads((tmp_path / "out" / "runs" / "status.json").read_text())
    assert status["last_skipped"]["reason"] == "Deployment concurrency limit reached.", status
    assert {b["run"] for b in bodies if b["outcome"] == "skipped"} >= {f"prefect flow run {name}" for name in skipped[:2]}


def test_every_ending_is_recorded_and_only_the_bad_ones_announced(params_for, receiver, monkeypatch):
    """A promotion is recorded without a notice; a model the gate refused, a failure and a
    skipped run are recorded and announced, each once; a receiver that is down fails nothing."""
    from flows.runs import guarded, read_status

    url, bodies = receiver
    monkeypatch.setenv("DECAYREC_NOTIFY_URL", url)
    params = params_for()
    summary = lambda promoted: {"model": "decayrec-scorer:x", "promoted": promoted, "reasons": ["ndcg"]}  # noqa: E731
    guarded(params, "promoting", lambda: summary(True), gate=lambda s: s)
    assert bodies == [] and read_status(params.runs)["last_success"]["promoted"] is True
    guarded(params, "refused", lambda: summary(False), gate=lambda s: s)
    assert [(b["outcome"], b["run"], b["promoted"]) for b in bodies] == [("succeeded", "refused", False)]
    with pytest.raises(ValueError):
        guarded(params, "failing", lambda: (_ for _ in ()).throw(ValueError("bad column")))
    assert bodies[-1]["outcome"] == "failed" and bodies[-1]["reason"] == "ValueError: bad column"
    other = hold(params.runs.lock, 60)
    try:
        with pytest.raises(RunBusy):
            guarded(params, "second", lambda: summary(True))
    finally:
        stop(other)
    assert [b["outcome"] for b in bodies] == ["succeeded", "failed", "skipped"]
    monkeypatch.setenv("DECAYREC_NOTIFY_URL", "http://127.0.0.1:9/nobody-listens")
    guarded(params, "refused again", lambda: summary(False), gate=lambda s: s)  # not raised
    status = read_status(params.runs)
    assert status["last_failure"]["run"] == "failing" and status["last_success"]["run"] == "refused again"

"""Load benchmark of the served bento: /recommend at 1, 8 and 32 connections and /events,
with wrk (Debian's `wrk`) against `bentoml serve <bento>` on 127.0.0.1, beside the
in-process scoring time per request (the floor the HTTP path adds to).

    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/serving.py --dataset ml-1m

The load draws from 2,000 users, so by 32 connections each worker keeps most of their signal
rows (``serving.signal_cache_mb``); a last pass at 32 connections serves a bento that keeps
none, every request computed cold.

Needs a champion for the data set (`decayrec run --dataset ml-1m`); packages it first.
Live events go to a log of the benchmark's own, never the data set's. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.config import load_params  # noqa: E402

REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), errors, summary.errors.status))
end
"""


def lua_list(values: list) -> str:
    """A Lua table of ints or strings (JSON's quoting is Lua's for these ids)."""
    return "{" + ", ".join(json.dumps(v) for v in values) + "}"


def recommend_script(users: list, k: int, body: str | None = None) -> str:
    """wrk's Lua: POST /recommend for a random one of ``users`` (integer or string ids),
    ``body`` with USER and K filled in."""
    if body is None:
        body = '{"user_id": "USER", "k": K}' if users and isinstance(users[0], str) else '{"user_id": USER, "k": K}'
    lua_body = "'" + body.replace("K", str(k)).replace("USER", "' .. u .. '") + "'"
    return (f"local users = {lua_list(users)}\n"
            "math.randomseed(42)\n"
            "request = function()\n"
            "  local u = users[math.random(#users)]\n"
            f"  return wrk.format('POST', '/recommend', {{['Content-Type'] = 'application/json'}}, {lua_body})\n"
            "end\n" + REPORT)


def events_script(users: list[int], items: list[int], at: str, batch: int) -> str:
    return (f"local users = {{{', '.join(map(str, users))}}}\n"
            f"local items = {{{', '.join(map(str, items))}}}\n"
            # A seed per wrk thread: one seed for all would send the same events from each,
            # and the service counts a repeated event once.
            "local threads = 0\n"
            "setup = function(thread) threads = threads + 1; thread:set('id', threads) end\n"
            "init = function() math.randomseed(7 + id) end\n"
            "request = function()\n"
            "  local parts = {}\n"
            f"  for i = 1, {batch} do\n"
            "    parts[i] = string.format('{\"user_id\": %d, \"item_id\": %d, \"event_type\": \"rating\", \"value\": 4.0, "
            f"\"timestamp\": \"{at}\"}}', users[math.random(#users)], items[math.random(#items)])\n"
            "  end\n"
            "  return wrk.format('POST', '/events', {['Content-Type'] = 'application/json'}, '[' .. table.concat(parts, ',') .. ']')\n"
            "end\n" + REPORT)


def wrk(url: str, script: str, connections: int, seconds: int, folder: Path) -> dict:
    path = folder / f"script_{connections}.lua"
    path.write_text(script)
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s",
                          "--timeout", "10s", "-s", str(path), url], capture_output=True, text=True, check=True).stdout
    requests, duration_us, p50, p99, errors, non2xx = map(int, re.search(r"RESULT (.*)", out).group(1).split())
    return {"rps": round(requests / (duration_us / 1e6), 1), "p50_ms": round(p50 / 1000, 2),
            "p99_ms": round(p99 / 1000, 2), "errors": errors + non2xx, "requests": requests}


TARGET_RPS, TARGET_P99_MS = 300, 50  # /recommend at 32 connections, on 2 cores
BATCH = 16  # requests per in-process batch: about what 32 connections over 2 workers queue up


def inprocess(params, users: list[int], n: int) -> dict:
    """Per-request time of Engine.recommend in this process (no HTTP), one at a time and
    in batches as the service forms them under load."""
    from features.store import open_store
    from models.registry import Registry
    from serving.bundle import load_bundle
    from serving.engine import Ask, Engine
    from serving.event_log import EventLog
    from serving.worker import tune

    tune(params.serving)  # as the service does
    registry = Registry(params.train.registry_dir)
    bundle = load_bundle(params.serving.bundle_dir)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(bundle, registry.path(bundle.model), open_store(bundle.params.features.store), EventLog(Path(tmp) / "e.jsonl"))
        rng = np.random.default_rng(0)
        for user in users[:20]:  # warm-up
            engine.recommend(user, 10)
        times = []
        for user in rng.choice(users, size=n):
            started = time.perf_counter()
            engine.recommend(user.item(), 10)  # a numpy scalar: back to the int or str id
            times.append((time.perf_counter() - started) * 1000)
        # What the service's batching buys: the same users scored 16 at a time.
        picked = rng.choice(users, size=n - n % BATCH)
        started = time.perf_counter()
        for i in range(0, len(picked), BATCH):
            engine.recommend_many([Ask(u.item(), 10) for u in picked[i : i + BATCH]])
        batched = (time.perf_counter() - started) * 1000 / len(picked)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2),
            f"batch{BATCH}_per_request_ms": round(batched, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--seconds", type=int, default=15, help="per load level")
    parser.add_argument("--users", type=int, default=2000, help="distinct users the load draws from")
    parser.add_argument("--workers", type=int, default=None, help="service processes (default: serving.workers)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    import pandas as pd

    from flows.steps import package_step

    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    if args.workers:
        params = params.model_copy(update={"serving": params.serving.model_copy(update={"workers": args.workers})})
    print(f"packaging the {args.dataset} champion ...", flush=True)
    summary = package_step(params)
    events = pd.read_parquet(params.serving.bundle_dir / "events.parquet", columns=["user_id", "item_id"])
    rng = np.random.default_rng(0)
    users = sorted(rng.choice(events["user_id"].unique(), size=min(args.users, events["user_id"].nunique()), replace=False).tolist())
    items = events["item_id"].value_counts().index[:500].tolist()
    print("in-process scoring ...", flush=True)
    floor = inprocess(params, users, 300)

    folder = Path(tempfile.mkdtemp(prefix="decayrec-serving-bench-"))
    with served(summary["bento"], folder / "warm", {}) as url:
        for user in users[:50]:  # every worker loaded and warm
            _post(url + "/recommend", {"user_id": user, "k": 10})
        results = {}
        for c in (1, 8, 32):
            print(f"/recommend k=10, {c} connection(s), {args.seconds} s ...", flush=True)
            results[c] = wrk(url, recommend_script(users, 10), c, args.seconds, folder)
        now = json.loads(urllib.request.urlopen(url + "/version").read())["now"]
        batch = 10
        print(f"/events, batches of {batch}, 8 connections, {args.seconds} s ...", flush=True)
        ev = wrk(url, events_script(users, items, now, batch), 8, args.seconds, folder)
        logged = sum(1 for _ in open(folder / "warm" / "events.jsonl"))
    # The same load with no user's signal rows kept: every request computes its own.
    with served(summary["bento"], folder / "cold", {"DECAYREC_SIGNAL_CACHE_MB": "0"}) as url:
        for user in users[:50]:
            _post(url + "/recommend", {"user_id": user, "k": 10})
        print(f"/recommend k=10, 32 connections, {args.seconds} s, signal rows not kept ...", flush=True)
        cold = wrk(url, recommend_script(users, 10), 32, args.seconds, folder)
    print(f"{'load':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for c, r in results.items():
        print(f"{'/recommend c=' + str(c):<22}{r['rps']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
    print(f"{'/events c=8 (x' + str(batch) + ')':<22}{ev['rps']:>10.1f}{ev['p50_ms']:>10.2f}{ev['p99_ms']:>10.2f}{ev['errors']:>8}"
          f"   = {ev['rps'] * batch:,.0f} events/s; {logged:,} logged of {ev['requests'] * batch:,} sent (the rest repeat one taken: duplicates)")
    print(f"{'/recommend c=32 cold':<22}{cold['rps']:>10.1f}{cold['p50_ms']:>10.2f}{cold['p99_ms']:>10.2f}{cold['errors']:>8}"
          "   (serving.signal_cache_mb 0: no user's rows kept)")
    plot(results, floor, ROOT / "reports" / "benchmarks" / f"serving_{args.dataset}.png")
    print(f"in-process Engine.recommend: p50 {floor['p50_ms']} ms, p99 {floor['p99_ms']} ms; "
          f"in batches of {BATCH}: {floor[f'batch{BATCH}_per_request_ms']} ms per request "
          f"(workers {params.serving.workers}, bento {summary['bento']})")
    print(json.dumps({
        "dataset": args.dataset, "bento": summary["bento"], "model": summary["model"], "workers": params.serving.workers,
        **{f"recommend_rps_c{c}": r["rps"] for c, r in results.items()},
        **{f"recommend_p50_ms_c{c}": r["p50_ms"] for c, r in results.items()},
        **{f"recommend_p99_ms_c{c}": r["p99_ms"] for c, r in results.items()},
        "recommend_rps_c32_cold": cold["rps"], "recommend_p50_ms_c32_cold": cold["p50_ms"], "recommend_p99_ms_c32_cold": cold["p99_ms"],
        "errors": sum(r["errors"] for r in results.values()) + ev["errors"] + cold["errors"],
        "events_per_s": round(ev["rps"] * batch, 1), "events_logged": logged, "events_sent": ev["requests"] * batch,
        "inprocess_score_ms": floor["p50_ms"], "inprocess_score_p99_ms": floor["p99_ms"],
        f"inprocess_batch{BATCH}_per_request_ms": floor[f"batch{BATCH}_per_request_ms"],
    }))


def plot(results: dict, floor: dict, path: Path) -> None:
    """Throughput and latency against connections, the in-process floor as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conns = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar([str(c) for c in conns], [results[c]["rps"] for c in conns], color="#4c72b0")
    left.axhline(TARGET_RPS, color="grey", linestyle=":", label=f"target at 32: >= {TARGET_RPS}")
    left.set(xlabel="connections", ylabel="requests/s", title="/recommend k=10 throughput")
    left.legend()
    right.plot([str(c) for c in conns], [results[c]["p50_ms"] for c in conns], "o-", label="p50")
    right.plot([str(c) for c in conns], [results[c]["p99_ms"] for c in conns], "o-", label="p99")
    right.axhline(floor["p50_ms"], color="grey", linestyle="--", label="in-process p50")
    right.axhline(TARGET_P99_MS, color="grey", linestyle=":", label=f"p99 target at 32: < {TARGET_P99_MS} ms")
    right.set(xlabel="connections", ylabel="ms", title="latency")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


@contextmanager
def served(bento: str, folder: Path, env: dict):
    """``bentoml serve bento`` (a bento tag, or ``module:Service`` in the repository) on a
    free 127.0.0.1 port, from the repository root, its live events logged in
    ``folder``; yields its URL and stops it after."""
    folder.mkdir(parents=True)
    port = _free_port()
    env = {**os.environ, "DECAYREC_EVENTS_LOG": str(folder / "events.jsonl"), "BENTOML_DO_NOT_TRACK": "true", **env}
    log = open(folder / "serve.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, server, folder)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def _wait(url: str, server, folder: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None:
            break
        time.sleep(1)
    raise RuntimeError(f"the bento did not start: {(folder / 'serve.log').read_text()[-3000:]}")


if __name__ == "__main__":
    main()

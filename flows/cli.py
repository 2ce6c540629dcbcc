"""The ``decayrec`` command line. Heavy libraries load inside commands, not at start-up."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from features.errors import DataError, ValidationFailed
from flows.config import ParamsError
from flows.run_lock import RunBusy
from flows.runs import StepTimeout
from models.registry import RegistryError

log = logging.getLogger("decayrec")


def _params(args: argparse.Namespace):
    from flows.config import load_params

    return load_params(args.params, dataset=getattr(args, "dataset", None))


def guarded(args: argparse.Namespace, params, body, gate=lambda _: None):
    """``body()`` as one run of the pipeline (``flows.runs.guarded``) under ``params``, named
    by its command; a step's command within that step's time limit."""
    from flows.runs import guarded as run_guarded
    from flows.runs import time_limit

    with time_limit(params.runs.timeout_s.get(args.command), args.command):
        return run_guarded(params, f"decayrec {args.command}", body, gate)


def cmd_step(args: argparse.Namespace) -> int:
    """A step of the table (flows/pipeline.py) with nothing to print but its log."""
    from flows.pipeline import BY_NAME

    params = _params(args)
    guarded(args, params, lambda: BY_NAME[args.command].run(params))
    return 0


def _tabular_overrides(args: argparse.Namespace, base):
    update: dict = {"events": Path(args.events), "items": Path(args.items) if args.items else None}
    if args.columns:
        update["event_columns"] = dict(kv.split("=", 1) for kv in args.columns.split(","))
    if args.item_columns:
        update["item_columns"] = dict(kv.split("=", 1) for kv in args.item_columns.split(","))
    for name in ("delimiter", "encoding", "timestamp_format"):
        if getattr(args, name):
            update[name] = getattr(args, name)
    if args.ids:
        from flows.config import IdsConfig

        update["ids"] = IdsConfig.model_validate({**base.ids.model_dump(), **dict(kv.split("=", 1) for kv in args.ids.split(","))})
    return base.model_copy(update=update)


def validate_file(args: argparse.Namespace) -> int:
    """Check a user's files without writing any table: exit 0 if valid, 1 if not."""
    from features.adapters import Ingested, load_events_file, load_items_file
    from features.validation import validate_tables

    params = _params(args)
    cfg = _tabular_overrides(args, params.data.tabular)
    events, events_line = load_events_file(cfg.events, cfg)
    sources = {"events": {"file": str(cfg.events), "first_line": events_line}}
    if cfg.items is not None:
        items, items_line = load_items_file(cfg.items, cfg)
        sources["items"] = {"file": str(cfg.items), "first_line": items_line}
    else:
        from features.contract import items_frame

        # Without a catalogue, the known ids are those the events use: nothing is unknown.
        ids = events["item_id"].dropna().unique()
        items = items_frame(ids, [str(i) for i in ids], [[] for _ in ids], kind=cfg.ids.item_id)
    # A check of the user's files writes to a Data Docs site of its own: the pipeline's stays as it was.
    rules = params.validation.model_copy(update={"quarantine": False, "docs_dir": params.validation.checks_docs_dir})
    validated = validate_tables(Ingested(events, items, sources), rules, event_types=list(params.features.event_weights),
                                run_name=f"check {Path(cfg.events).name}")
    print(
        f"{cfg.events}: valid: {len(validated.events):,} events, "
        f"{validated.events['user_id'].nunique():,} users, {len(validated.items):,} items (Data Docs: {validated.docs})"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    if args.events:
        return validate_file(args)
    from flows.steps import validate_step

    params = _params(args)
    guarded(args, params, lambda: validate_step(params))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.steps import evaluate_step

    params = _params(args)
    metrics = guarded(args, params, lambda: evaluate_step(params, [args.protocol] if args.protocol else None))
    print(format_table(metrics, params.evaluate.k[0]))
    print(f"report: {params.evaluate.out_dir / 'report.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from flows.steps import train_step

    params = _params(args)
    summary = guarded(args, params, lambda: train_step(params, [args.protocol] if args.protocol else None), gate=lambda s: s)
    print(format_training(summary))
    return 0


def format_training(summary: dict) -> str:
    names = ["ndcg_at_10", "recall_at_10", "hit_at_10", "coverage_at_10", "ild_at_10"]
    lines = []
    for protocol, models in summary["protocols"].items():
        scorer = models["scorer"]
        lines.append(f"{protocol} test, {scorer['users']:,} users (scorer candidate recall {scorer['candidate_recall']['test']:.3f})")
        lines.append(f"  {'model':<14}" + "".join(f"{n.replace('_at_', '@'):>14}" for n in names) + "  chosen")
        for name, row in sorted(models.items(), key=lambda item: -item[1].get("ndcg_at_10", 0)):
            chosen = ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in row["params"].items())
            lines.append(f"  {name:<14}" + "".join(f"{row.get(n, 0):>14.4f}" for n in names) + f"  {chosen}")
    verdict = "promoted to champion" if summary["promoted"] else "not promoted"
    lines.append(f"{summary['model']} ({summary['kind']}, better on validation): {verdict} ({'; '.join(summary['reasons'])}); champion: {summary['champion']}")
    return "\n".join(lines)


def cmd_retrain(args: argparse.Namespace) -> int:
    """The whole pipeline as a Prefect flow run (a local temporary server when
    PREFECT_API_URL is unset)."""
    from flows.retrain import retrain

    started = time.perf_counter()
    state = retrain(params_path=str(Path(args.params).resolve()), dataset=args.dataset, return_state=True)
    if not state.is_completed():
        print(f"retrain {state.name.lower()}: {state.message}", file=sys.stderr)
        return 1
    out = state.result()
    print(format_training(out["train"]))
    print(f"retrain: {time.perf_counter() - started:.1f} s")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    """Create the retrain deployment on the Prefect server at PREFECT_API_URL and serve its
    scheduled runs from this process until interrupted."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.settings import PREFECT_API_URL

    from flows.retrain import retrain, watch_skipped

    if not PREFECT_API_URL.value():
        print("error: PREFECT_API_URL is not set: start `prefect server start` and point to it (see README)", file=sys.stderr)
        return 1
    name = args.name or f"retrain-{args.dataset or 'default'}"
    parameters = {"params_path": str(Path(args.params).resolve()), "dataset": args.dataset}
    params = _params(args)
    runs = params.runs
    # One run at a time: a run due while one is in flight is cancelled (skip) or waits (queue).
    strategy = ConcurrencyLimitStrategy.CANCEL_NEW if runs.on_overlap == "skip" else ConcurrencyLimitStrategy.ENQUEUE
    print(f"deployment retrain/{name}: cron {args.cron!r} on {PREFECT_API_URL.value()}, one run at a time "
          f"({runs.on_overlap} on overlap); serving runs (Ctrl-C stops)")
    with watch_skipped(params, name):
        retrain.serve(name=name, cron=args.cron, parameters=parameters,
                      global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategy))
    return 0


def cmd_repro(args: argparse.Namespace) -> int:
    """``dvc repro`` holding the run lock for all of it (its stages are ``decayrec <step>``
    commands, which see that their parent holds it)."""
    import subprocess

    extra = args.dvc_args[1:] if args.dvc_args[:1] == ["--"] else args.dvc_args
    done = guarded(args, _params(args), lambda: subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", *extra]))
    return done.returncode


def cmd_status(args: argparse.Namespace) -> int:
    """The last successful run, the last failure and why, the last skipped run, and the
    age of the model the bundle serves."""
    from datetime import datetime, timezone

    from flows.run_lock import holder
    from flows.runs import read_status

    params = _params(args)
    status = read_status(params.runs)
    for key, label in (("last_success", "last success"), ("last_failure", "last failure"), ("last_skipped", "last skipped")):
        event = status.get(key)
        if event is None:
            print(f"{label + ':':<15} none recorded")
            continue
        said = event.get("reason") or (f"{event['model']} {'promoted' if event.get('promoted') else 'not promoted'}"
                                       if event.get("model") else "")
        print(f"{label + ':':<15} {event['at']}  {event['run']}  {said}")
    running = holder(params.runs.lock)
    print(f"{'running:':<15} {running['what']} (pid {running['pid']}, since {running['since']})" if running else
          f"{'running:':<15} nothing")
    manifest = params.serving.bundle_dir / "bundle.json"
    if manifest.exists():
        import json

        built = datetime.fromtimestamp(manifest.stat().st_mtime, tz=timezone.utc)
        age_h = (datetime.now(timezone.utc) - built).total_seconds() / 3600
        served = json.loads(manifest.read_text())
        print(f"{'serving:':<15} {served['model']}, packaged {built.isoformat(timespec='seconds')} ({age_h:.1f} h ago)")
        print(f"{'online store:':<15} {served['params']['features']['store']['project']}")
    else:
        print(f"{'serving:':<15} no bundle at {params.serving.bundle_dir} yet")
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from flows.steps import package_step

    params = _params(args)
    summary = guarded(args, params, lambda: package_step(params))
    print(f"bento {summary['bento']} (model {summary['model']}, bundle {summary['bundle']}/)")
    print(f"serve it: bentoml serve {summary['bento']} --port 3000   (demo page: http://127.0.0.1:3000/)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from models.registry import Registry

    params = _params(args)
    registry = Registry(params.train.registry_dir)
    before = registry.champion()
    restored = registry.rollback()
    print(f"champion: {restored} (was {before})")
    return 0


def format_table(metrics: dict, k: int) -> str:
    names = ["ndcg", "recall", "precision", "hit", "coverage", "ild"]
    lines = []
    for protocol, models in metrics.items():
        users = next(iter(models.values()))["users"] if models else 0
        lines.append(f"{protocol} test, {users:,} users")
        lines.append(f"  {'model':<14}" + "".join(f"{n + '@' + str(k):>13}" for n in names) + f"{'fit s':>8}  chosen")
        for name, row in models.items():
            values = "".join(f"{row.get(f'{n}_at_{k}') or 0:>13.4f}" for n in names)
            chosen = ", ".join(f"{a}={b}" for a, b in row["params"].items())
            lines.append(f"  {name:<14}{values}{row['fit_s']:>8.2f}  {chosen}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: every step of the pipeline, then the champion beside the baselines."""
    from flows.pipeline import run_all

    params = _params(args)
    started = time.perf_counter()
    results, seconds = guarded(args, params, lambda: run_all(params), gate=lambda out: out[0]["train"])
    print(format_summary(params, results["validate"], results["split"], time.perf_counter() - started))
    print(format_training(results["train"]))
    print("  steps: " + ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()))
    print(f"  training summary: {params.train.out_dir / 'summary.json'}")
    print(f"  champion:         {results['train']['champion']} (registry {params.train.registry_dir}/)")
    print(f"  bento:            {results['package']['bento']}  ->  bentoml serve {results['package']['bento']}"
          "  (demo page: http://127.0.0.1:3000/)")
    return 0


def format_summary(params, validated: dict, splits: dict, seconds: float) -> str:
    lines = [
        f"decayrec: {params.data.dataset} in {seconds:.1f} s",
        f"  events {validated['events']:,}  users {validated['users']:,}  items {validated['items']:,}"
        f" ({validated['items_with_events']:,} with events)",
        f"  time span {validated['first_event'][:10]} .. {validated['last_event'][:10]}",
    ]
    if any(validated["quarantined"].values()):
        lines.append(f"  quarantined {validated['quarantined']}")
    for protocol, stats in splits.items():
        sizes = "  ".join(f"{part} {stats[part]['rows']:,}" for part in ("train", "valid", "test"))
        lines.append(f"  split {protocol}: {sizes}  (test users evaluable: {stats['test']['evaluable_users']:,})")
    from flows.steps import few_evaluable

    lines += [f"  warning: {w}" for w in few_evaluable(splits, params.split.min_evaluable_users)]
    lines += [
        f"  validated tables: {params.validation.validated_dir}/",
        f"  splits:           {params.split.out_dir}/",
        f"  Data Docs:        {validated['docs']}",
    ]
    return "\n".join(lines)


def cmd_dag(args: argparse.Namespace) -> int:
    """dvc.yaml from the step table: printed, written (--write) or compared (--check)."""
    from flows.config import load_params
    from flows.pipeline import dvc_yaml

    text = dvc_yaml(load_params(args.params))
    target = Path(args.params).resolve().parent / "dvc.yaml"
    if args.check:
        if target.exists() and target.read_text() == text:
            return 0
        print(f"{target} differs from the step table in flows/pipeline.py: run `decayrec dag --write`", file=sys.stderr)
        return 1
    if args.write:
        target.write_text(text)
        print(f"wrote {target}")
    else:
        print(text, end="")
    return 0


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split("\n\n")[0].split())
    return text.split(". ")[0].rstrip(".")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decayrec", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--dataset", help="override data.dataset (ml-latest-small, ml-100k, ml-1m, csv, parquet, shop)")
        sub.set_defaults(func=func)
        return sub

    add("run", cmd_run, "the main job: the whole pipeline on the configured data set, then the champion beside the baselines")
    # Every step of the table is a command: its help is the step function's first line.
    from flows.pipeline import STEPS

    handlers = {"validate": cmd_validate, "evaluate": cmd_evaluate, "train": cmd_train, "package": cmd_package}
    steps = {s.name: add(s.name, handlers.get(s.name, cmd_step), _first_sentence(s.run.__doc__)) for s in STEPS}
    steps["train"].add_argument("--protocol", choices=["P1", "P2"], help="one protocol (default: train.protocols)")
    steps["evaluate"].add_argument("--protocol", choices=["P0", "P1", "P2"], help="one protocol (default: evaluate.protocols)")
    check = steps["validate"]
    check.add_argument("--events", help="an event file to check (CSV or Parquet)")
    check.add_argument("--items", help="its item catalogue (optional)")
    check.add_argument("--columns", help="event column mapping, e.g. user_id=uid,item_id=iid,value=r,timestamp=ts")
    check.add_argument("--item-columns", help="item column mapping, e.g. item_id=id,title=name,categories=genres")
    check.add_argument("--ids", help="which ids are strings, kept as written, e.g. user_id=str,item_id=str (default: int)")
    check.add_argument("--delimiter")
    check.add_argument("--encoding")
    check.add_argument("--timestamp-format", choices=["epoch_s", "iso"])
    add("rollback", cmd_rollback, "restore the previous champion")
    add("status", cmd_status, "the last successful run, the last failure and why, and the served model's age")
    repro = add("repro", cmd_repro, "dvc repro holding the run lock (arguments after -- go to dvc)")
    repro.add_argument("dvc_args", nargs=argparse.REMAINDER)
    add("retrain", cmd_retrain, "the whole pipeline as a Prefect flow: each step skipped when its inputs are unchanged")
    schedule = add("schedule", cmd_schedule, "create the retrain deployment on a Prefect server and serve its runs")
    schedule.add_argument("--cron", required=True, help='e.g. "0 3 * * *" (03:00 every day)')
    schedule.add_argument("--name", help="deployment name (default: retrain-<dataset>)")
    dag = add("dag", cmd_dag, "dvc.yaml generated from the step table (flows/pipeline.py)")
    dag.add_argument("--write", action="store_true", help="write it next to the params file")
    dag.add_argument("--check", action="store_true", help="exit 1 when the file there differs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("great_expectations", "py.warnings", "feast", "httpx"):  # httpx: a line per Prefect call
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Libraries' warnings (deprecations in pathspec, duckdb, ...) go to the py.warnings logger,
    # quiet above: Feast's import puts its own "once" filter ahead of any filter set here.
    logging.captureWarnings(True)
    # ibis calls a duckdb method duckdb deprecated, once per Feast read: noise, not news.
    warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)
    try:
        return args.func(args)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValidationFailed as err:
        print(err.summary(), file=sys.stderr)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
    except RunBusy as err:
        print(f"skipped: {err}", file=sys.stderr)
        return 3
    except StepTimeout as err:
        print(f"error: {err}; the run failed", file=sys.stderr)
    except FileNotFoundError as err:
        print(f"error: {err.filename}: no such file", file=sys.stderr)
    except Exception as err:  # never a traceback for a user, unless asked for one
        if os.environ.get("DECAYREC_DEBUG"):
            raise
        print(f"error: {type(err).__name__}: {err} (set DECAYREC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

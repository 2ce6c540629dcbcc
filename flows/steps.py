"""Pipeline steps with their I/O: the same functions serve the CLI, DVC stages and flows.

Every step writes its whole output folder in a staging folder first and swaps it in only
when the step has succeeded, so a failure never leaves half-written or overwritten outputs.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pandas as pd

from flows.config import Params
from models.files import replace_dir

log = logging.getLogger(__name__)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty folder that replaces ``final``, in one step, only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield stage
        replace_dir(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_json(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def table_summary(events: pd.DataFrame, items: pd.DataFrame) -> dict:
    stamps = events["timestamp"]
    return {
        "events": int(len(events)),
        "users": int(events["user_id"].nunique()),
        "items": int(len(items)),
        "items_with_events": int(events["item_id"].nunique()),
        "first_event": stamps.min().isoformat() if len(events) else None,
        "last_event": stamps.max().isoformat() if len(events) else None,
    }


def ingest_step(params: Params) -> dict:
    """Read the configured data set and write canonical Parquet tables (unvalidated)."""
    from features.adapters import ingest

    cfg = params.data
    log.info("ingest: reading %s", cfg.dataset)
    ingested = ingest(cfg)
    sources = {k: {**v, "file": _relative(v["file"])} for k, v in ingested.sources.items()}
    with staged_dir(cfg.interim_dir) as out:
        ingested.events.to_parquet(out / "events.parquet", index=False)
        ingested.items.to_parquet(out / "items.parquet", index=False)
        write_json({"dataset": cfg.dataset, "sources": sources}, out / "sources.json")
    summary = {"dataset": cfg.dataset, **table_summary(ingested.events, ingested.items)}
    log.info("ingest: %s events, %s items -> %s", summary["events"], summary["items"], cfg.interim_dir)
    return summary


def load_interim(params: Params):
    from features.adapters import Ingested

    folder = params.data.interim_dir
    meta = json.loads((folder / "sources.json").read_text())
    return Ingested(
        pd.read_parquet(folder / "events.parquet"),
        pd.read_parquet(folder / "items.parquet"),
        meta["sources"],
    )


def validate_step(params: Params, now: datetime | None = None) -> dict:
    """Validate the ingested tables; write validated tables only when they pass."""
    from features.contract import strict_events
    from features.validation import validate_tables

    cfg = params.validation
    log.info("validate: running the events and items suites")
    validated = validate_tables(load_interim(params), cfg, now, list(params.features.event_weights), run_name=params.data.dataset)
    with staged_dir(cfg.validated_dir) as out:
        strict_events(validated.events).to_parquet(out / "events.parquet", index=False)
        validated.items.to_parquet(out / "items.parquet", index=False)
        for table, rows in validated.quarantined.items():
            rows.to_parquet(out / f"quarantine_{table}.parquet", index=False)
        summary = {
            **table_summary(validated.events, validated.items),
            "quarantined": {t: int(len(q)) for t, q in validated.quarantined.items()},
        }
        write_json(summary, out / "summary.json")
    log.info("validate: passed -> %s (Data Docs: %s)", cfg.validated_dir, validated.docs)
    return {**summary, "docs": validated.docs}



def split_events(events: pd.DataFrame, protocol: str, params: Params) -> dict[str, pd.DataFrame]:
    from features import splits

    cfg = params.split
    if protocol == "P1":
        return splits.split_p1(events, cfg.p1_fractions)
    if protocol == "P2":
        return splits.split_p2(events)
    p0 = cfg.p0
    return splits.split_p0(events, min_value=p0.min_value, core=p0.core, ratios=p0.ratios, seed=p0.seed)


def split_step(params: Params) -> dict:
    """Write every configured protocol's train/valid/test tables and stats."""
    from features.splits import split_stats, write_splits

    cfg = params.split
    events = pd.read_parquet(params.validation.validated_dir / "events.parquet")
    summary = {}
    with staged_dir(cfg.out_dir) as out:
        for protocol in cfg.protocols:
            log.info("split: %s", protocol)
            parts = split_events(events, protocol, params)
            stats = split_stats(parts, params.data.repeats)
            write_splits(parts, stats, out / protocol)
            summary[protocol] = stats
    for warning in few_evaluable(summary, cfg.min_evaluable_users):
        log.warning("split: %s", warning)
    return summary


def few_evaluable(splits: dict, floor: int) -> list[str]:
    """A sentence per protocol part with fewer evaluable users than ``floor``."""
    return [f"{protocol} {part}: only {stats[part]['evaluable_users']:,} evaluable users (split.min_evaluable_users is"
            f" {floor}): its figures say little" for protocol, stats in splits.items() for part in ("valid", "test")
            if stats[part].get("evaluable_users", floor) < floor]


def ensure_splits(params: Params) -> None:
    """Build the splits of the configured data set when they are not there yet."""
    if all((params.split.out_dir / p / "stats.json").exists() for p in params.split.protocols):
        return
    log.info("evaluate: no splits for %s yet; running ingest, validate, split", params.data.dataset)
    ingest_step(params)
    validate_step(params)
    split_step(params)


def item_vectors(params: Params):
    """The embed step's item vectors (``models.lm_score.ItemVectors``), made if missing."""
    from models.embeddings import load_vectors
    from models.lm_score import ItemVectors

    if not params.lm.out.exists():
        log.info("no item vectors at %s yet; running embed", params.lm.out)
        embed_step(params)
    item_ids, vectors, _ = load_vectors(params.lm.out)
    return ItemVectors(item_ids, vectors)


def evaluate_step(params: Params, protocols: list[str] | None = None) -> dict:
    """Tune, refit and test every baseline under each protocol; write the report."""
    from models.evaluate import evaluate_protocol
    from models.factory import needs_vectors
    from models.protocols import load_parts, tasks
    from models.report import write_report

    cfg = params.evaluate
    protocols = protocols or cfg.protocols
    ensure_splits(params)
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    vectors = item_vectors(params) if any(needs_vectors(name) for name in cfg.models) else None
    results = {}
    for protocol in protocols:
        parts = load_parts(params.split.out_dir, protocol)
        results[protocol] = evaluate_protocol(tasks(protocol, parts, params.data.repeats), items, cfg, vectors)
    metrics = write_report(results, params.data.dataset, cfg.out_dir, cfg.k[0])
    log.info("evaluate: report in %s", cfg.out_dir)
    return metrics


def features_step(params: Params) -> dict:
    """Build the decayed feature tables (Feast's offline sources); the profiles step loads
    them online, with the LM profiles, as one new version of the online store."""
    from features.store import build_chunks, write_chunks

    cfg = params.features
    events = pd.read_parquet(params.validation.validated_dir / "events.parquet")
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    log.info("features: computing decayed user and item state from %s events", f"{len(events):,}")
    with staged_dir(cfg.out_dir) as out:
        summary = {name: write_chunks(parts, out / f"{name}.parquet")
                   for name, parts in build_chunks(events, items, cfg, cfg.chunk_events).items()}
    log.info("features: %s rows -> %s", summary, cfg.out_dir)
    return summary


def embed_step(params: Params) -> dict:
    """Embed every item's text (only new or changed texts reach the model)."""
    from models.embeddings import build_item_vectors

    cfg = params.lm
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    report = build_item_vectors(params.validation.validated_dir / "items.parquet", cfg.out, cfg)
    log.info("embed: %s items with %s (%s from cache) -> %s", report["items"], report["model_id"], report["cache_hits"], cfg.out)
    return report


def profiles_step(params: Params) -> dict:
    """Each user's LM profile from the item vectors, into Feast's offline store; then every
    feature table into a new version of the online store (``features.online``), which the
    package step switches the service to."""
    from features.lm_profile import lm_profile_chunks
    from features.online import load
    from features.store import write_chunks
    from models.embeddings import load_vectors

    cfg = params.features
    events = pd.read_parquet(params.validation.validated_dir / "events.parquet")
    item_ids, vectors, model_id = load_vectors(params.lm.out)
    log.info("profiles: decayed mean of %s-d %s vectors over %s events", vectors.shape[1], model_id, f"{len(events):,}")
    with staged_dir(cfg.profiles_dir) as out:
        rows = write_chunks(lm_profile_chunks(events, item_ids, vectors, cfg, cfg.chunk_events), out / "user_lm_profile.parquet")
    first, last = events["timestamp"].min(), events["timestamp"].max()
    # One second past the last event: Feast's window excludes its end.
    online = load(cfg, first.to_pydatetime(), (last + pd.Timedelta(seconds=1)).to_pydatetime())
    summary = {"user_lm_profile": rows, "users": int(events["user_id"].nunique()), "model_id": model_id,
               "online_project": online.project}
    log.info("profiles: %s rows for %s users -> %s, online store version %s", summary["user_lm_profile"], summary["users"],
             cfg.profiles_dir, online.project)
    return summary


def data_version(split_dir: Path, protocol: str) -> str:
    """Short hash of a protocol's split files: two models compare only on the same version."""
    import hashlib

    digest = hashlib.sha256()
    for part in ("train", "valid", "test"):
        digest.update((Path(split_dir) / protocol / f"{part}.parquet").read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_step(params: Params, protocols: list[str] | None = None) -> dict:
    """Train the scorer (and the sequence model, when enabled) per protocol, evaluate them
    beside the baselines, register the first protocol's better-on-validation model and
    promote it if the gate says so."""
    from dataclasses import replace

    from flows.config import train_protocols
    from models import plots
    from models.champion import champion_metrics
    from models.evaluate import evaluate_protocol
    from models.gate import decide
    from models.protocols import load_parts, tasks
    from models.registry import ChampionMoved, Registry
    from models.train import run, run_sequence, write_trials

    cfg = params.train
    protocols = protocols or train_protocols(params)
    ensure_splits(params)
    items = pd.read_parquet(params.validation.validated_dir / "items.parquet")
    vectors = item_vectors(params)
    outcomes, sequences, baselines, test_tasks = {}, {}, {}, {}
    for protocol in protocols:
        phases = tasks(protocol, load_parts(params.split.out_dir, protocol), params.data.repeats)
        test_tasks[protocol] = phases["test"]
        outcomes[protocol] = run(phases, items, vectors, params.features, params.evaluate.segments, cfg)
        write_trials(outcomes[protocol], cfg.out_dir)
        if cfg.sequence.enabled:
            sequences[protocol] = run_sequence(phases, items, vectors, params.evaluate.segments, cfg)
        log.info("train: %s baselines for comparison", protocol)
        baselines[protocol] = evaluate_protocol(phases, items, params.evaluate)

    primary = outcomes[protocols[0]]
    challenger = sequences.get(primary.protocol)
    if challenger is None or not challenger.valid > primary.valid:
        challenger = primary
    registry = Registry(cfg.registry_dir)
    labels = {
        "dataset": params.data.dataset, "protocol": primary.protocol, "kind": challenger.kind,
        "data_version": data_version(params.split.out_dir, primary.protocol), "git_commit": git_commit(),
    }
    files = challenger.model.to_files({"hp": challenger.params, "lm_model": params.lm.model})
    tag = registry.save(f"{params.serving.bento_name}-{challenger.kind}", files, metrics=challenger.test,
                        params=challenger.params, labels=labels)
    measured_against = registry.champion()
    champion = champion_metrics(registry, test_tasks[primary.protocol], labels["data_version"], items, vectors, params,
                                primary.test_phase)
    decision = decide(challenger.test, champion, cfg.gate)
    if decision.promote:
        try:
            registry.promote(tag, decision.reasons, expected=measured_against)
        except ChampionMoved as moved:  # another writer (a rollback, a run elsewhere): measure again next run
            decision = replace(decision, promote=False, reasons=[*decision.reasons, str(moved)])
    log.info("train: %s (%s) %s (%s)", tag, labels["kind"], "promoted" if decision.promote else "rejected", "; ".join(decision.reasons))

    def row(o) -> dict:
        out = {"params": o.params, "valid_ndcg_at_10": round(o.valid, 4), **{k: round(v, 4) for k, v in o.test.items()},
               "train": o.train_stats, "segments": o.segments, "users": o.users}
        if o.candidate_recall is not None:
            out["candidate_recall"] = {k: round(v, 4) for k, v in o.candidate_recall.items()}
        return out

    summary = {
        "model": tag, "kind": labels["kind"], "promoted": decision.promote, "reasons": decision.reasons,
        "champion": registry.champion(),
        "protocols": {
            p: {
                "scorer": row(o),
                **({"sequence": row(sequences[p])} if p in sequences else {}),
                **{run_.name: {"params": run_.params, **{k: round(v, 4) for k, v in run_.test.items()},
                               "segments": run_.segments, "users": run_.users} for run_ in baselines[p]},
            }
            for p, o in outcomes.items()
        },
    }
    write_json(summary, cfg.out_dir / "summary.json")
    plots.comparison(summary["protocols"], params.evaluate.k[0], cfg.out_dir / "plots" / "comparison.png")
    plots.segments(summary["protocols"], params.evaluate.k[0], cfg.out_dir / "plots" / "segments.png")
    # What DVC tracks: quality only, which a rerun reproduces (no timings, no model tag).
    quality = ("ndcg", "recall", "precision", "hit", "mrr", "coverage", "ild", "novelty")
    write_json({p: {name: {k: v for k, v in row.items() if k.split("_at_")[0] in quality}
                    for name, row in models.items()} for p, models in summary["protocols"].items()},
               cfg.out_dir / "metrics.json")
    return summary


def package_step(params: Params) -> dict:
    """Bundle the champion with what the service needs, and build the bento around it. The
    bundle names the online store version the profiles step loaded: publishing it is the
    switch (``features.online``)."""
    from features.online import drop, published
    from models.registry import Registry
    from serving.bundle import build_bento, served_store, write_bundle

    registry = Registry(params.train.registry_dir)
    tag = registry.champion()
    if tag is None:
        raise RuntimeError(f"no champion in {params.train.registry_dir} to package: train (and promote) a model first")
    online, before = published(params.features), served_store(params.serving.bundle_dir)
    with staged_dir(params.serving.bundle_dir) as out:
        write_bundle(params, tag, registry.info(tag), out)
    try:  # the bento before this one may still be serving: its version stays until the next switch
        drop(online, {online.project} | ({before.project} if before else set()))
    except Exception as error:  # noqa: BLE001 - the switch is done; old rows only cost space
        log.warning("package: old online store versions not dropped (%s); the next package tries again", error)
    bento = build_bento(params, tag)
    log.info("package: %s with %s on online store %s -> bento %s (serve: bentoml serve %s)",
             params.serving.bundle_dir, tag, online.project, bento, bento)
    return {"model": tag, "bento": bento, "bundle": str(params.serving.bundle_dir), "online_project": online.project}

"""The package step's output: the serving bundle and the bento built around it.

The bundle is what the service needs besides code and the model: the champion's tag and
kind, the params sections the service reads (``SECTIONS``: the package step's params in
dvc.yaml, so a change to any of them, and only to them, repackages), the catalogue, the item
vectors and the events it learnt from. The bento packs the bundle, the code and the model (by tag), so that
``bentoml serve <bento tag>`` runs anywhere the online store and event log are reachable.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from flows.config import Params, StoreConfig
from models.ann import Neighbourhood
from models.lm_score import ItemVectors

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "serving.service:Recommender"
SECTIONS = ("data", "validate", "features", "train", "serving")  # params.yaml sections the service reads
# What the bento's source holds: the packages the service imports, and the bundle.
PACKAGES = ("features", "flows", "models", "serving")


@dataclass
class Bundle:
    """What the package step writes for the service (``write_bundle``), loaded."""

    params: Params
    model: str  # tag in the BentoML model store
    kind: str  # scorer | sequence
    hp: dict
    events: pd.DataFrame
    items: pd.DataFrame
    vectors: ItemVectors
    published: str | None = None  # which write of the package step it is
    neighbourhood: Neighbourhood | None = None  # a large catalogue's LM index (``models.ann``)



def write_bundle(params: Params, model: str, info: dict, out: Path) -> Path:
    """Write the bundle for ``model`` (a registry tag with its ``info``) into ``out``.

    The online store is the version the profiles step loaded (``features.online``): the
    bundle's publication switches the service to it. Paths the service opens at run time
    (online store, event log) are made absolute: the bento's working folder is not this one."""
    from features.online import published

    out.mkdir(parents=True, exist_ok=True)
    store = published(params.features)
    runtime = params.model_copy(update={
        "features": params.features.model_copy(update={"store": store.model_copy(update={"local_dir": Path(store.local_dir).resolve()})}),
        "serving": params.serving.model_copy(update={"events_log": Path(params.serving.events_log).resolve()}),
    })
    manifest = {
        # Unique per write: a reader that finds it changed while it read knows it read across two.
        "published": f"{datetime.now(timezone.utc).isoformat(timespec='microseconds')}-{uuid.uuid4().hex[:8]}",
        "model": model, "kind": info["labels"].get("kind", "scorer"), "hp": info["params"],
        "labels": info["labels"], "metrics": info["metrics"],
        "params": {k: v for k, v in runtime.model_dump(mode="json", by_alias=True).items() if k in SECTIONS},
    }
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    validated = params.validation.validated_dir
    shutil.copyfile(validated / "events.parquet", out / "events.parquet")
    shutil.copyfile(validated / "items.parquet", out / "items.parquet")
    shutil.copyfile(params.lm.out, out / "items.npz")
    write_neighbourhood(params, out)
    return out


def write_neighbourhood(params: Params, out: Path) -> None:
    """A large catalogue's vector index and neighbour lists (``models.pool``), built here once
    rather than by every worker of every replica at start: 200k items take minutes."""
    import numpy as np

    from models.embeddings import load_vectors
    from models.lm_score import normalise

    item_ids = np.unique(pd.read_parquet(out / "events.parquet", columns=["item_id"])["item_id"].to_numpy())  # Interactions' columns
    if not params.train.candidates.pooled(len(item_ids)):
        return
    known, vectors, _ = load_vectors(out / "items.npz")
    unit = normalise(ItemVectors(known, vectors).aligned(item_ids))
    Neighbourhood.build(item_ids, unit, params.train.candidates.ann).save(out)


def build_bento(params: Params, model: str) -> str:
    """``bentoml build`` of the service around the current bundle; returns the bento tag.

    The build context is assembled in a temporary folder (the packages, params.yaml, the
    locked requirements and the bundle as ``bundle/``) and built by the ``bentoml`` CLI in a
    process of its own, which imports the service from there and nowhere else."""
    import os
    import subprocess
    import sys
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="decayrec-bento-") as tmp:
        context = Path(tmp)
        for package in PACKAGES:
            shutil.copytree(ROOT / package, context / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copyfile(ROOT / "params.yaml", context / "params.yaml")
        # torch first and pinned, as the Makefile installs it, then the locked set.
        (context / "requirements.txt").write_text("torch==2.13.0\n" + (ROOT / "requirements.lock").read_text())
        shutil.copytree(params.serving.bundle_dir, context / "bundle")
        bentofile = {
            "service": SERVICE,
            "name": params.serving.bento_name,
            "labels": {"model": model.replace(":", "_"), "dataset": params.data.dataset},
            "description": "decayrec: time-decayed, LM-augmented recommendations (recommend, explain, similar, events)",
            "include": [f"{p}/**" for p in PACKAGES] + ["bundle/*", "params.yaml", "requirements.txt"],
            "exclude": ["__pycache__", "*.pyc"],
            "python": {"requirements_txt": "requirements.txt", "lock_packages": False},
            "envs": [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "BENTOML_DO_NOT_TRACK", "value": "true"}],
            "models": [model],
        }
        (context / "bentofile.yaml").write_text(yaml.safe_dump(bentofile, sort_keys=False))
        env = {**os.environ, "PYTHONPATH": str(context), "DECAYREC_BUNDLE": str(context / "bundle")}
        done = subprocess.run([sys.executable, "-m", "bentoml", "build", str(context), "--output", "tag"],
                              cwd=context, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{done.stderr[-3000:]}")
    tags = [line.split("__tag__:", 1)[1].strip() for line in done.stdout.splitlines() if "__tag__:" in line]
    if not tags:
        raise RuntimeError(f"bentoml build printed no tag:\n{done.stdout[-2000:]}")
    return tags[-1]


def served_store(folder: str | Path) -> StoreConfig | None:
    """The online store the bundle in ``folder`` names; None when there is no bundle (or
    one that cannot be read)."""
    try:
        manifest = json.loads((Path(folder) / "bundle.json").read_text())
        return StoreConfig.model_validate(manifest["params"]["features"]["store"])
    except (OSError, ValueError, KeyError):
        return None


def load_bundle(folder: str | Path, attempts: int = 20) -> Bundle:
    """The package step's bundle (``write_bundle``), loaded wholly from one publication.

    The package step replaces the folder in one step (``models.files.replace_dir``); a read
    that a replacement overtook (the manifest's ``published`` changed between the first
    file and the last, or a file vanished) is read again."""
    import time

    from models.embeddings import load_vectors

    folder = Path(folder)
    for attempt in range(attempts):
        try:
            manifest = json.loads((folder / "bundle.json").read_text())
            item_ids, vectors, _ = load_vectors(folder / "items.npz")
            events, items = pd.read_parquet(folder / "events.parquet"), pd.read_parquet(folder / "items.parquet")
            if json.loads((folder / "bundle.json").read_text()).get("published") == manifest.get("published"):
                return Bundle(params=Params.model_validate(manifest["params"]), model=manifest["model"],
                              kind=manifest["kind"], hp=manifest["hp"], events=events, items=items,
                              vectors=ItemVectors(item_ids, vectors), published=manifest.get("published"),
                              neighbourhood=Neighbourhood.load(folder))
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"{folder}: the bundle kept changing while it was read ({attempts} attempts)")

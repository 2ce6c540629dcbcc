"""The online store, published whole: each version of the feature tables is loaded into a
Feast project of its own, and readers move to it in one step.

A run never writes into the project the service reads. The profiles step (the last step
that makes feature tables) loads every view into the project named by a hash of the tables,
their decay settings and the feature repository (``version``), then writes that name into
its output folder (``POINTER``). The package step copies the name into the bundle, and the
bundle's publication (one folder swap, ``models.files.replace_dir``) is the switch: a
service serves the project its bundle names, so it never reads half of one run's rows and
half of another's, and a run that fails or times out before the switch leaves the served
project as it was. The same tables always make the same name, so a rerun on unchanged data
loads nothing (``load`` skips the views already loaded).

Each switch drops the versions that neither the new bundle nor the one before it names: a
service still running on the previous bento keeps its rows until the next switch. Live
events reach a new version from the event log when the first service on it starts
(``serving.engine``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.config import FeaturesConfig, StoreConfig

log = logging.getLogger(__name__)

POINTER = "online.json"  # in the profiles folder: the project its tables were loaded into
DEFINITIONS = Path(__file__).resolve().parent / "feature_repo" / "definitions.py"


def version(cfg: FeaturesConfig) -> StoreConfig:
    """The store config of the project for the tables now in ``cfg.out_dir`` and
    ``cfg.profiles_dir``: ``<project>_<12 hex digits>``, a hash of the tables' bytes, the
    decay settings and the view definitions."""
    from features.store import made_with

    digest = hashlib.sha256(made_with(cfg).encode())
    digest.update(DEFINITIONS.read_bytes())
    for path in _tables(cfg):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return cfg.store.model_copy(update={"project": f"{cfg.store.project}_{digest.hexdigest()[:12]}"})


def _tables(cfg: FeaturesConfig) -> list[Path]:
    from features.store import DECAY_VIEWS, LM_VIEWS

    found = [Path(cfg.out_dir) / f"{v}.parquet" for v in DECAY_VIEWS] + [Path(cfg.profiles_dir) / f"{v}.parquet" for v in LM_VIEWS]
    missing = [str(p) for p in found if not p.exists()]
    if missing:
        raise FileNotFoundError(f"feature tables missing: {missing} (run `decayrec features` and `decayrec profiles`)")
    return found


def load(cfg: FeaturesConfig, start: datetime, end: datetime) -> StoreConfig:
    """Load the tables into their version's project (every view not loaded there yet) and
    point the profiles folder at it; returns the version's store config."""
    from features.feature_repo.definitions import repository
    from features.store import DECAY_VIEWS, LM_VIEWS, apply, made_with, materialize, open_store, write_feature_store_yaml
    from models.files import atomic_write

    target = version(cfg)
    store = open_store(target)
    kinds = _id_kind(Path(cfg.out_dir) / "user_interest.parquet", "user_id"), _id_kind(Path(cfg.out_dir) / "item_popularity.parquet", "item_id")
    apply(store, repository(cfg.out_dir, cfg.profiles_dir, made_with(cfg), *kinds))
    pending = tuple(v for v in DECAY_VIEWS + LM_VIEWS if not store.get_feature_view(v).materialization_intervals)
    if pending:
        materialize(store, start, end, pending, cfg.materialize_window_days)
    log.info("online store: %s %s (%s profile)", target.project,
             f"loaded {list(pending)}" if pending else "already loaded", target.profile)
    atomic_write(Path(cfg.profiles_dir) / POINTER, lambda f: f.write(json.dumps({"project": target.project}).encode() + b"\n"))
    write_feature_store_yaml(target)  # Feast's CLI looks at the version just loaded
    return target


def _id_kind(table: Path, column: str) -> str:
    """The kind of a table's id column, from its Parquet schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return "int" if pa.types.is_integer(pq.read_schema(table).field(column).type) else "str"


def published(cfg: FeaturesConfig) -> StoreConfig:
    """The store config of the version the profiles step last loaded."""
    pointer = Path(cfg.profiles_dir) / POINTER
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer}: no online store version has been loaded: run `decayrec profiles`")
    return cfg.store.model_copy(update={"project": json.loads(pointer.read_text())["project"]})


def versions(cfg: StoreConfig) -> list[str]:
    """The projects in the registry that are versions of ``cfg.project`` (by name)."""
    from features.store import open_store

    pattern = re.compile(rf"{re.escape(_base(cfg.project))}_[0-9a-f]{{12}}")
    return sorted(p.name for p in open_store(cfg).list_projects() if pattern.fullmatch(p.name))


def _base(project: str) -> str:
    return re.sub(r"_[0-9a-f]{12}$", "", project)


def drop(cfg: StoreConfig, keep: set[str]) -> list[str]:
    """Delete every version of ``cfg.project`` not in ``keep``: its online rows (SQLite
    tables, Redis fields) and its registry objects. Returns the projects dropped."""
    from features.store import open_store

    dropped = []
    for name in versions(cfg):
        if name in keep:
            continue
        store = open_store(cfg.model_copy(update={"project": name}))
        objects = [*store.list_feature_services(), *store.list_feature_views(), *store.list_data_sources(), *store.list_entities()]
        store.apply([], objects_to_delete=objects, partial=False)
        store.delete_project(name)
        dropped.append(name)
    if dropped:
        log.info("online store: dropped versions %s (kept %s)", dropped, sorted(keep))
    return dropped

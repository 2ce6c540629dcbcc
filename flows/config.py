"""Typed configuration, loaded once from ``params.yaml`` (the file DVC tracks)."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

MIRROR_ENV = "DECAYREC_DATA_MIRROR"


class _Strict(BaseModel):
    # A misspelt key in params.yaml must fail loudly, not fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


IdKind = Literal["int", "str"]


class IdsConfig(_Strict):
    """What the source's ids are: integers (MovieLens), or strings kept as written (a shop's
    ``C00017``, ``SKU-4411-B``, and ``007`` stays ``007``)."""

    user_id: IdKind = "int"
    item_id: IdKind = "int"


class TabularConfig(_Strict):
    """A user's own event log and catalogue (CSV or Parquet) and how its columns map."""

    events: Path | None = None
    items: Path | None = None
    ids: IdsConfig = IdsConfig()
    delimiter: str = ","
    encoding: str = "utf-8"
    # canonical name -> the file's column name; event_type is optional
    event_columns: dict[str, str] = Field(
        default_factory=lambda: {
            "user_id": "userId",
            "item_id": "movieId",
            "value": "rating",
            "timestamp": "timestamp",
        }
    )
    item_columns: dict[str, str] = Field(
        default_factory=lambda: {"item_id": "movieId", "title": "title", "categories": "genres"}
    )
    category_separator: str = "|"
    timestamp_format: Literal["epoch_s", "iso"] = "epoch_s"
    event_type: str = "rating"


class ShopSettings(_Strict):
    """The bundled shop log's generator (``features.shop``): sizes, funnel rates, rebuys."""

    customers: int = Field(2000, ge=1)
    products: int = Field(800, ge=8)  # at least one per category
    sessions_per_customer: float = Field(9.0, gt=0)  # Poisson mean over the year
    start: str = "2024-01-01"
    days: int = Field(365, ge=30)
    views_per_session: float = Field(3.0, gt=0)  # Poisson mean, at least one
    cart_rate: float = Field(0.35, ge=0, le=1)  # a session puts its last view in the cart
    buy_rate: float = Field(0.6, ge=0, le=1)  # a cart is bought
    rebuy_days: float = Field(30.0, gt=0)  # consumables are bought again about this often
    trending_share: float = Field(0.05, ge=0, le=1)  # products that trend for a few weeks
    new_share: float = Field(0.05, ge=0, lt=1)  # products that arrive late, text only
    seed: int = 7


class DataConfig(_Strict):
    dataset: Literal["ml-latest-small", "ml-100k", "ml-1m", "csv", "parquet", "shop"] = "ml-latest-small"
    bundled_dir: Path = Path("data/raw")
    mirror: Path | None = None
    download: bool = True
    download_dir: Path = Path("data/downloads")
    tmdb: Literal["auto", "off"] = "off"
    max_tags_per_item: int = 20
    interim_dir: Path = Path("data/interim")
    # Whether a user's own past items may be recommended again: evaluation counts them as
    # hits, training keeps them among candidates, serving returns them. A shop's customers
    # rebuy; nobody rates a film twice.
    repeats: bool = False
    tabular: TabularConfig = TabularConfig()
    shop: ShopSettings = ShopSettings()

    @property
    def ids(self) -> IdsConfig:
        """The ids' kinds: a user's own files say theirs, the bundled shop's are strings,
        MovieLens numbers everything."""
        if self.dataset == "shop":
            return IdsConfig(user_id="str", item_id="str")
        return self.tabular.ids if self.dataset in ("csv", "parquet") else IdsConfig()

    @field_validator("tmdb", mode="before")
    @classmethod
    def _off(cls, value):
        # YAML 1.1 reads an unquoted off as false, and `dvc exp run -S` rewrites params.yaml
        # without the quotes.
        return "off" if value is False else value


class ValidationConfig(_Strict):
    min_timestamp: datetime = datetime(1995, 1, 1, tzinfo=timezone.utc)
    # Epoch seconds above this are milliseconds in disguise (1e11 s is the year 5138).
    max_epoch_seconds: float = 1e11
    value_min: float = 0.5
    value_max: float = 5.0
    # Per event type, where its values differ (a purchase quantity is not a rating):
    # type -> [min, max]; other types keep [value_min, value_max].
    value_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    min_events: int = 1000
    min_items: int = 10
    quarantine: bool = False
    max_quarantine_fraction: float = 0.01
    example_rows: int = 5
    validated_dir: Path = Path("data/validated")
    docs_dir: Path = Path("reports/validation")  # the pipeline's Data Docs
    checks_docs_dir: Path = Path("reports/validation-checks")  # `decayrec validate --events`'s own site
    docs_keep_runs: int = Field(10, ge=1)  # past runs each site lists (GE re-renders them all on each build)

    @field_validator("min_timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class P0Config(_Strict):
    min_value: float = 3.0
    core: int = 10
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2020


class SplitConfig(_Strict):
    protocols: list[Literal["P0", "P1", "P2"]] = ["P1", "P2", "P0"]
    # Fewer evaluable validation or test users than this and a protocol's figures say little:
    # the split step warns, and `decayrec run` prints the warning.
    min_evaluable_users: int = 100
    p1_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    p0: P0Config = P0Config()
    out_dir: Path = Path("data/splits")


class SegmentConfig(_Strict):
    cold_user_events: int = 10  # "cold": fewer than this many items in the fitting data
    active_user_share: float = 0.1  # "active": the top 10% of users by fitting items
    head_share: float = 0.2  # long tail: items outside the most popular 20% (by interactions)
    cold_item_events: int = 10  # "cold" items: fewer than this many users in the fitting data


class EvaluateConfig(_Strict):
    protocols: list[Literal["P0", "P1", "P2"]] = ["P2"]
    k: list[int] = [10, 20]
    target: str = "ndcg_at_10"  # what tuning on validation maximises
    # model name -> hyperparameter grid (each value a list); tuned on validation
    models: dict[str, dict[str, list]] = Field(default_factory=dict)
    segments: SegmentConfig = SegmentConfig()
    score_batch: int = 2048  # users scored at once: bounds memory to batch x items floats
    # Evaluated users per phase (a seeded sample; None: all): with train.max_users and
    # train.seed 0, the very users the scorer is measured on.
    max_users: int | None = None
    out_dir: Path = Path("reports/evaluation")


class StoreConfig(_Strict):
    """Where Feast keeps its registry and online store."""

    profile: Literal["local", "production"] = "local"
    project: str = "decayrec"
    local_dir: Path = Path("data/feast")  # local: registry.db and online.db (SQLite)
    redis: str = "127.0.0.1:6379,db=0"  # production online store
    postgres: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # production registry
    postgres_schema: str = "public"


class FeaturesConfig(_Strict):
    user_half_life_days: float = 30.0
    item_short_half_life_days: float = 7.0
    item_long_half_life_days: float = 90.0
    windows_days: tuple[int, ...] = (7, 30)
    # Interest an event adds before decay: weight of its type, times its value if "value".
    event_weights: dict[str, float] = Field(default_factory=lambda: {"rating": 1.0})
    value_mode: Literal["one", "value"] = "one"
    # Events per slice of users whose feature rows and LM profiles are computed at once (a
    # user is never split): bounds the features and profiles steps' working memory; None: all at once.
    chunk_events: int | None = 500_000
    # Days of feature rows Feast loads online at once (None: all): it holds them in memory.
    materialize_window_days: float | None = None
    out_dir: Path = Path("data/features")
    profiles_dir: Path = Path("data/profiles")  # LM profiles (decayrec profiles), a later stage
    store: StoreConfig = StoreConfig()


class LMSettings(_Strict):
    """Which model embeds item text, and how (``models.lm``, ``models.embeddings``)."""

    model: str = "minilm"  # minilm | smollm2 | a local model folder or .gguf file
    kind: Literal["auto", "encoder", "decoder"] = "auto"  # auto: read config.json
    batch_size: int = 64  # texts per forward pass
    max_length: int | None = None  # tokens per text; None: the model's own (MiniLM: 256)
    device: str = "auto"  # auto: cuda when present, else cpu
    progress: bool = True  # a tqdm bar over batches on stderr
    cache_dir: Path = Path("data/embeddings/cache")  # one folder per model_id
    out: Path = Path("data/embeddings/items.npz")


class AnnSettings(_Strict):
    """The LM neighbour index (``models.ann``): exact up to ``exact_max_items`` items, HNSW above."""

    # Up to this many items, candidates come from dense rows over the whole catalogue and
    # exact search; above it, from per-user pools (``models.pool``) and the HNSW graph.
    exact_max_items: int = 10_000
    m: int = 32  # graph links per item
    ef_construction: int = 80
    ef_search: int = 256  # breadth of a search; recall against exact is reported per size
    neighbours: int = 100  # LM neighbours kept per item: twice candidates.lm, room for seen ones
    ef_floor: int = Field(32, ge=1)  # breadth of the search for a profile's lowest cosine (the floor LM is scaled from)


class CandidateSettings(_Strict):
    cf: int = 150  # decayed item-CF (+ alpha x LM) top-N
    ease: int = 100  # EASE top-N
    lm: int = 50  # LM neighbours of the user's recent items
    pop: int = 50  # decayed popularity top-N
    recent_items: int = 5  # the user's latest items whose LM neighbours are taken
    ann: AnnSettings = AnnSettings()

    def pooled(self, n_items: int) -> bool:
        """Whether a catalogue of ``n_items`` gets pooled candidates (``models.pool``)."""
        return n_items > self.ann.exact_max_items

    @property
    def width(self) -> int:
        return self.cf + self.ease + self.lm + self.pop


class ScorerSettings(_Strict):
    """The torch scorer (``models.scorer``); the search varies lr, hidden, dropout, weight_decay."""

    hidden: int = 64
    proj: int = 32  # rank of the LM vector interaction
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-5
    negatives: int = 32  # sampled per positive from the user's candidates
    batch_users: int = 256
    max_epochs: int = 30
    patience: int = 3  # epochs without a better validation score before stopping
    seed: int = 0


class SequenceSettings(_Strict):
    """The next-item sequence model (``models.sequence``), and whether to train it at all."""

    enabled: bool = True
    dim: int = 64
    blocks: int = 2
    heads: int = 2
    max_len: int = 200
    dropout: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 30
    patience: int = 3
    timeout_s: float | None = None
    negatives: int = Field(default=0, ge=0)  # 0: full softmax; n: sampled softmax over n uniform negatives
    text: bool = True
    time_decay: bool = True
    seed: int = 0


class SpaceSettings(_Strict):
    """What the search draws from: [low, high] ranges, hidden a choice."""

    half_life_days: tuple[float, float] = (3.0, 365.0)  # log-uniform
    alpha: tuple[float, float] = (0.0, 1.0)
    ease_reg: tuple[float, float] = (100.0, 100_000.0)  # log-uniform
    lr: tuple[float, float] = (1e-3, 1e-2)  # log-uniform
    hidden: tuple[int, ...] = (32, 64, 128)
    dropout: tuple[float, float] = (0.0, 0.3)
    weight_decay: tuple[float, float] = (1e-6, 1e-3)  # log-uniform


class GuardSettings(_Strict):
    tolerance: float
    higher_is_better: bool = True


class GateSettings(_Strict):
    metric: str = "ndcg_at_10"
    margin: float = 0.01
    guards: dict[str, GuardSettings] = Field(
        default_factory=lambda: {
            "coverage_at_10": GuardSettings(tolerance=0.10),
            "ild_at_10": GuardSettings(tolerance=0.05),
            "p99_score_ms": GuardSettings(tolerance=0.5, higher_is_better=False),
        }
    )


class TrainConfig(_Strict):
    # The first one gates promotion. auto: P2 on ml-latest-small (too few users span a
    # global time split there, BENCHMARK.md), P1 then P2 elsewhere.
    protocols: Literal["auto"] | list[Literal["P1", "P2"]] = "auto"
    trials: int = 8
    timeout_s: float | None = None  # search budget in seconds (None: trials only)
    seed: int = 0
    label_share: float = 0.25
    label_windows: int = 1
    knn_k: int = 250
    ease_max_items: int | None = None  # EASE over the most interacted-with items only (cost is cubic)
    pop_half_life_days: float = 30.0
    p99_users: int = 200  # single-user scoring calls timed for the latency guard
    # Users per phase the scorer learns from, is validated and tested on (a seeded sample;
    # None: all). A view holds (users x candidates x features) floats: 1M users, 12 GB.
    max_users: int | None = None
    # The search's sample (None: max_users): every trial builds these users' candidates twice.
    search_max_users: int | None = None
    candidates: CandidateSettings = CandidateSettings()
    scorer: ScorerSettings = ScorerSettings()
    sequence: SequenceSettings = SequenceSettings()
    space: SpaceSettings = SpaceSettings()
    gate: GateSettings = GateSettings()
    registry_dir: Path = Path("data/registry")  # champion pointer and promotion log
    out_dir: Path = Path("reports/training")


class ClockConfig(_Strict):
    """What "now" is for the service, and how far from it a request's times may be. No
    request moves it: one client's timestamp cannot decay every other user's interest."""

    kind: Literal["data", "wall"] = "data"  # data: the training data's latest event (replays, demos) | wall: the system clock (live)
    past_s: float = Field(30 * 86_400.0, ge=0)  # events older than now - past_s are refused (late data belongs in a batch run)
    future_s: float = Field(300.0, ge=0)  # skew tolerated ahead of now, and behind it for context.at
    ahead_s: float = Field(365 * 86_400.0, ge=0)  # context.at may ask this far ahead of now


class ServingConfig(_Strict):
    """The service (serving/) and its bento, built by the package step."""

    bundle_dir: Path = Path("data/serving")  # what the bento packs: model tag, params, catalogue, events
    events_log: Path = Path("data/live/events.jsonl")  # live events, appended before they are acknowledged
    bento_name: str = "decayrec"
    host: str = "127.0.0.1"  # the default bind: loopback only; `bentoml serve --host 0.0.0.0` opens it on purpose
    token_env: str = "DECAYREC_TOKEN"  # the environment variable holding the write token; unset: /events is open
    max_k: int = Field(100, ge=1)
    max_exclude: int = Field(1000, ge=0)  # items in a /recommend exclude list
    max_events: int = Field(1000, ge=1)  # per POST /events
    max_body_bytes: int = Field(1_048_576, ge=1024)  # larger request bodies get a 413 before they are parsed
    clock: ClockConfig = ClockConfig()
    workers: int = 2  # processes; they share live events through the log
    torch_threads: int = 1  # per process: requests already run side by side
    signal_cache_mb: float = Field(256.0, ge=0)  # per worker: users' item-CF/EASE/LM score rows, kept until their events change (0: off)
    blas_threads: int = Field(1, ge=1)  # per process, numpy's BLAS: more threads than cores/workers thrash
    # Allocations up to this come from the heap, not fresh pages (glibc's largest: 32; 0: glibc's own)
    malloc_mmap_threshold_mb: float = Field(32.0, ge=0, le=32)
    max_batch: int = Field(32, ge=1)  # /recommend requests scored together at most (only those already waiting)
    timeout_s: float = Field(10.0, gt=0)  # a request not answered by then gets a 504
    access_log: bool = False  # a log line per request (costs throughput; the /metrics histograms count requests)
    trace_recommend: bool = False  # OpenTelemetry spans for /recommend (BentoML's tracing; they cost a fifth of its HTTP path)
    full_gc_every_s: float = Field(300.0, ge=0)  # full garbage collections on this timer, not under load (0: Python's own)


STEP_TIMEOUTS_S = {  # generous: a step past these is hung, not slow
    "ingest": 3600, "validate": 3600, "split": 3600, "features": 4 * 3600, "embed": 6 * 3600,
    "profiles": 4 * 3600, "evaluate": 6 * 3600, "train": 12 * 3600, "package": 3600,
}


class RunsConfig(_Strict):
    """How runs of the pipeline share a data set (flows/runs.py), whichever door starts them."""

    lock: Path = Path("data/run.lock")  # one run at a time on this data set: decayrec, dvc repro, Prefect
    on_overlap: Literal["skip", "queue"] = "skip"  # a run due while one is in flight: skipped, or queued behind it
    queue_wait_s: float = Field(6 * 3600.0, ge=0)  # with queue: how long a run waits for the one in flight
    timeout_s: dict[str, float] = Field(default_factory=lambda: dict(STEP_TIMEOUTS_S))  # per step; past it the run fails
    retries: int = Field(3, ge=0)  # a step that failed on a connection or timeout (a store briefly away), with backoff
    backoff_s: list[float] = [2.0, 5.0, 10.0]
    status: Path = Path("data/runs/status.json")  # the last success, the last failure and why (decayrec status)
    notify_env: str = "DECAYREC_NOTIFY_URL"  # env var with a URL: failed, timed-out, skipped or gate-refused runs POST a notice there
    notify_timeout_s: float = Field(5.0, gt=0)

    @field_validator("timeout_s")
    @classmethod
    def _known_steps(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(STEP_TIMEOUTS_S))
        if unknown:
            raise ValueError(f"runs.timeout_s: no step named {unknown}; steps: {sorted(STEP_TIMEOUTS_S)}")
        if any(not v > 0 for v in value.values()):
            raise ValueError("runs.timeout_s: every limit must be a positive number of seconds")
        return {**STEP_TIMEOUTS_S, **value}


def train_protocols(params: "Params") -> list[str]:
    if params.train.protocols != "auto":
        return list(params.train.protocols)
    return ["P2"] if params.data.dataset == "ml-latest-small" else ["P1", "P2"]


class Params(_Strict):
    data: DataConfig = DataConfig()
    validate_: ValidationConfig = Field(ValidationConfig(), alias="validate")
    split: SplitConfig = SplitConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    features: FeaturesConfig = FeaturesConfig()
    lm: LMSettings = LMSettings()
    train: TrainConfig = TrainConfig()
    serving: ServingConfig = ServingConfig()
    runs: RunsConfig = RunsConfig()

    @property
    def validation(self) -> ValidationConfig:
        return self.validate_


def rebase(params: Params, dataset: str) -> Params:
    """Params for another data set, whose outputs live in folders of their own.

    The folders in params.yaml belong to its data set and to DVC; running another data set
    from the command line must not overwrite them.
    """
    if dataset == params.data.dataset:
        return params
    data_root = Path("data/datasets") / dataset
    reports = Path("reports/datasets") / dataset
    return params.model_copy(
        update={
            "data": params.data.model_copy(update={"dataset": dataset, "interim_dir": data_root / "interim"}),
            "validate_": params.validation.model_copy(
                update={"validated_dir": data_root / "validated", "docs_dir": reports / "validation",
                        "checks_docs_dir": reports / "validation-checks"}
            ),
            "split": params.split.model_copy(update={"out_dir": data_root / "splits"}),
            "evaluate": params.evaluate.model_copy(update={"out_dir": reports / "evaluation"}),
            "train": params.train.model_copy(update={"out_dir": reports / "training", "registry_dir": data_root / "registry"}),
            # A bento of its own name: a run on this data set never moves another's latest.
            "serving": params.serving.model_copy(update={"bundle_dir": data_root / "serving", "events_log": data_root / "live" / "events.jsonl",
                                                         "bento_name": f"{params.serving.bento_name}-{dataset}"}),
            "lm": params.lm.model_copy(update={"out": data_root / "embeddings" / "items.npz"}),
            "runs": params.runs.model_copy(update={"lock": data_root / "run.lock", "status": data_root / "runs" / "status.json"}),
            "features": params.features.model_copy(
                update={
                    "out_dir": data_root / "features",
                    "profiles_dir": data_root / "profiles",
                    "store": params.features.store.model_copy(
                        update={"project": f"{params.features.store.project}_{dataset.replace('-', '_')}",
                                "local_dir": data_root / "feast"}
                    ),
                }
            ),
        }
    )


class ParamsError(ValueError):
    """A params file that cannot be used, in one line: which file, which key, what is wrong."""


def load_params(path: str | Path = "params.yaml", *, dataset: str | None = None) -> Params:
    """Read params.yaml; the mirror comes from DECAYREC_DATA_MIRROR when that is set."""
    from pydantic import ValidationError

    path = Path(path)
    raw, base = _read(path)
    data = dict(raw.get("data") or {})
    if os.environ.get(MIRROR_ENV):
        data["mirror"] = os.environ[MIRROR_ENV]
    raw["data"] = data
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(f"{path}: {_first_problem(error)}") from None
    if dataset is not None and dataset not in DATASETS:
        raise ParamsError(f"unsupported --dataset {dataset!r}: one of {', '.join(DATASETS)}")
    if base is not None and dataset is None:
        # A profile of another data set keeps its outputs out of the base file's folders.
        dataset = params.data.dataset
        params = params.model_copy(update={"data": params.data.model_copy(update={"dataset": base})})
    return rebase(params, dataset) if dataset else params


def _read(path: Path) -> tuple[dict, str | None]:
    """A params file's settings; a profile (``extends: params.yaml``) is merged over the file
    it extends, key by key. Also the data set of that file, for a profile (else None)."""
    if not path.exists():
        raise ParamsError(f"{path}: no such params file")
    raw = yaml.safe_load(path.read_text()) or {}
    parent = raw.pop("extends", None)
    if parent is None:
        return raw, None
    under, _ = _read(path.parent / parent)
    return _merged(under, raw), (under.get("data") or {}).get("dataset", DataConfig().dataset)


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


DATASETS = DataConfig.model_fields["dataset"].annotation.__args__


def _first_problem(error) -> str:
    """The first error of a params ``ValidationError`` as a sentence; an unknown key gets the
    closest valid one."""
    import difflib

    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] != "extra_forbidden":
        return f"{where}: {first['msg']}"
    model: type[BaseModel] = Params
    for part in first["loc"][:-1]:
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        annotation = fields[str(part)].annotation if str(part) in fields else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            break
    known = [f.alias or name for name, f in model.model_fields.items()] if model is not None else []
    close = difflib.get_close_matches(str(first["loc"][-1]), known, n=1)
    return f"unknown key {where!r}" + (f" (did you mean {close[0]!r}?)" if close else f" (valid here: {', '.join(known)})")

"""Great Expectations suites for the canonical events and items tables.

Each expectation carries a rule name (in its ``meta``) that a person reads in the summary.
Failures either stop the run (nothing downstream is written) or, with quarantine on, move
the offending rows aside with their reason when they are few enough.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from features.contract import epoch_seconds
from features.data_docs import prune, render_offline
from features.errors import Problem, ValidationFailed
from features.ids import RULES, TYPE_NAMES, kind_of

if TYPE_CHECKING:
    from features.adapters import Ingested
    from flows.config import ValidationConfig

log = logging.getLogger(__name__)

# Latin-1 bytes read as UTF-8 (or the reverse) leave these marks in text.
MOJIBAKE = r"Ã[\x80-\xbf]|Â[\x80-\xbf]|â€|\ufffd"
DUPLICATE_KEY = ["user_id", "item_id", "event_type", "timestamp"]


@dataclass
class RuleResult:
    rule: str
    column: str | None
    success: bool
    count: int
    rows: list[int]  # offending row positions; empty for table-level rules


@dataclass
class Validated:
    events: pd.DataFrame
    items: pd.DataFrame
    quarantined: dict[str, pd.DataFrame] = field(default_factory=dict)
    docs: str | None = None


def _context(docs_dir: Path, keep_runs: int):
    # GE reads these at import; it must neither phone home nor draw progress bars in logs.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # One project across runs: the Data Docs list past runs, the newest keep_runs of them
    # (with this one), so that the store GE re-renders on each build stays small.
    prune(docs_dir, keep_runs - 1)
    docs_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def events_rules(cfg: ValidationConfig, item_ids: list | None, now: datetime, kinds: dict[str, str] | None = None,
                 event_types: list[str] | None = None) -> list:
    """The events suite: ``item_ids`` the catalogue's, ``kinds`` the ids' ("int"/"str"),
    ``event_types`` those ``features.event_weights`` weighs (None: any)."""
    import great_expectations.expectations as gxe

    def rule(name: str, expectation_cls, **kwargs):
        return expectation_cls(meta={"rule": name}, **kwargs)

    rules = [rule("required column", gxe.ExpectColumnToExist, column=c) for c in DUPLICATE_KEY + ["value"]]
    kinds = kinds or {"user_id": "int", "item_id": "int"}
    rules += [
        rule(RULES[kinds[c]], gxe.ExpectColumnValuesToBeInTypeList, column=c, type_list=TYPE_NAMES[kinds[c]])
        for c in ("user_id", "item_id")
    ]
    rules += [rule("non-null", gxe.ExpectColumnValuesToNotBeNull, column=c) for c in DUPLICATE_KEY + ["value"]]
    if event_types is not None:
        rules.append(rule(f"event type in features.event_weights ({', '.join(sorted(event_types))})",
                          gxe.ExpectColumnValuesToBeInSet, column="event_type", value_set=sorted(event_types)))
    rules += _value_rules(cfg, rule, gxe)
    rules += [
        rule(
            "timestamps in seconds, not milliseconds",
            gxe.ExpectColumnValuesToBeBetween,
            column="timestamp",
            max_value=cfg.max_epoch_seconds,
        ),
        rule(
            f"timestamp after {cfg.min_timestamp:%Y-%m-%d} and not in the future",
            gxe.ExpectColumnValuesToBeBetween,
            column="timestamp",
            min_value=cfg.min_timestamp.timestamp(),
            max_value=now.timestamp(),
        ),
        rule("no duplicate events", gxe.ExpectCompoundColumnsToBeUnique, column_list=DUPLICATE_KEY),
        rule(f"at least {cfg.min_events} events", gxe.ExpectTableRowCountToBeBetween, min_value=cfg.min_events),
    ]
    if item_ids is not None:
        rules.append(rule("item in catalogue", gxe.ExpectColumnValuesToBeInSet, column="item_id", value_set=item_ids))
    return rules


def _value_rules(cfg: ValidationConfig, rule, gxe) -> list:
    """``value`` in range: each type of ``value_ranges`` in its own, the others in
    [value_min, value_max]."""
    own = sorted(cfg.value_ranges)
    rules = [
        rule(f"{kind} value in [{low:g}, {high:g}]", gxe.ExpectColumnValuesToBeBetween, column="value", min_value=low,
             max_value=high, row_condition=f"event_type == {kind!r}", condition_parser="pandas")
        for kind, (low, high) in sorted(cfg.value_ranges.items())
    ]
    rest = {"row_condition": f"event_type not in {own!r}", "condition_parser": "pandas"} if own else {}
    rules.append(rule(f"value in [{cfg.value_min}, {cfg.value_max}]", gxe.ExpectColumnValuesToBeBetween, column="value",
                      min_value=cfg.value_min, max_value=cfg.value_max, **rest))
    return rules


def items_rules(cfg: ValidationConfig, kind: str = "int") -> list:
    import great_expectations.expectations as gxe

    def rule(name: str, expectation_cls, **kwargs):
        return expectation_cls(meta={"rule": name}, **kwargs)

    return [
        *(rule("required column", gxe.ExpectColumnToExist, column=c) for c in ("item_id", "title")),
        rule(RULES[kind], gxe.ExpectColumnValuesToBeInTypeList, column="item_id", type_list=TYPE_NAMES[kind]),
        rule("non-null", gxe.ExpectColumnValuesToNotBeNull, column="item_id"),
        rule("non-null", gxe.ExpectColumnValuesToNotBeNull, column="title"),
        rule("unique item ids", gxe.ExpectColumnValuesToBeUnique, column="item_id"),
        rule("readable text (no mojibake: check the encoding)", gxe.ExpectColumnValuesToNotMatchRegex, column="title", regex=MOJIBAKE),
        rule(f"at least {cfg.min_items} items", gxe.ExpectTableRowCountToBeBetween, min_value=cfg.min_items),
    ]


def run_rules(context, table: str, frame: pd.DataFrame, rules: list, run_name: str = "validate") -> tuple[list[RuleResult], str | None]:
    """Run a suite through a checkpoint (which also updates the Data Docs, then made
    readable offline: ``features.data_docs``)."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    source = context.data_sources.add_or_update_pandas(f"{table}_source")
    asset = source.add_dataframe_asset(table)
    batch = asset.add_batch_definition_whole_dataframe(f"{table}_batch")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=f"{table}_suite", expectations=rules))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{table}_validation", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{table}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE", "include_unexpected_rows": False},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
    results = []
    for run in outcome.run_results.values():
        for item in run.results:
            config = item.expectation_config
            kwargs = config.kwargs
            column = kwargs.get("column") or ",".join(kwargs.get("column_list", [])) or None
            result = item.result or {}
            rows = [int(i) for i in result.get("unexpected_index_list") or []]
            count = result.get("unexpected_count")
            if count is None:
                count = 0 if item.success else max(len(rows), 1)
            results.append(RuleResult(config.meta["rule"], column, bool(item.success), int(count), rows))
    docs = context.get_docs_sites_urls()
    if not docs:
        return results, None
    render_offline(Path(url2pathname(urlparse(docs[0]["site_url"]).path)))
    return results, docs[0]["site_url"]


def _problems(results: list[RuleResult], frame: pd.DataFrame, source: dict, examples: int) -> list[Problem]:
    problems = []
    first_line = source.get("first_line")
    for result in results:
        if result.success:
            continue
        shown = []
        for row in result.rows[:examples]:
            example: dict[str, Any] = {"row": row}
            if first_line is not None:
                example["line"] = first_line + row
            for column in (result.column or "").split(","):
                if column in frame.columns:
                    example[column] = frame[column].iloc[row]
            shown.append(example)
        fraction = result.count / len(frame) if len(frame) and result.rows else None
        problems.append(Problem(result.rule, result.column, result.count, shown, fraction))
    return problems


def _quarantine(frame: pd.DataFrame, results: list[RuleResult]) -> pd.Series:
    """Reason per offending row (row-level rules only); duplicates keep their first copy."""
    reasons = pd.Series(pd.NA, index=range(len(frame)), dtype="string")
    for result in results:
        if result.success:
            continue
        rows = pd.Index(result.rows)
        if result.rule == "no duplicate events":
            repeats = frame.iloc[rows].duplicated(subset=DUPLICATE_KEY, keep="first").to_numpy()
            rows = rows[repeats]
        fresh = reasons.iloc[rows].isna().to_numpy()
        reasons.iloc[rows[fresh]] = result.rule
    return reasons


def _check(
    context,
    table: str,
    frame: pd.DataFrame,
    view: pd.DataFrame,
    rules: list,
    source: dict,
    cfg: ValidationConfig,
    run_name: str,
) -> tuple[pd.DataFrame, pd.DataFrame | None, str | None]:
    """Validate one table: passes, quarantines a few rows, or raises ValidationFailed."""
    results, docs = run_rules(context, table, view, rules, run_name)
    problems = _problems(results, view, source, cfg.example_rows)
    if not problems:
        return frame, None, docs
    file = source.get("file", table)
    table_level = [r for r in results if not r.success and not r.rows]
    if not cfg.quarantine or table_level:
        raise ValidationFailed(table, file, problems, docs)
    reasons = _quarantine(view, results)
    bad = reasons.notna().to_numpy()
    share = bad.mean()
    if share > cfg.max_quarantine_fraction:
        problems.append(
            Problem(f"quarantine at most {cfg.max_quarantine_fraction:.2%} of rows", None, int(bad.sum()), [], share)
        )
        raise ValidationFailed(table, file, problems, docs)
    log.warning("%s: quarantined %d row(s) (%.2f%%)", table, bad.sum(), 100 * share)
    quarantined = frame.loc[bad].assign(reason=reasons[bad].to_numpy(), row=bad.nonzero()[0])
    return frame.loc[~bad].reset_index(drop=True), quarantined, docs


def events_view(events: pd.DataFrame) -> pd.DataFrame:
    """What the suite sees: timestamps as epoch seconds, so range rules are plain numbers."""
    view = events.reset_index(drop=True).copy()
    if "timestamp" in view.columns:
        view["timestamp"] = epoch_seconds(view["timestamp"])
    # Plain float64 (NaN for null): GE's range checks map masked arrays element by element.
    for column in ("value", "timestamp"):
        if column in view.columns and pd.api.types.is_numeric_dtype(view[column]):
            view[column] = view[column].to_numpy(dtype="float64", na_value=float("nan"))
    return view


def items_view(items: pd.DataFrame) -> pd.DataFrame:
    # Lists are unhashable for GE's value checks; the suite looks at scalar columns only.
    return items.drop(columns=[c for c in ("categories", "tags") if c in items.columns]).reset_index(drop=True)


def validate_tables(ingested: Ingested, cfg: ValidationConfig, now: datetime | None = None,
                    event_types: list[str] | None = None, run_name: str = "validate") -> Validated:
    """Validate items, then events against the surviving catalogue (and, given
    ``event_types``, against the event types the features weigh); ``run_name`` names the
    run in the Data Docs.

    Raises:
        ValidationFailed: with a readable summary; nothing has been written.
    """
    now = now or datetime.now(timezone.utc)
    context = _context(Path(cfg.docs_dir), cfg.docs_keep_runs)
    items, items_out, _ = _check(
        context, "items", ingested.items.reset_index(drop=True), items_view(ingested.items),
        items_rules(cfg, kind_of(ingested.items["item_id"])), ingested.sources.get("items", {}), cfg, run_name,
    )
    item_ids = sorted(items["item_id"].dropna().unique().tolist())
    kinds = {c: kind_of(ingested.events[c]) for c in ("user_id", "item_id")}
    events, events_out, docs = _check(
        context, "events", ingested.events.reset_index(drop=True), events_view(ingested.events),
        events_rules(cfg, item_ids, now, kinds, event_types), ingested.sources.get("events", {}), cfg, run_name,
    )
    quarantined = {name: q for name, q in (("items", items_out), ("events", events_out)) if q is not None}
    return Validated(events, items, quarantined, docs)

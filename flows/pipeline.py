"""The pipeline as one step table. Everything else is made from it: ``decayrec run`` runs its
steps in order, ``dvc.yaml`` is generated from it (``decayrec dag --write``; a test fails
when the committed file differs), and the Prefect flow (``flows/retrain.py``) keys each
task's cache on the same inputs, params sections and code. The CLI, DVC and Prefect are
three doors onto the same step functions (``flows/steps.py``).

For each step: what it reads and writes (paths from ``params.yaml``), the params sections
whose settings it reads (folders come with the files), and its code, which is not listed:
``flows.code_deps`` reads it from the step function's imports, at any depth.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flows import steps
from flows.code_deps import ROOT, closure, function_files, module_file, relative
from flows.config import Params
from flows.runs import time_limit
from serving import bundle

log = logging.getLogger(__name__)

Paths = Callable[[Params], list[Path]]


def _none(_params: Params) -> list[Path]:
    return []


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Params], dict]
    reads: Paths
    writes: Paths  # cached by DVC (data)
    sections: tuple[str, ...]  # params.yaml sections (or one key of one: lm.model), by their names there
    reports: Paths = _none  # written, not cached (small, in git)
    metrics: Paths = _none
    plots: Paths = _none
    runs_also: tuple[str, ...] = ()  # modules it runs without importing them (``bentoml build`` imports the service)
    files: tuple[str, ...] = ()  # non-Python files it reads from the source tree
    in_run: bool = True  # part of ``decayrec run`` (evaluate is not: it tunes every baseline)
    note: str = ""

    def code(self) -> list[str]:
        """The source files this step runs, relative to the project root."""
        found = function_files(self.run) | closure(module_file(m) for m in self.runs_also)
        return relative(found) + list(self.files)

    def outputs(self, params: Params) -> list[Path]:
        return [*self.writes(params), *self.reports(params), *self.metrics(params), *self.plots(params)]


def _validated(p: Params) -> list[Path]:
    return [p.validation.validated_dir / "events.parquet", p.validation.validated_dir / "items.parquet"]


STEPS: list[Step] = [
    Step("ingest", steps.ingest_step, reads=lambda p: [p.data.bundled_dir / p.data.dataset],
         writes=lambda p: [p.data.interim_dir], sections=("data",)),
    Step("validate", steps.validate_step, reads=lambda p: [p.data.interim_dir],
         writes=lambda p: [p.validation.validated_dir], sections=("validate", "features.event_weights")),
    Step("split", steps.split_step, reads=lambda p: [p.validation.validated_dir / "events.parquet"],
         writes=lambda p: [p.split.out_dir], sections=("split", "data.repeats")),
    Step("features", steps.features_step, reads=_validated, writes=lambda p: [p.features.out_dir], sections=("features",)),
    Step("embed", steps.embed_step, reads=lambda p: [p.validation.validated_dir / "items.parquet"],
         writes=lambda p: [p.lm.out], sections=("lm",)),
    Step("profiles", steps.profiles_step, reads=lambda p: [p.validation.validated_dir / "events.parquet", p.lm.out],
         writes=lambda p: [p.features.profiles_dir], sections=("features",)),
    Step("evaluate", steps.evaluate_step, reads=lambda p: [p.split.out_dir, p.validation.validated_dir / "items.parquet"],
         writes=_none, sections=("evaluate", "data.repeats"), reports=lambda p: [p.evaluate.out_dir / "report.md"],
         metrics=lambda p: [p.evaluate.out_dir / "metrics.json"], plots=lambda p: [p.evaluate.out_dir / "plots"],
         in_run=False),
    Step("train", steps.train_step, reads=lambda p: [p.split.out_dir, p.validation.validated_dir / "items.parquet", p.lm.out],
         writes=_none, sections=("train", "evaluate", "features", "lm.model", "data.repeats", "serving.bento_name"),
         reports=lambda p: [p.train.out_dir / "summary.json"], metrics=lambda p: [p.train.out_dir / "metrics.json"],
         plots=lambda p: [p.train.out_dir / "plots"],
         note="The registry (data/registry) is state, not an output: the gate compares against it."),
    # The service reads the online store version the profiles step loaded: its tables and
    # the pointer beside them (profiles_dir/online.json) stand for it (the store is state).
    Step("package", steps.package_step, reads=lambda p: [p.train.out_dir / "summary.json", p.validation.validated_dir, p.lm.out,
                                                         p.features.out_dir, p.features.profiles_dir],
         writes=_none, sections=bundle.SECTIONS,
         reports=lambda p: [p.serving.bundle_dir], runs_also=("serving.service",), files=("serving/static/demo.html",)),
]
BY_NAME = {step.name: step for step in STEPS}


def run_all(params: Params, names: list[str] | None = None) -> tuple[dict[str, dict], dict[str, float]]:
    """Run the steps (those of ``decayrec run``, or ``names``) in order; returns each one's
    summary and seconds."""
    results, seconds = {}, {}
    chosen = [s for s in STEPS if (s.in_run if names is None else s.name in names)]
    for i, step in enumerate(chosen, 1):
        log.info("[%d/%d] %s", i, len(chosen), step.name)
        started = time.perf_counter()
        with time_limit(params.runs.timeout_s.get(step.name), step.name):
            results[step.name] = step.run(params)
        seconds[step.name] = round(time.perf_counter() - started, 2)
        log.info("[%d/%d] %s done in %.1f s", i, len(chosen), step.name, seconds[step.name])
    return results, seconds


HEADER = """\
# Generated from the step table in flows/pipeline.py by `decayrec dag --write`: edit the table, not this file.
# Each stage calls the same step as `decayrec <step>`, lists the params.yaml sections whose settings it reads and
# every source file it runs (read from its imports). Run with `make repro` (puts the venv on PATH).
"""


def dvc_stages(params: Params) -> dict:
    """``dvc.yaml``'s stages for ``params`` (the project's own params.yaml)."""

    def rel(path: Path) -> str:
        path = Path(path)
        return str(path.resolve().relative_to(ROOT) if path.is_absolute() else path)

    def uncached(paths: list[Path]) -> list[dict]:
        return [{rel(p): {"cache": False}} for p in paths]

    stages = {}
    for step in STEPS:
        stage: dict = {"cmd": f"decayrec {step.name}",
                       "deps": [rel(p) for p in step.reads(params)] + step.code(),
                       "params": list(step.sections)}
        outs = [rel(p) for p in step.writes(params)] + uncached(step.reports(params))
        if outs:
            stage["outs"] = outs
        if step.metrics(params):
            stage["metrics"] = uncached(step.metrics(params))
        if step.plots(params):
            stage["plots"] = uncached(step.plots(params))
        stages[step.name] = stage
    return {"stages": stages}


def dvc_yaml(params: Params) -> str:
    import yaml

    notes = {step.name: step.note for step in STEPS if step.note}
    text = yaml.safe_dump(dvc_stages(params), sort_keys=False, default_flow_style=False, width=120)
    lines = []
    for line in text.splitlines():
        name = line.strip().rstrip(":")
        if line.startswith("  ") and not line.startswith("   ") and name in notes:
            lines.append(f"  # {notes[name]}")
        lines.append(line)
    return HEADER + "\n".join(lines) + "\n"

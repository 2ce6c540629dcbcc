"""The step table: dvc.yaml is what it generates, each step's code is read from its imports,
and a Prefect task's cache key moves when, and only when, its inputs, params sections or
source files change."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.config import load_params
from flows.pipeline import BY_NAME, STEPS, dvc_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_dvc_yaml_is_the_one_the_step_table_generates():
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml(load_params(ROOT / "params.yaml")), \
        "dvc.yaml is out of date: run `decayrec dag --write`"


def test_decayrec_dag_check_says_when_dvc_yaml_is_stale(tmp_path, capsys):
    from flows.cli import main

    params = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", params)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert main(["--params", str(params), "dag", "--check"]) == 1
    assert "decayrec dag --write" in capsys.readouterr().err
    assert main(["--params", str(params), "dag", "--write"]) == 0
    assert main(["--params", str(params), "dag", "--check"]) == 0


@pytest.mark.parametrize(
    ("step", "runs", "not_runs"),
    [
        ("split", {"features/splits.py", "flows/config.py", "flows/steps.py"}, {"models/train.py", "features/store.py"}),
        ("features", {"features/interest.py", "features/decay.py", "features/store.py", "features/feature_repo/definitions.py"},
         {"models/train.py"}),
        # Training reads the decayed features through features/, and tests beside the baselines.
        ("train", {"features/interest.py", "models/baselines.py", "models/evaluate.py", "models/train.py", "flows/steps.py"},
         {"serving/engine.py"}),
        # `bentoml build` imports the service, and with it the engine and what it imports.
        ("package", {"serving/service.py", "serving/engine.py", "serving/explain.py", "models/ranking_data.py",
                     "serving/static/demo.html"}, {"models/train.py"}),
    ],
)
def test_a_steps_code_is_read_from_its_imports(step, runs, not_runs):
    code = set(BY_NAME[step].code())
    assert runs <= code and not (not_runs & code), (runs - code, not_runs & code)


def test_every_stage_lists_the_sections_that_shape_its_output():
    sections = {step.name: set(step.sections) for step in STEPS}
    assert {"features", "train", "lm.model"} <= sections["train"]
    assert {"features", "train", "serving"} <= sections["package"]
    assert "serving" not in sections["train"] | sections["features"]


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    """Cache keys of split and train over a copy of the source tree and small input files."""
    import flows.retrain as retrain

    source = tmp_path / "source"
    for package in ("features", "models", "flows", "serving"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(retrain, "ROOT", source)
    params = load_params(ROOT / "params.yaml")
    validated, splits = tmp_path / "validated", tmp_path / "splits"
    validated.mkdir()
    splits.mkdir()
    for name in ("events.parquet", "items.parquet"):
        (validated / name).write_bytes(name.encode())
    (splits / "P2.parquet").write_bytes(b"splits")
    (tmp_path / "items.npz").write_bytes(b"vectors")
    params = params.model_copy(update={
        "validate_": params.validation.model_copy(update={"validated_dir": validated}),
        "split": params.split.model_copy(update={"out_dir": splits}),
        "lm": params.lm.model_copy(update={"out": tmp_path / "items.npz"}),
    })

    def keys(p=None) -> dict[str, str]:
        return {name: retrain.cache_key(BY_NAME[name])(None, {"params": p or params}) for name in ("split", "train")}

    return keys, params, source, validated


def test_a_cache_key_moves_with_its_own_inputs_params_and_code_only(keyed):
    keys, params, source, validated = keyed
    base = keys()
    assert keys() == base  # stable

    half_life = params.model_copy(update={"features": params.features.model_copy(update={"user_half_life_days": 14})})
    moved = keys(half_life)
    assert moved["split"] == base["split"] and moved["train"] != base["train"]

    split = params.model_copy(update={"split": params.split.model_copy(update={"protocols": ["P2"]})})
    assert keys(split)["split"] != base["split"]

    (validated / "items.parquet").write_bytes(b"another catalogue")  # train reads it, split does not
    moved = keys()
    assert moved["split"] == base["split"] and moved["train"] != base["train"]
    items = keys()

    with (source / "models" / "baselines.py").open("a") as handle:
        handle.write("\n# an edit\n")
    moved = keys()
    assert moved["split"] == items["split"] and moved["train"] != items["train"]
    with (source / "features" / "splits.py").open("a") as handle:
        handle.write("\n# an edit\n")
    assert keys()["split"] != items["split"]


def test_a_missing_input_means_no_cache(keyed):
    keys, params, _, validated = keyed
    (validated / "events.parquet").unlink()
    assert keys()["split"] is None

"""`dvc repro` on a clean clone rebuilds the committed data outputs bit for bit, then skips.

Only the data stages run here (`dvc repro split features`): the evaluate stage tunes every baseline
and is exercised by tests/models instead."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


DATA_STAGES = ("ingest", "validate", "split", "features")


def data_outs(lock: dict) -> dict[str, str]:
    return {o["path"]: o["md5"] for name in DATA_STAGES for o in lock["stages"][name].get("outs", [])}


def clean_clone(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    """A clone of the committed project, the environment its stages run in, and the dvc command."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {
        **os.environ,
        # The clone's own code, not the installed checkout's, must run the stages.
        "PYTHONPATH": str(clone),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        # Experiments commit to hidden refs.
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost",
    }
    env.pop("DECAYREC_DATA_MIRROR", None)
    return clone, env, [sys.executable, "-m", "dvc"]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git history to clone")
def test_repro_on_a_clean_clone_matches_the_committed_lock(tmp_path):
    clone, env, dvc = clean_clone(tmp_path)

    first = subprocess.run([*dvc, "repro", "split", "features"], cwd=clone, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())
    rebuilt = yaml.safe_load((clone / "dvc.lock").read_text())
    assert data_outs(rebuilt) == data_outs(committed)
    assert len(data_outs(committed)) == 4

    second = subprocess.run([*dvc, "repro", "split", "features"], cwd=clone, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout
    shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git history to clone")
def test_an_experiment_with_a_changed_param_runs_and_is_recorded(tmp_path):
    """`dvc exp run -S` reruns the stages the parameter reaches, with the new value."""
    import json

    clone, env, dvc = clean_clone(tmp_path)
    run = subprocess.run([*dvc, "exp", "run", "--name", "half", "-S", "split.p1_fractions=[0.5,0.25,0.25]", "split"],
                         cwd=clone, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    stats = json.loads((clone / "data" / "splits" / "P1" / "stats.json").read_text())
    total = sum(stats[part]["rows"] for part in ("train", "valid", "test"))
    assert stats["train"]["rows"] == pytest.approx(total * 0.5, rel=0.01)
    shown = subprocess.run([*dvc, "exp", "show", "--json"], cwd=clone, env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "half" in shown.stdout and "0.5" in shown.stdout
    shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git history to clone")
def test_a_param_reruns_exactly_the_stages_that_read_it(tmp_path):
    """On the bundled data, through to the packaged bento: a decay half-life reaches the
    features, the profiles, the model and the bundle; a serving knob only the bundle; an
    embedding knob that cannot change a vector only the embedding step."""
    import json
    import re

    clone, env, dvc = clean_clone(tmp_path)
    # One short training, so that the chain runs inside a test.
    raw = yaml.safe_load((clone / "params.yaml").read_text())
    raw["train"].update(trials=1, p99_users=20)
    raw["train"]["scorer"]["max_epochs"] = 3
    raw["train"]["sequence"]["enabled"] = False
    (clone / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["git", "commit", "--quiet", "-am", "a short training"], cwd=clone, env=env, check=True)

    def ran(*args: str) -> set[str]:
        done = subprocess.run([*dvc, *args], cwd=clone, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return set(re.findall(r"Running stage '(\w+)'", done.stdout))

    assert ran("repro", "package") == {"ingest", "validate", "split", "features", "embed", "profiles", "train", "package"}
    before = json.loads((clone / "data" / "serving" / "bundle.json").read_text())
    outs = lambda: {o["path"]: o["md5"] for o in yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["features"]["outs"]}  # noqa: E731
    features_before = outs()

    assert ran("exp", "run", "package", "-S", "features.user_half_life_days=14") == {"features", "profiles", "train", "package"}
    bundle = json.loads((clone / "data" / "serving" / "bundle.json").read_text())
    assert before["params"]["features"]["user_half_life_days"] == 30
    assert bundle["params"]["features"]["user_half_life_days"] == 14
    assert all(outs()[path] != md5 for path, md5 in features_before.items())  # the feature tables themselves changed
    diff = subprocess.run([*dvc, "metrics", "diff", "--json"], cwd=clone, env=env, capture_output=True, text=True)
    assert diff.returncode == 0 and "reports/training/metrics.json" in json.loads(diff.stdout)

    assert ran("exp", "run", "package", "-S", "serving.max_k=50") == {"package"}
    assert ran("exp", "run", "package", "-S", "lm.progress=false") == {"embed"}
    shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)

"""Shared fixtures: small real data cut from the bundled MovieLens set, and isolated paths."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Offline machines: no library may phone home or reach a model hub during tests.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# Models saved by tests go to a store of their own, never the user's ~/bentoml.
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="decayrec-bentoml-"))

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data" / "raw" / "ml-latest-small"
MIRROR = os.environ.get("DECAYREC_DATA_MIRROR")

needs_mirror = pytest.mark.skipif(
    not (MIRROR and (Path(MIRROR) / "ml-1m").is_dir()),
    reason="DECAYREC_DATA_MIRROR with ml-1m/ is not set",
)


@pytest.fixture
def ml_small_csv(tmp_path: Path) -> dict[str, Path]:
    """The first 3,000 ratings of ml-latest-small and the movies they use, as CSV files."""
    lines = (BUNDLED / "ratings.csv").read_text().splitlines()[:3001]
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("\n".join(lines) + "\n")
    movies = tmp_path / "movies.csv"
    movies.write_text((BUNDLED / "movies.csv").read_text())
    return {"events": ratings, "items": movies}


@pytest.fixture
def params_for(tmp_path: Path):
    """Params whose every output lives under tmp_path and whose floors suit small data."""
    from flows.config import load_params

    def make(**data_overrides):
        params = load_params(ROOT / "params.yaml")
        data = params.data.model_copy(
            update={"bundled_dir": ROOT / "data" / "raw", "interim_dir": tmp_path / "interim", **data_overrides}
        )
        validation = params.validation.model_copy(
            update={
                "validated_dir": tmp_path / "validated",
                "docs_dir": tmp_path / "docs",
                "min_events": 100,
            }
        )
        split = params.split.model_copy(update={"out_dir": tmp_path / "splits"})
        return params.model_copy(update={"data": data, "validate_": validation, "split": split})

    return make


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """A copy of params.yaml whose outputs (Data Docs included) go under tmp_path."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["bundled_dir"] = str(ROOT / "data" / "raw")
    raw["data"]["interim_dir"] = str(tmp_path / "interim")
    raw["validate"].update(validated_dir=str(tmp_path / "validated"), docs_dir=str(tmp_path / "docs"), min_events=100)
    raw["split"]["out_dir"] = str(tmp_path / "splits")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path

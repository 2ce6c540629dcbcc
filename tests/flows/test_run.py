"""`decayrec run`, the main job: every step on small real data, then a summary a newcomer
can read: the champion beside the baselines, and where the report, Data Docs and bento are."""
from __future__ import annotations

from conftest import small_csv, write_params
from flows.cli import main


def test_run_takes_the_data_to_a_built_bento_and_prints_where_everything_is(tmp_path, capsys):
    import bentoml

    path = write_params(tmp_path, small_csv(tmp_path / "raw"))
    assert main(["--params", str(path), "run"]) == 0
    out = capsys.readouterr().out
    assert "decayrec: csv in" in out and "Data Docs:" in out
    assert "P2 test" in out and "scorer" in out and "itemknn_decay" in out and "promoted to champion" in out
    bento = next(line for line in out.splitlines() if line.strip().startswith("bento:")).split()[1]
    assert "bentoml serve " + bento in out
    champion = next(line for line in out.splitlines() if line.strip().startswith("champion:")).split()[1]
    assert [str(m.tag) for m in bentoml.bentos.get(bento).info.all_models] == [champion]
    assert (tmp_path / "out" / "serving" / "bundle.json").exists()

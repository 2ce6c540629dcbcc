"""`decayrec validate --events`: every kind of bad input gets a clear message and exit 1."""
from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


@pytest.fixture(autouse=True)
def _isolated(params_file, monkeypatch):
    """Every command reads a params file whose outputs live in the test's tmp_path."""
    monkeypatch.setenv("DECAYREC_TEST_PARAMS", str(params_file))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    import os

    code = main(["--params", os.environ["DECAYREC_TEST_PARAMS"], *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def validate(files: dict[str, Path], *extra: str) -> list[str]:
    return ["validate", "--events", str(files["events"]), "--items", str(files["items"]), *extra]


def edit_line(path: Path, line: int, edit) -> None:
    """Apply ``edit`` to the fields of one 1-based line of a CSV file."""
    lines = path.read_text().splitlines()
    lines[line - 1] = ",".join(edit(lines[line - 1].split(",")))
    path.write_text("\n".join(lines) + "\n")


def test_valid_file_gives_one_line_and_exit_zero(ml_small_csv, capsys):
    code, out, err = run(validate(ml_small_csv), capsys)
    assert code == 0, err
    assert out.count("\n") == 1
    assert "valid: 3,000 events" in out


def test_a_check_writes_data_docs_of_its_own_and_leaves_the_pipelines_alone(ml_small_csv, capsys, tmp_path):
    pipeline = tmp_path / "docs" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    pipeline.parent.mkdir(parents=True)
    pipeline.write_text("the pipeline's own Data Docs")
    code, out, err = run(validate(ml_small_csv), capsys)
    assert code == 0, err
    checks = tmp_path / "checks-docs" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert f"(Data Docs: {checks.as_uri()})" in out
    assert "check ratings.csv" in checks.read_text()  # the run is named for the file checked
    assert pipeline.read_text() == "the pipeline's own Data Docs"


def test_items_are_optional(ml_small_csv, capsys):
    code, out, _ = run(["validate", "--events", str(ml_small_csv["events"])], capsys)
    assert code == 0
    assert "3,000 events" in out


def test_other_layout_through_a_column_mapping(ml_small_csv, capsys, tmp_path):
    text = ml_small_csv["events"].read_text().replace("userId,movieId,rating,timestamp", "who,what,stars,when", 1)
    events = tmp_path / "mine.csv"
    events.write_text(text.replace(",", ";"))
    code, out, err = run(
        ["validate", "--events", str(events), "--columns", "user_id=who,item_id=what,value=stars,timestamp=when",
         "--delimiter", ";"],
        capsys,
    )
    assert code == 0, err


# (what is broken, how to break it, text the message must contain)
ROW_CASES = {
    "string in a numeric column": (18, lambda f: [f[0], f[1], "four", f[3]], ["[numeric]", "line 18", "column 'rating'", "'four'"]),
    "null user id": (5, lambda f: ["", *f[1:]], ["non-null: column user_id", "line=5"]),
    "null item id": (6, lambda f: [f[0], "", *f[2:]], ["non-null: column item_id", "line=6"]),
    "rating out of range": (7, lambda f: [f[0], f[1], "7.5", f[3]], ["value in [0.5, 5.0]", "line=7", "value=7.5"]),
    "timestamp in the future": (9, lambda f: [*f[:3], "4102444800"], ["not in the future", "line=9"]),
    "negative timestamp": (10, lambda f: [*f[:3], "-86400"], ["timestamp after 1995-01-01", "line=10", "timestamp=-86400"]),
    "unknown item": (11, lambda f: [f[0], "99999999", *f[2:]], ["item in catalogue", "line=11", "item_id=99999999"]),
}


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_bad_rows_are_named_with_rule_column_and_line(case, ml_small_csv, capsys):
    line, edit, expected = ROW_CASES[case]
    edit_line(ml_small_csv["events"], line, edit)
    code, out, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "Traceback" not in err
    assert str(ml_small_csv["events"]) in err
    for text in expected:
        assert text in err, f"{case}: {text!r} missing from:\n{err}"


def test_string_ids_are_refused_with_the_setting_that_keeps_them_then_taken_with_it(ml_small_csv, capsys, tmp_path):
    events = tmp_path / "shop.csv"
    lines = ml_small_csv["events"].read_text().splitlines()
    events.write_text("\n".join([lines[0]] + [f"C{line}" for line in lines[1:]]) + "\n")  # customers C1, C2, ...
    code, _, err = run(["validate", "--events", str(events)], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "line 2" in err and "column 'userId'" in err and "'C1' is not a number" in err and "--ids user_id=str" in err
    code, out, err = run(["validate", "--events", str(events), "--ids", "user_id=str"], capsys)
    assert code == 0 and "valid: 3,000 events" in out, err


def test_millisecond_timestamps_are_called_out(ml_small_csv, capsys):
    path = ml_small_csv["events"]
    lines = path.read_text().splitlines()
    lines[1:] = [f"{line}000" for line in lines[1:]]
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "timestamps in seconds, not milliseconds: column timestamp, 3000 row(s)" in err


def test_duplicated_rows(ml_small_csv, capsys):
    path = ml_small_csv["events"]
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "no duplicate events" in err
    assert "line=2" in err and "line=3002" in err


def test_missing_column(ml_small_csv, capsys):
    path = ml_small_csv["events"]
    lines = [",".join(line.split(",")[:3]) for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "[required columns]" in err and "'timestamp'" in err and "line 1" in err


def test_empty_file(ml_small_csv, capsys):
    ml_small_csv["events"].write_text("")
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "[non-empty file] the file is empty" in err


def test_header_only_file(ml_small_csv, capsys):
    ml_small_csv["events"].write_text("userId,movieId,rating,timestamp\n")
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "[non-empty file]" in err


def test_truncated_file(ml_small_csv, capsys):
    path = ml_small_csv["events"]
    text = path.read_text().rstrip("\n")
    path.write_text(text[: text.rfind(",") - 2])  # cut inside the rating of the last line
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "[complete last line]" in err and "line 3001" in err and "truncated" in err


def test_wrong_delimiter(ml_small_csv, capsys):
    path = ml_small_csv["events"]
    path.write_text(path.read_text().replace(",", ";"))
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    assert "[delimiter]" in err and "looks ';'-separated" in err


def test_latin1_file_read_as_utf8_is_an_error_not_mojibake(ml_small_csv, capsys):
    path = ml_small_csv["items"]
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1", errors="replace"))
    code, _, err = run(validate(ml_small_csv), capsys)
    assert code == 1
    # Line 30 holds the first accented title ("Cité des enfants perdus").
    assert "[encoding]" in err and "line 30" in err and "latin-1" in err


def test_utf8_file_read_as_latin1_is_caught_as_mojibake(ml_small_csv, capsys):
    code, _, err = run(validate(ml_small_csv, "--encoding", "latin-1"), capsys)
    assert code == 1
    assert "readable text (no mojibake: check the encoding): column title" in err
    assert "line=30" in err


def test_missing_file_is_one_line(tmp_path, capsys):
    code, _, err = run(["validate", "--events", str(tmp_path / "nope.csv")], capsys)
    assert code == 1
    assert err.strip() == f"error: {tmp_path / 'nope.csv'}: no such file"


def test_every_step_of_the_table_is_a_command_named_in_the_help(capsys):
    from flows.cli import main
    from flows.pipeline import STEPS

    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert all(f"    {step.name} " in shown for step in STEPS)


@pytest.mark.parametrize("argv, said", [
    (["--params", "no/such/params.yaml", "status"], "error: no/such/params.yaml: no such params file"),
    (["run", "--dataset", "ml-2m"], "error: unsupported --dataset 'ml-2m': one of ml-latest-small, ml-100k, ml-1m, csv, parquet, shop"),
])
def test_a_missing_params_file_or_an_unknown_data_set_is_one_line(argv, said, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err == said + "\n"


@pytest.mark.parametrize("text, said", [
    ("featurs:\n  user_half_life_days: 3\n", "unknown key 'featurs' (did you mean 'features'?)"),
    ("validate:\n  value_mx: 3\n", "unknown key 'validate.value_mx' (did you mean 'value_max'?)"),
    ("features:\n  user_half_life_days: soon\n", "features.user_half_life_days: Input should be a valid number"),
])
def test_a_typo_in_params_names_the_key_and_the_closest_valid_one(text, said, tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    code = main(["--params", str(path), "status"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}: {said}")

"""read_delimited and to_numbers on the file shapes the CLI tests do not reach."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.errors import DataError
from features.reading import guess_separator, read_delimited, to_numbers

RATINGS = ["user_id", "item_id", "value", "timestamp"]


def write(tmp_path: Path, content: str | bytes, name: str = "f.dat") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def read_error(path: Path, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as caught:
        read_delimited(path, *args, **kwargs)
    return caught.value


def test_double_colon_separator_keeps_single_colons_in_fields(tmp_path):
    path = write(
        tmp_path,
        "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
        "1196::Star Wars: Episode V - The Empire Strikes Back (1980)::Action|Adventure|Drama|Sci-Fi|War\n"
        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n",
    )
    frame, first_line = read_delimited(path, ["id", "title", "genres"], sep="::", header=False, numeric=["id"])
    assert first_line == 1
    assert frame["id"].tolist() == [260, 1196, 2]
    assert frame["title"].tolist() == [
        "Star Wars: Episode IV - A New Hope (1977)",
        "Star Wars: Episode V - The Empire Strikes Back (1980)",
        "Jumanji (1995)",
    ]
    assert frame["genres"].tolist() == [
        "Action|Adventure|Fantasy|Sci-Fi",
        "Action|Adventure|Drama|Sci-Fi|War",
        "Adventure|Children's|Fantasy",
    ]


def test_headerless_file_takes_the_given_names_and_keeps_ids_as_text(tmp_path):
    path = write(tmp_path, "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n")
    frame, first_line = read_delimited(path, RATINGS, sep="::", encoding="latin-1", header=False, numeric=RATINGS)
    assert first_line == 1
    assert list(frame.columns) == RATINGS
    assert frame.to_dict("list") == {
        "user_id": [1, 1, 2],
        "item_id": [1193, 661, 1357],
        "value": [5, 3, 5],
        "timestamp": [978300760, 978302109, 978298709],
    }
    # the first line is data, not a header
    text, _ = read_delimited(path, RATINGS, sep="::", header=False)
    assert text["user_id"].tolist() == ["1", "1", "2"]
    assert str(text["user_id"].dtype) == "string"


def test_headerless_tab_separated_file(tmp_path):
    path = write(tmp_path, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    frame, _ = read_delimited(path, RATINGS, sep="\t", header=False, numeric=RATINGS)
    assert frame["item_id"].tolist() == [242, 302]


def test_header_picks_the_required_columns_in_order(tmp_path):
    path = write(tmp_path, "userId,movieId,tag,timestamp\n2,60756,funny,1445714994\n2,89774,Boxing story,1445715207\n")
    frame, first_line = read_delimited(path, ["movieId", "tag"], numeric=["movieId"])
    assert first_line == 2
    assert frame.to_dict("list") == {"movieId": [60756, 89774], "tag": ["funny", "Boxing story"]}


def test_quoted_field_with_the_separator(tmp_path):
    path = write(tmp_path, 'movieId,title,genres\n11,"American President, The (1995)",Comedy|Drama|Romance\n')
    frame, _ = read_delimited(path, ["movieId", "title", "genres"], numeric=["movieId"])
    assert frame["title"].tolist() == ["American President, The (1995)"]


def test_too_many_fields_mid_file(tmp_path):
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n", "f.csv")
    err = read_error(path, ["a", "b", "c"], numeric=["a"])
    assert err.rule == "field count"
    assert err.file == str(path)
    assert "Expected 3 fields in line 3, saw 4" in err.message


def test_too_many_fields_in_a_headerless_double_colon_file(tmp_path):
    path = write(tmp_path, "1::2::3::4\n1::2::3::4\n5::6::7::8::9\n1::2::3::4\n")
    err = read_error(path, RATINGS, sep="::", header=False, numeric=RATINGS)
    assert err.rule == "field count"
    assert "Expected 4 fields in line 3, saw 5" in err.message


def test_too_many_fields_counts_blank_lines(tmp_path):
    path = write(tmp_path, "a,b,c\n1,2,3\n\n4,5,6,7\n", "f.csv")
    err = read_error(path, ["a", "b", "c"])
    assert err.rule == "field count"
    assert "line 4, saw 4" in err.message


def test_too_many_fields_sets_the_line(tmp_path):
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5,6,7\n", "f.csv")
    assert read_error(path, ["a", "b", "c"]).line == 3


@pytest.mark.parametrize(
    ("content", "kwargs", "line"),
    [
        ("a,b,c\n1,2,3,9\n4,5,6\n", {"columns": ["a", "b", "c"]}, 2),
        ("1::2::3::9\n4::5::6\n", {"columns": ["a", "b", "c"], "sep": "::", "header": False}, 1),
    ],
    ids=["header", "headerless"],
)
def test_extra_field_on_the_first_data_line_is_a_field_count_error(tmp_path, content, kwargs, line):
    path = write(tmp_path, content)
    try:
        frame, _ = read_delimited(path, numeric=["a", "b"], **kwargs)
    except DataError as err:
        assert err.rule == "field count"
        assert f"line {line}" in str(err)
    else:
        pytest.fail(f"read without error, columns shifted: {frame.to_dict('list')}")


def test_trailing_delimiter_does_not_shift_columns(tmp_path):
    path = write(tmp_path, "a,b,c\n1,2,3,\n4,5,6,\n", "f.csv")
    try:
        frame, _ = read_delimited(path, ["a", "b", "c"], numeric=["a", "b", "c"])
    except DataError as err:
        assert err.rule == "field count"
    else:
        assert frame.to_dict("list") == {"a": [1, 4], "b": [2, 5], "c": [3, 6]}


def test_utf8_bom_is_stripped(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfuserId,title\n1,Am\xc3\xa9lie (2001)\n", "f.csv")
    frame, _ = read_delimited(path, ["userId", "title"], numeric=["userId"])
    assert list(frame.columns) == ["userId", "title"]
    assert frame.to_dict("list") == {"userId": [1], "title": ["Amélie (2001)"]}


def test_utf8_bom_before_a_headerless_first_field(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf7::8\n9::10\n")
    frame, _ = read_delimited(path, ["a", "b"], sep="::", header=False, numeric=["a", "b"])
    assert frame.to_dict("list") == {"a": [7, 9], "b": [8, 10]}


def test_crlf_line_ends(tmp_path):
    path = write(tmp_path, "movieId,title,rating\r\n1,Toy Story (1995),4.0\r\n2,Jumanji (1995),3.5\r\n", "f.csv")
    frame, _ = read_delimited(path, ["movieId", "title", "rating"], numeric=["movieId", "rating"])
    assert frame.to_dict("list") == {"movieId": [1, 2], "title": ["Toy Story (1995)", "Jumanji (1995)"], "rating": [4.0, 3.5]}


def test_crlf_line_ends_in_a_headerless_double_colon_file(tmp_path):
    path = write(tmp_path, "1::Toy Story (1995)::Comedy\r\n2::Jumanji (1995)::Fantasy\r\n")
    frame, _ = read_delimited(path, ["id", "title", "genres"], sep="::", header=False, numeric=["id"])
    assert frame["genres"].tolist() == ["Comedy", "Fantasy"]  # no '\r' left on the last field
    assert frame["title"].tolist() == ["Toy Story (1995)", "Jumanji (1995)"]


def test_crlf_file_with_a_bad_number_reports_the_file_line(tmp_path):
    path = write(tmp_path, "a,b\r\n1,2\r\n3,4\r\n5,x\r\n", "f.csv")
    err = read_error(path, ["a", "b"], numeric=["a", "b"])
    assert (err.rule, err.column, err.row, err.line) == ("numeric", "b", 2, 4)


def test_truncated_last_line_of_a_double_colon_file(tmp_path):
    path = write(tmp_path, "1::1193::5::978300760\n1::661::3::978302109\n1::914::")
    err = read_error(path, RATINGS, sep="::", header=False, numeric=RATINGS)
    assert err.rule == "complete last line"
    assert err.line == 3
    assert err.message == "the last line has 3 of 4 fields and no line end: the file looks truncated"


def test_truncated_last_line_of_a_crlf_double_colon_file(tmp_path):
    path = write(tmp_path, "1::1193::5::978300760\r\n1::661")
    err = read_error(path, RATINGS, sep="::", header=False, numeric=RATINGS)
    assert (err.rule, err.line) == ("complete last line", 2)
    assert "2 of 4 fields" in err.message


def test_complete_last_line_without_a_line_end_is_fine(tmp_path):
    path = write(tmp_path, "1::1193::5::978300760\n1::661::3::978302109")
    frame, _ = read_delimited(path, RATINGS, sep="::", header=False, numeric=RATINGS)
    assert frame["timestamp"].tolist() == [978300760, 978302109]


def test_wrong_separator_in_a_headerless_file_names_the_one_seen(tmp_path):
    path = write(tmp_path, "1\t1193\t5\t978300760\n")
    err = read_error(path, RATINGS, sep="::", header=False)
    assert (err.rule, err.line) == ("delimiter", 1)
    assert "looks '\\t'-separated" in err.message


def test_guess_separator():
    assert guess_separator("1::2") == "::"
    assert guess_separator("a;b") == ";"
    assert guess_separator("a|b") == "|"
    assert guess_separator("ab") is None


def test_to_numbers_reports_the_first_bad_row_and_its_line():
    values = pd.Series(["1", "2.5", "x", None, "y"], dtype="string")
    with pytest.raises(DataError) as caught:
        to_numbers(values, Path("events.csv"), "rating", 2)
    err = caught.value
    assert (err.rule, err.column, err.row, err.line) == ("numeric", "rating", 2, 4)
    assert err.message == "value 'x' is not a number (2 such row(s))"  # the null is not counted
    assert str(err) == "events.csv, line 4, row 2, column 'rating': [numeric] value 'x' is not a number (2 such row(s))"


def test_to_numbers_without_line_numbers_reports_the_row_only():
    with pytest.raises(DataError) as caught:
        to_numbers(pd.Series([1, "two", 3], dtype=object), Path("events.parquet"), "userId", None)
    assert (caught.value.row, caught.value.line) == (1, None)


def test_to_numbers_keeps_nulls_and_numbers():
    out = to_numbers(pd.Series(["1", None, "3.5"], dtype="string"), Path("f"), "v", 2)
    assert out.isna().tolist() == [False, True, False]
    assert out.dropna().tolist() == [1.0, 3.5]
    numeric = pd.Series([1, 2], dtype="int64")
    assert to_numbers(numeric, Path("f"), "v", 2) is numeric


def test_to_numbers_through_read_delimited_uses_file_lines(tmp_path):
    path = write(tmp_path, "1::2::5::978300760\n1::3::five::978300761\n", "ratings.dat")
    err = read_error(path, RATINGS, sep="::", header=False, numeric=RATINGS)
    assert (err.rule, err.column, err.row, err.line) == ("numeric", "value", 1, 2)
    assert "'five'" in err.message


def test_bad_number_after_a_blank_line_reports_the_file_line(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n\n3,x\n", "f.csv")
    err = read_error(path, ["a", "b"], numeric=["a", "b"])
    # The blank line is row 1 (a row of nulls, reported by validation); "x" is row 2.
    assert (err.row, err.line) == (2, 4)


def test_text_that_looks_like_a_null_stays_text(tmp_path):
    path = write(tmp_path, "1::NA\n2::None\n3::null\n")
    frame, _ = read_delimited(path, ["id", "tag"], sep="::", header=False, numeric=["id"])
    assert frame["tag"].fillna("<null>").tolist() == ["NA", "None", "null"]

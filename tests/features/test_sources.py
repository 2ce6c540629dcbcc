"""Where data sets come from and the pinned checksums that prove they are the published bytes."""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import BUNDLED, ROOT

from features import sources
from features.errors import ChecksumError, DataError
from features.sources import PINNED_SHA256, locate, locate_optional, verify
from flows.cli import main

JUNK = {"README": b"not the README\n", "movies.dat": b"1::Junk (2000)::Drama\n", "ratings.dat": b"1::1::5::978300760\n"}


def copy_small(root: Path) -> Path:
    """A mirror-like folder holding a byte-exact copy of the bundled ml-latest-small."""
    folder = root / "ml-latest-small"
    folder.mkdir(parents=True)
    for name in PINNED_SHA256["ml-latest-small"]:
        shutil.copyfile(BUNDLED / name, folder / name)
    return folder


def junk_small(root: Path) -> Path:
    folder = root / "ml-latest-small"
    folder.mkdir(parents=True)
    for name in PINNED_SHA256["ml-latest-small"]:
        (folder / name).write_text("junk\n")
    return folder


@pytest.fixture
def fake_mirror(tmp_path: Path) -> Path:
    """A mirror whose ml-1m files are junk (nothing of the real ml-1m leaves the shared mirror)."""
    mirror = tmp_path / "mirror"
    (mirror / "ml-1m").mkdir(parents=True)
    for name, content in JUNK.items():
        (mirror / "ml-1m" / name).write_bytes(content)
    return mirror


def test_every_pinned_hash_is_a_sha256():
    for dataset, files in PINNED_SHA256.items():
        for name, digest in files.items():
            assert len(digest) == 64 and int(digest, 16) >= 0, (dataset, name)


def test_sha256_of_a_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sources.sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_verify_passes_on_the_bundled_copy():
    assert verify(BUNDLED, "ml-latest-small") is None


def test_checksum_mismatch_names_the_file_and_both_hashes(fake_mirror):
    with pytest.raises(ChecksumError) as caught:
        verify(fake_mirror / "ml-1m", "ml-1m")
    err = caught.value
    actual = hashlib.sha256(JUNK["README"]).hexdigest()
    expected = PINNED_SHA256["ml-1m"]["README"]
    assert err.rule == "checksum"
    assert err.file == str(fake_mirror / "ml-1m" / "README")
    assert actual in err.message and expected in err.message
    assert str(err) == (
        f"{fake_mirror / 'ml-1m' / 'README'}: [checksum] sha256 {actual} does not match the published "
        f"{expected}: the file is damaged or not the published one"
    )


def test_one_changed_byte_is_caught(tmp_path):
    folder = copy_small(tmp_path)
    path = folder / "ratings.csv"
    data = bytearray(path.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as caught:
        verify(folder, "ml-latest-small")
    assert caught.value.file == str(path)
    assert hashlib.sha256(bytes(data)).hexdigest() in caught.value.message


def test_missing_pinned_file_is_a_data_error(tmp_path):
    folder = copy_small(tmp_path)
    (folder / "tags.csv").unlink()
    with pytest.raises(DataError) as caught:
        verify(folder, "ml-latest-small")
    err = caught.value
    assert type(err) is DataError  # not a checksum problem
    assert err.rule == "file present"
    assert err.file == str(folder / "tags.csv")
    assert err.message == f"ml-latest-small needs tags.csv in {folder}"


def test_locate_prefers_the_bundled_copy(tmp_path):
    mirror = tmp_path / "mirror"
    junk_small(mirror)  # would fail verification if it were looked at
    found = locate("ml-latest-small", bundled=ROOT / "data" / "raw", mirror=mirror,
                   download_dir=tmp_path / "dl", download=False)
    assert found == ROOT / "data" / "raw" / "ml-latest-small"


def test_locate_takes_the_mirror_when_nothing_is_bundled(tmp_path):
    mirror = tmp_path / "mirror"
    copy_small(mirror)
    junk_small(tmp_path / "dl")  # the download cache comes after the mirror
    found = locate("ml-latest-small", bundled=tmp_path / "empty", mirror=mirror,
                   download_dir=tmp_path / "dl", download=False)
    assert found == mirror / "ml-latest-small"


def test_locate_takes_a_previous_download_last(tmp_path):
    copy_small(tmp_path / "dl")
    found = locate("ml-latest-small", bundled=tmp_path / "empty", mirror=None,
                   download_dir=tmp_path / "dl", download=False)
    assert found == tmp_path / "dl" / "ml-latest-small"


def test_locate_verifies_what_it_finds(fake_mirror, tmp_path):
    with pytest.raises(ChecksumError):
        locate("ml-1m", bundled=ROOT / "data" / "raw", mirror=fake_mirror,
               download_dir=tmp_path / "dl", download=False)


def test_locate_without_data_or_download_names_the_env_var(tmp_path):
    with pytest.raises(DataError) as caught:
        locate("ml-1m", bundled=ROOT / "data" / "raw", mirror=tmp_path / "mirror",
               download_dir=tmp_path / "dl", download=False)
    err = caught.value
    assert err.rule == "data available"
    assert err.file == str(tmp_path / "mirror")
    assert err.message == "ml-1m not found; set DECAYREC_DATA_MIRROR to a folder holding ml-1m/"
    assert not (tmp_path / "dl").exists()


def test_locate_never_downloads_what_grouplens_does_not_serve(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.urllib.request, "urlopen", _no_network)
    with pytest.raises(DataError) as caught:
        locate("tmdb-5000", bundled=tmp_path, mirror=None, download_dir=tmp_path / "dl", download=True)
    assert caught.value.rule == "data available"
    assert "DECAYREC_DATA_MIRROR" in caught.value.message


def _no_network(url, timeout=None):
    raise OSError("network is unreachable")


def test_failed_download_is_a_data_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.urllib.request, "urlopen", _no_network)
    with pytest.raises(DataError) as caught:
        locate("ml-1m", bundled=tmp_path / "empty", mirror=None, download_dir=tmp_path / "dl", download=True)
    err = caught.value
    assert err.rule == "data available"
    assert err.file == "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    assert "could not download ml-1m (network is unreachable)" in err.message
    assert "DECAYREC_DATA_MIRROR" in err.message
    assert list((tmp_path / "dl").iterdir()) == []


def test_failed_download_message_names_the_data_set_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.urllib.request, "urlopen", _no_network)
    with pytest.raises(DataError) as caught:
        locate("ml-1m", bundled=tmp_path / "empty", mirror=None, download_dir=tmp_path / "dl", download=True)
    assert caught.value.message.endswith("set DECAYREC_DATA_MIRROR to a folder holding ml-1m/")


def test_download_unpacks_and_verifies(tmp_path, monkeypatch):
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in PINNED_SHA256["ml-latest-small"]:
            zipped.write(BUNDLED / name, f"ml-latest-small/{name}")
    asked = []

    def serve(url, timeout=None):
        asked.append(url)
        return open(archive, "rb")

    monkeypatch.setattr(sources.urllib.request, "urlopen", serve)
    dl = tmp_path / "dl"
    found = locate("ml-latest-small", bundled=tmp_path / "empty", mirror=None, download_dir=dl, download=True)
    assert asked == ["https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"]
    assert found == dl / "ml-latest-small"
    assert sorted(p.name for p in dl.iterdir()) == ["ml-latest-small"]  # no temporary folder left
    assert sorted(p.name for p in found.iterdir()) == sorted(PINNED_SHA256["ml-latest-small"])


def test_download_of_damaged_files_is_a_checksum_error(tmp_path, monkeypatch):
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in PINNED_SHA256["ml-latest-small"]:
            zipped.writestr(f"ml-latest-small/{name}", "junk\n")
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout=None: open(archive, "rb"))
    with pytest.raises(ChecksumError) as caught:
        locate("ml-latest-small", bundled=tmp_path / "empty", mirror=None, download_dir=tmp_path / "dl", download=True)
    assert caught.value.file == str(tmp_path / "dl" / "ml-latest-small" / "README.txt")


def test_locate_optional(tmp_path):
    assert locate_optional("tmdb-5000", None) is None
    assert locate_optional("tmdb-5000", tmp_path) is None
    (tmp_path / "tmdb-5000").mkdir()
    (tmp_path / "tmdb-5000" / "tmdb_5000_movies.csv.zip").write_bytes(b"junk")
    with pytest.raises(ChecksumError):
        locate_optional("tmdb-5000", tmp_path)


def test_cli_ingest_from_a_damaged_mirror_fails_in_one_line_and_writes_nothing(
    params_file, fake_mirror, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DECAYREC_DATA_MIRROR", str(fake_mirror))
    monkeypatch.chdir(tmp_path)  # relative output folders, if any, land where they are checked
    interim = tmp_path / "interim"  # params_file's data.interim_dir
    code = main(["--params", str(params_file), "ingest", "--dataset", "ml-1m"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith(f"error: {fake_mirror / 'ml-1m' / 'README'}: [checksum] sha256 ")
    assert hashlib.sha256(JUNK["README"]).hexdigest() in err
    assert PINNED_SHA256["ml-1m"]["README"] in err
    assert "Traceback" not in err
    assert not interim.exists()
    # Nothing but the run's own record (flows/runs.py): the failure, and the released lock.
    run_files = tmp_path / "data" / "datasets" / "ml-1m"
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and p.parts[len(tmp_path.parts)] != "mirror")
    assert written == ["data/datasets/ml-1m/run.lock", "data/datasets/ml-1m/runs/status.json", "params.yaml"]
    failure = json.loads((run_files / "runs" / "status.json").read_text())["last_failure"]
    assert failure["run"] == "decayrec ingest" and "[checksum]" in failure["reason"]


def test_cli_ingest_failure_keeps_earlier_interim_tables(params_file, fake_mirror, tmp_path, monkeypatch, capsys):
    interim = tmp_path / "interim"
    interim.mkdir()
    (interim / "events.parquet").write_bytes(b"earlier output")
    monkeypatch.setenv("DECAYREC_DATA_MIRROR", str(fake_mirror))
    assert main(["--params", str(params_file), "ingest", "--dataset", "ml-1m"]) == 1
    assert "[checksum]" in capsys.readouterr().err
    assert [p.name for p in interim.iterdir()] == ["events.parquet"]
    assert (interim / "events.parquet").read_bytes() == b"earlier output"

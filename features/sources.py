"""Where a data set's files come from (the repo, a local mirror, or GroupLens) and proof
that they are the published bytes: every file is checked against a pinned sha256."""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from features.errors import ChecksumError, DataError

log = logging.getLogger(__name__)

# sha256 of each published file, as GroupLens and Kaggle distribute them.
PINNED_SHA256: dict[str, dict[str, str]] = {
    "ml-latest-small": {
        "README.txt": "e165937702ae1fac9237b6bd377f03d027f7ef97175d4a04a203e8b12d5516ea",
        "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
        "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
        "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
        "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
    },
    "ml-100k": {
        "README": "d5f41f88d1a96b8faefed3c2f51fce1fca3be1ba6ab0d06e346898ffae920de9",
        "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
        "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    },
    "ml-1m": {
        "README": "dc90e3a7a0786854ef5b93ace2f3187b67e0a19650a51725d40086d8495c2c72",
        "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
        "ratings.dat": "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
    },
    "tmdb-5000": {
        "tmdb_5000_movies.csv.zip": "64c04a88117f7fd1cb6a4c7ff6af472816ea2f0d3e6fa37d40eb96af46410465",
    },
}

DOWNLOAD_URLS = {
    "ml-latest-small": "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path, dataset: str) -> None:
    """Check every pinned file of a data set in ``folder``; raise on the first mismatch."""
    for name, expected in PINNED_SHA256[dataset].items():
        path = folder / name
        if not path.is_file():
            raise DataError(path, "file present", f"{dataset} needs {name} in {folder}")
        actual = sha256(path)
        if actual != expected:
            raise ChecksumError(
                path,
                "checksum",
                f"sha256 {actual} does not match the published {expected}: "
                "the file is damaged or not the published one",
            )


def _download(dataset: str, cache: Path, timeout_s: float) -> Path:
    """Fetch and unpack a GroupLens zip into ``cache``, replacing any half-finished copy."""
    url = DOWNLOAD_URLS[dataset]
    cache.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", dataset, url)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        archive = Path(tmp) / f"{dataset}.zip"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:
            raise DataError(
                url,
                "data available",
                f"could not download {dataset} ({err}); with no internet, set "
                f"DECAYREC_DATA_MIRROR to a folder holding {dataset}/",
            ) from None
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        target = cache / dataset
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(Path(tmp) / dataset), target)
    return target


def locate(
    dataset: str,
    *,
    bundled: Path,
    mirror: Path | None,
    download_dir: Path,
    download: bool,
    timeout_s: float = 60.0,
) -> Path:
    """The verified folder holding ``dataset``: bundled copy, then mirror, then download."""
    for root in (bundled, mirror, download_dir):
        if root is not None and (Path(root) / dataset).is_dir():
            folder = Path(root) / dataset
            verify(folder, dataset)
            return folder
    if not download or dataset not in DOWNLOAD_URLS:
        raise DataError(
            mirror or download_dir,
            "data available",
            f"{dataset} not found; set DECAYREC_DATA_MIRROR to a folder holding {dataset}/",
        )
    folder = _download(dataset, download_dir, timeout_s)
    verify(folder, dataset)
    return folder


def locate_optional(dataset: str, mirror: Path | None) -> Path | None:
    """A verified optional source (e.g. TMDB) when the mirror has it, else None."""
    if mirror is None or not (Path(mirror) / dataset).is_dir():
        return None
    folder = Path(mirror) / dataset
    verify(folder, dataset)
    return folder

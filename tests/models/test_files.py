"""models/files.py: a file is whole or absent; a folder replaced in one step is never missing."""
from __future__ import annotations

import threading

from models.files import atomic_write, replace_dir


def test_a_replaced_folder_is_never_missing_to_a_reader(tmp_path):
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "v").write_text("0")
    missing, seen, done = [], set(), threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.add((final / "v").read_text())
            except FileNotFoundError:
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    for version in range(1, 300):
        new = tmp_path / f".bundle.{version}"
        new.mkdir()
        (new / "v").write_text(str(version))
        replace_dir(new, final)
        assert not new.exists()  # the old folder, swapped out, is gone
    done.set()
    reader.join()
    assert not missing and (final / "v").read_text() == "299" and len(seen) > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "pointer.json"
    atomic_write(path, lambda handle: handle.write(b"old"))

    def broken(handle):
        handle.write(b"half")
        raise OSError("disk full")

    try:
        atomic_write(path, broken)
    except OSError:
        pass
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["pointer.json"]

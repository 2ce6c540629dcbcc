"""Trained scorers in the BentoML model store, the champion pointer and the promotion log.

Each model is a BentoML model (``<bento name>-<kind>:<version>``, e.g. ``decayrec-scorer``,
``decayrec-shop-sequence``: one name per data set and kind, so a run on one data set never
moves another's ``latest``) whose folder holds the weights as safetensors and the model's
settings as JSON, never a pickle; its labels hold the data set, protocol, kind, data version,
git commit and ``stage`` (challenger, champion or retired: ``bentoml models get <tag>`` shows
it), its metadata the metrics and parameters.

Which model is the champion is one small JSON file, ``champion.json``: the current tag and
the tags it replaced. Promotion writes a new file beside it and renames it into place, an
atomic step, so a crash at any point leaves the old or the new pointer, never a torn one or
none; the pointer is the truth, and ``promotions.jsonl`` (appended after the rename) is its
history. Rollback moves the pointer back one step. Both happen under the registry's lock, and
promotion is a compare-and-swap: it moves the pointer only from the champion it was measured
against.
"""
from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.files import atomic_write

STAGES = ("challenger", "champion", "retired")


@dataclass(frozen=True)
class Pointer:
    champion: str | None
    previous: tuple[str, ...] = ()  # newest last: where rollback goes


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no champion, nothing to roll back to)."""


class ChampionMoved(RegistryError):
    """The champion is no longer the one a promotion was measured against."""


ANY = object()  # promote whatever the champion is now


class Registry:
    """The champion pointer and log in ``folder``; models in the BentoML store."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.pointer_path = self.folder / "champion.json"
        self.log_path = self.folder / "promotions.jsonl"

    # ------------------------------------------------------------ models

    def save(self, name: str, files: dict[str, bytes], *, metrics: dict, params: dict, labels: dict[str, str]) -> str:
        """A new model ``name`` in the BentoML store from ``files`` (name -> bytes), a
        challenger until promoted; returns its tag."""
        import bentoml

        labels = {**{k: str(v) for k, v in labels.items()}, "stage": "challenger"}
        with bentoml.models.create(name, labels=labels, metadata={"metrics": metrics, "params": params}) as model:
            for name, payload in files.items():
                Path(model.path_of(name)).write_bytes(payload)
        return str(model.tag)

    def path(self, tag: str) -> Path:
        """The folder of a stored model."""
        import bentoml

        return Path(bentoml.models.get(tag).path)

    def info(self, tag: str) -> dict[str, Any]:
        import bentoml

        model = bentoml.models.get(tag)
        return {"tag": str(model.tag), "labels": dict(model.info.labels), **dict(model.info.metadata)}

    # ------------------------------------------------------------ champion

    def pointer(self) -> Pointer:
        if not self.pointer_path.exists():
            return Pointer(None)
        raw = json.loads(self.pointer_path.read_text())
        return Pointer(raw["champion"], tuple(raw.get("previous", ())))

    def champion(self) -> str | None:
        return self.pointer().champion

    def promote(self, tag: str, reasons: list[str], expected: str | None | object = ANY) -> None:
        """Make ``tag`` the champion (the model must be in the store).

        ``expected``: the champion the caller measured ``tag`` against (None: there was
        none). The pointer moves only if it still names that one, checked and moved under
        the registry's lock: a champion that changed meanwhile raises ``ChampionMoved``."""
        self.path(tag)  # raises when the tag is unknown: never point at nothing
        with self._locked():
            current = self.pointer()
            if expected is not ANY and current.champion != expected:
                raise ChampionMoved(f"the champion changed from {expected} to {current.champion} while {tag} was "
                                    "measured against it: not promoted")
            previous = current.previous + ((current.champion,) if current.champion else ())
            self._write(Pointer(tag, previous))
            self._log("promote", tag, current.champion, reasons)
            self._stage(current.champion, "retired")
            self._stage(tag, "champion")

    def rollback(self) -> str:
        """Restore the champion before the current one; returns its tag."""
        with self._locked():
            current = self.pointer()
            if current.champion is None or not current.previous:
                raise RegistryError("nothing to roll back to: there is no earlier champion")
            restored = current.previous[-1]
            self._write(Pointer(restored, current.previous[:-1]))
            self._log("rollback", restored, current.champion, [f"rolled back from {current.champion}"])
            self._stage(current.champion, "retired")
            self._stage(restored, "champion")
        return restored

    def _stage(self, tag: str | None, stage: str) -> None:
        """Label a stored model with its stage. The pointer is the truth and moved first; a
        label is what ``bentoml models get`` shows, and a model deleted from the store has none."""
        import bentoml
        from bentoml.exceptions import NotFound

        if tag is None:
            return
        try:
            model = bentoml.models.get(tag)
        except NotFound:
            return
        model.info.labels["stage"] = stage
        model.flush()  # BentoML's own writer of model.yaml

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive over the pointer and the log, across processes (released if one dies)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def history(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def _write(self, pointer: Pointer) -> None:
        payload = json.dumps({"champion": pointer.champion, "previous": list(pointer.previous)}, indent=1).encode()
        atomic_write(self.pointer_path, lambda handle: handle.write(payload))

    def _log(self, action: str, tag: str, replaced: str | None, reasons: list[str]) -> None:
        entry = {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "action": action, "champion": tag, "replaced": replaced, "reasons": reasons,
        }
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

"""Trained scorers in the BentoML model store, the champion pointer and the promotion log.

Each model is a BentoML model (``decayrec-scorer:<version>``) whose folder holds the weights
as safetensors and the scorer's settings as JSON, never a pickle; its labels hold the data
set, protocol, data version and git commit, its metadata the metrics and parameters.

Which model is the champion is one small JSON file, ``champion.json``: the current tag and
the tags it replaced. Promotion writes a new file beside it and renames it into place, an
atomic step, so a crash at any point leaves the old or the new pointer, never a torn one or
none; the pointer is the truth, and ``promotions.jsonl`` (appended after the rename) is its
history. Rollback moves the pointer back one step.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.files import atomic_write

MODEL_NAME = "decayrec-scorer"


@dataclass(frozen=True)
class Pointer:
    champion: str | None
    previous: tuple[str, ...] = ()  # newest last: where rollback goes


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no champion, nothing to roll back to)."""


class Registry:
    """The champion pointer and log in ``folder``; models in the BentoML store."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.pointer_path = self.folder / "champion.json"
        self.log_path = self.folder / "promotions.jsonl"

    # ------------------------------------------------------------ models

    def save(self, files: dict[str, bytes], *, metrics: dict, params: dict, labels: dict[str, str]) -> str:
        """A new model in the BentoML store from ``files`` (name -> bytes); returns its tag."""
        import bentoml

        with bentoml.models.create(
            MODEL_NAME, labels={k: str(v) for k, v in labels.items()}, metadata={"metrics": metrics, "params": params}
        ) as model:
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

    def promote(self, tag: str, reasons: list[str]) -> None:
        """Make ``tag`` the champion (the model must be in the store)."""
        self.path(tag)  # raises when the tag is unknown: never point at nothing
        current = self.pointer()
        previous = current.previous + ((current.champion,) if current.champion else ())
        self._write(Pointer(tag, previous))
        self._log("promote", tag, current.champion, reasons)

    def rollback(self) -> str:
        """Restore the champion before the current one; returns its tag."""
        current = self.pointer()
        if current.champion is None or not current.previous:
            raise RegistryError("nothing to roll back to: there is no earlier champion")
        restored = current.previous[-1]
        self._write(Pointer(restored, current.previous[:-1]))
        self._log("rollback", restored, current.champion, [f"rolled back from {current.champion}"])
        return restored

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

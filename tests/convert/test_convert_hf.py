"""A Hugging Face directory as input: converted by the pinned llama.cpp's own
convert_hf_to_gguf.py (unchanged), then quantized as llama-quantize would.

The model is a tiny random LlamaForCausalLM with a SentencePiece tokenizer
trained on swgguf's calibration text (no download needed).
"""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest

from swgguf import conversion as cv
from swgguf.runtime import convert_hf
from swgguf.runtime import llm
from swgguf.runtime.build import tools_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("hf")
    spm.SentencePieceTrainer.train(input=str(cv.builtin_calibration()), model_prefix=str(d / "tokenizer"),
                                   vocab_size=320, model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   minloglevel=2)
    cfg = LlamaConfig(vocab_size=320, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float16)
    model.save_pretrained(d)
    np.save(d / "down_proj0.npy", model.model.layers[0].mlp.down_proj.weight.detach().numpy())
    return d


def test_hf_directory_converts_and_quantizes_like_llama_quantize(hf_dir, tmp_path):
    ours = cv.convert(hf_dir, tmp_path / "ours.gguf", cv.ConvertOptions.from_flags(ftype="Q4_K_M")).output
    f16 = convert_hf(hf_dir, tmp_path / "f16.gguf")
    # the F16 file holds the HF weights (down_proj is not permuted by the conversion)
    t = {t.name: t for t in gguf.GGUFReader(str(f16)).tensors}["blk.0.ffn_down.weight"]
    np.testing.assert_array_equal(np.asarray(t.data), np.load(hf_dir / "down_proj0.npy"))
    theirs = tmp_path / "theirs.gguf"
    proc = subprocess.run([str(tools_dir() / "llama-quantize"), str(f16), str(theirs), "Q4_K_M"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert filecmp.cmp(ours, theirs, shallow=False)
    model = llm.load(ours, llm.LoadOptions(n_ctx=64, n_batch=64))
    assert np.isfinite(llm.logits(model, [1, 5, 9, 30, 200])).all()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".swgguf")] == []  # work dir removed


def test_a_directory_without_config_is_refused(tmp_path):
    from swgguf.errors import SwggufError

    with pytest.raises(SwggufError, match="not a Hugging Face model directory"):
        cv.convert(tmp_path, tmp_path / "o.gguf", cv.ConvertOptions.from_flags())

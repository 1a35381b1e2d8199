"""`swgguf detect`: tiny random models of each architecture with a planted super weight,
HF/GGUF loading (normal and --low-mem), verification, known coordinates, bad inputs,
and SmolLM2-135M end to end (slow)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from swgguf import cli, synthetic
from swgguf.detection import (absolute_threshold, detect_super_weights, probe, relative_threshold,
                              zeroed)
from swgguf.detection.known import compare, find_known, known_models
from swgguf.detection.verify import default_text, perplexity, verify_candidates
from swgguf.formats.manifest import load_manifest
from swgguf.default_model import default_model_path
from swgguf.pytorch import (down_proj_gguf_name, down_proj_modules, gguf_element_offset,
                                 load_model)

ARCHITECTURES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "phi3"]
N_FF = 128
# these normalize the MLP output before the residual add, so a random model's planted spike
# does not become a massive residual activation there
POST_FFN_NORM = {"gemma2", "gemma3_text", "olmo2"}
PLANT = (2, 5, 17)  # layer, row (output channel), col (input channel)
PROMPT_IDS = torch.arange(3, 19)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine, two threads spin against each other (7x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny(arch: str, path: Path, plant: bool, vocab_size: int = 128) -> Path:
    """A 6-layer random model from a transformers config, saved as safetensors; with ``plant``,
    down_proj[5, 17] of layer 2 is 2.0 (100 x the weights' scale) and input channel 17 of that
    down_proj spikes (its gate and up rows x100), the paper's large-activation-times-large-weight."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        arch, vocab_size=vocab_size, hidden_size=64, intermediate_size=N_FF, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if plant:
        layer, row, col = PLANT
        mlp = model.model.layers[layer].mlp
        with torch.no_grad():
            mlp.down_proj.weight[row, col] = 2.0
            if hasattr(mlp, "gate_up_proj"):  # phi3: gate and up fused, gate rows first
                mlp.gate_up_proj.weight[[col, N_FF + col]] *= 100
            else:
                mlp.gate_proj.weight[col] *= 100
                mlp.up_proj.weight[col] *= 100
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny("llama", tmp_path_factory.mktemp("llama") / "planted", plant=True)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_planted_super_weight_is_found_exactly(tmp_path, arch):
    _, model = load_model(make_tiny(arch, tmp_path / "planted", plant=True))
    result = detect_super_weights(model, PROMPT_IDS)
    assert [c.coordinate for c in result.candidates] == [PLANT]
    c = result.candidates[0]
    assert c.value == pytest.approx(2.0)
    assert abs(c.output_activation) > result.threshold
    assert c.input_spike_channel == PLANT[2]
    if arch not in POST_FFN_NORM:
        assert result.super_activations and result.super_activations[0].channel == PLANT[1]

    _, clean = load_model(make_tiny(arch, tmp_path / "clean", plant=False))
    assert detect_super_weights(clean, PROMPT_IDS).candidates == []


def test_low_mem_streams_layers_and_matches(tiny_llama):
    _, full = load_model(tiny_llama)
    _, low = load_model(tiny_llama, low_mem=True)
    # before and after a pass, the streamed weights are not in memory
    assert all(p.is_meta for layer in low.model.layers for p in layer.parameters())
    a, b = detect_super_weights(full, PROMPT_IDS), detect_super_weights(low, PROMPT_IDS)
    assert all(p.is_meta for layer in low.model.layers for p in layer.parameters())
    assert [c.coordinate for c in a.candidates] == [c.coordinate for c in b.candidates] == [PLANT]
    assert [s.max_output for s in a.baseline.layers] == pytest.approx([s.max_output for s in b.baseline.layers])
    text = list(range(3, 60))
    assert perplexity(full, text, n_ctx=32).ppl == pytest.approx(perplexity(low, text, n_ctx=32).ppl, rel=1e-5)


def test_zeroed_restores_the_weight(tiny_llama):
    _, model = load_model(tiny_llama)
    weight = down_proj_modules(model)[PLANT[0]].weight
    before = probe(model, PROMPT_IDS[None])
    with zeroed(model, [PLANT]):
        during = probe(model, PROMPT_IDS[None])
    assert float(weight[PLANT[1], PLANT[2]]) == pytest.approx(2.0)
    assert during.layers[PLANT[0]].max_output < before.layers[PLANT[0]].max_output / 10
    assert probe(model, PROMPT_IDS[None], zero=[PLANT]).layers[PLANT[0]].max_output == \
        pytest.approx(during.layers[PLANT[0]].max_output)


def test_verification_ratio_is_paired_ppl_ratio(tiny_llama):
    _, model = load_model(tiny_llama)
    result = detect_super_weights(model, PROMPT_IDS)
    text = list(range(3, 100))
    v = verify_candidates(model, text, result.candidates, factor=1.25, n_ctx=32)
    (only,) = v.results
    assert only.ratio == pytest.approx(only.perplexity.ppl / v.baseline.ppl, rel=1e-6)
    assert only.is_super_weight == (only.ratio >= 1.25)
    assert v.baseline.n_tokens == len(text) - math.ceil(len(text) / 32)  # first token of each window
    with pytest.raises(ValueError):
        verify_candidates(model, text, result.candidates, factor=1.0)


def test_tiny_gguf_normal_and_low_mem(tmp_path):
    cfg = synthetic.LlamaConfig(n_layer=4)
    weights = synthetic.random_weights(cfg, seed=1)
    synthetic.plant_super_weight(weights, layer=1, row=5, col=17, value=4.0, activation_gain=100)
    path = synthetic.write_gguf(tmp_path / "tiny.gguf", cfg, weights, dtype=np.float16)
    for low_mem in (False, True):
        source, model = load_model(path, low_mem=low_mem)
        assert source.kind == "gguf" and source.architecture == "llama"
        result = detect_super_weights(model, torch.arange(1, 17))
        assert [c.coordinate for c in result.candidates] == [(1, 5, 17)]
        assert result.candidates[0].value == pytest.approx(4.0)
    # without the plant: nothing
    clean = synthetic.write_gguf(tmp_path / "clean.gguf", cfg, synthetic.random_weights(cfg, seed=1))
    assert detect_super_weights(load_model(clean)[1], torch.arange(1, 17)).candidates == []


def test_threshold_rules():
    assert relative_threshold(10)([1.0, 2.0, 3.0, 1000.0]) == pytest.approx(25.0)
    assert absolute_threshold(50)([1.0, 1e6]) == 50
    with pytest.raises(ValueError):
        relative_threshold(0.5)


def test_hf_to_gguf_mapping():
    for arch in ("llama", "mistral", "qwen2", "gemma2", "gemma3_text", "olmo2", "phi3"):
        assert down_proj_gguf_name(arch, 32, 11) == "blk.11.ffn_down.weight"
    assert gguf_element_offset(507, 1229, 1536) == 507 * 1536 + 1229
    with pytest.raises(ValueError):
        gguf_element_offset(0, 1536, 1536)


def test_known_coordinates_are_consistent():
    models = known_models()
    names = {m.name for m in models}
    assert {"Llama-7B", "Llama-13B", "Llama-30B", "Llama-2-7B", "Llama-2-13B", "Mistral-7B", "OLMo-1B",
            "OLMo-7B", "Phi-3-mini", "Llama-3-8B"} <= names
    for m in models:
        for layer, row, col in m.super_weights:  # rows are residual channels, cols MLP channels
            assert 0 <= layer < m.n_layers and 0 <= row < m.hidden_size and 0 <= col < m.intermediate_size, m.name
    llama = find_known("huggyllama/llama-7b")
    assert llama.super_weights == ((2, 3968, 7003),)
    cmp = compare([(2, 3968, 7003), (5, 1, 1)], llama)
    assert cmp.matched == [(2, 3968, 7003)] and cmp.extra == [(5, 1, 1)] and not cmp.ok


# --- bad inputs: one line on stderr, exit 1 ----------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["detect", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swgguf: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _gguf_of_arch(path: Path, arch: str) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_bad_inputs(tmp_path, capsys, tiny_llama):
    assert_one_line_error(*run_cli(capsys, str(tmp_path / "absent.gguf"))[::2], "no such file")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(*run_cli(capsys, str(tmp_path / "empty"))[::2], "no config.json")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_one_line_error(*run_cli(capsys, str(text))[::2], "not a model")
    bert = _gguf_of_arch(tmp_path / "bert.gguf", "bert")
    assert_one_line_error(*run_cli(capsys, str(bert))[::2], "unsupported GGUF architecture 'bert'")

    cfg = synthetic.LlamaConfig(n_layer=2)
    whole = synthetic.write_gguf(tmp_path / "whole.gguf", cfg, synthetic.random_weights(cfg))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    assert_one_line_error(*run_cli(capsys, str(cut))[::2], "truncated")
    cut.write_bytes(whole.read_bytes()[:100])  # inside the header
    assert_one_line_error(*run_cli(capsys, str(cut))[::2], "GGUF")

    unknown = tmp_path / "unknown"
    shutil.copytree(tiny_llama, unknown)
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))
    assert_one_line_error(*run_cli(capsys, str(unknown))[::2], "unsupported architecture 'no-such-arch'")

    assert_one_line_error(*run_cli(capsys, str(tiny_llama), "--out", str(tiny_llama / "config.json"))[::2],
                          "overwrite the input")
    assert (tiny_llama / "config.json").read_text().startswith("{")


def test_architecture_without_down_proj(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    assert_one_line_error(*run_cli(capsys, str(tmp_path / "gpt2"), "--no-verify")[::2],
                          "'gpt2' has no MLP down projection")


# --- SmolLM2-135M end to end -----------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    """One CLI run on the shipped Q4_1 GGUF: manifest, plot, --expect, short verification text."""
    out = tmp_path_factory.mktemp("smollm2")
    text = out / "text.txt"
    text.write_text(default_text()[:1600])
    argv = ["detect", str(default_model_path()), "--out", str(out / "m.json"), "--plot", str(out / "f.png"),
            "--text", str(text), "--expect", "SmolLM2-135M", "--threads", "1"]
    rc = cli.main(argv)
    return rc, out


@pytest.mark.slow
def test_smollm2_super_weights(smollm2_run):
    rc, out = smollm2_run
    assert rc == 0  # --expect matched: exactly the two known super weights, verified
    m = load_manifest(out / "m.json")
    assert m.model.format == "gguf" and m.model.n_layers == 30 and len(m.model.sha256) == 64
    found = {w.coordinate: w for w in m.super_weights}
    assert set(found) == {(11, 507, 1229), (2, 507, 90)}
    assert found[(11, 507, 1229)].value == pytest.approx(5.88, abs=0.01)
    assert found[(11, 507, 1229)].tensor == "blk.11.ffn_down.weight"
    for w in found.values():
        assert w.ppl_ratio >= m.verification.factor and w.ppl_ratio - 3 * w.ppl_ratio_se > 1.0
    assert all(c.ppl_ratio < m.verification.factor for c in m.candidates)
    assert m.super_activations[0].channel == 507
    assert m.super_activations[0].token == 0
    assert (out / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smollm2_gguf_offset_holds_the_value(smollm2_run):
    """HF [row, col] of down_proj == element row * n_in + col of blk.<layer>.ffn_down.weight."""
    _, out = smollm2_run
    reader = gguf.GGUFReader(str(default_model_path()))
    for w in load_manifest(out / "m.json").super_weights:
        t = next(t for t in reader.tensors if t.name == w.tensor)
        n_in = int(t.shape[0])  # ggml ne[0]: the input dimension
        flat = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
        assert flat[gguf_element_offset(w.row, w.col, n_in)] == pytest.approx(w.value)


# --- --chunks: how much of the verification text is read ---------------------------------

TINY_VOCAB = 512


@pytest.fixture(scope="module")
def tiny_with_tokenizer(tmp_path_factory, wikitext) -> Path:
    """The planted tiny llama with a real tokenizer: byte-level BPE (the `tokenizers` library)
    trained on the start of WikiText-2, saved next to the weights as transformers saves one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([wikitext.read_text(encoding="utf-8")[:100_000]], trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = make_tiny("llama", tmp_path_factory.mktemp("tok") / "planted", plant=True, vocab_size=TINY_VOCAB)
    PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)
    return path


def _detect_manifest(capsys, model: Path, text: Path, out: Path, *flags: str):
    rc, _, err = run_cli(capsys, str(model), "--text", str(text), "--ctx", "32", "--out", str(out), *flags)
    assert rc == 0, err
    return load_manifest(out)


def test_chunks_caps_the_verification_windows(tiny_with_tokenizer, wikitext, tmp_path, capsys):
    """All of WikiText-2 (~600k tokens of this tokenizer) as --text: the default cap, and
    --chunks 3, are the windows every pass reads."""
    from swgguf.detection.verify import DEFAULT_CHUNKS

    m = _detect_manifest(capsys, tiny_with_tokenizer, wikitext, tmp_path / "default.json")
    assert [w.coordinate for w in m.super_weights + m.candidates] == [PLANT]  # verified, so read the text
    v = m.verification
    assert (v.n_windows, v.chunks, v.ctx, v.n_tokens) == (DEFAULT_CHUNKS, DEFAULT_CHUNKS, 32, DEFAULT_CHUNKS * 31)
    v = _detect_manifest(capsys, tiny_with_tokenizer, wikitext, tmp_path / "three.json", "--chunks", "3").verification
    assert (v.n_windows, v.chunks, v.n_tokens) == (3, 3, 3 * 31)  # 31 predictions in a window of 32


def test_chunks_above_the_text_reads_all_of_it(tiny_with_tokenizer, wikitext, tmp_path, capsys):
    from transformers import AutoTokenizer

    from swgguf.detection.verify import windows

    text = tmp_path / "short.txt"
    text.write_text(wikitext.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    ids = AutoTokenizer.from_pretrained(tiny_with_tokenizer)(text.read_text(encoding="utf-8")).input_ids
    available = windows(ids, 32)
    assert 2 <= len(available) < 1000
    v = _detect_manifest(capsys, tiny_with_tokenizer, text, tmp_path / "m.json", "--chunks", "1000").verification
    assert (v.n_windows, v.chunks, v.n_tokens) == (len(available), 1000, sum(len(w) - 1 for w in available))


def test_leading_tokens_are_the_whole_texts_first(tiny_with_tokenizer, wikitext):
    """Tokenizing a prefix (cut at a line break) gives the tokens the whole text starts with."""
    from transformers import AutoTokenizer

    from swgguf.detection.verify import leading_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_with_tokenizer)
    text = wikitext.read_text(encoding="utf-8")
    whole = tokenizer(text).input_ids
    for n in (1, 31, 4096, 50_000):
        assert leading_tokens(tokenizer, text, n) == whole[:n]
    one_line = text[:200_000].replace("\n", " ")  # no line break: the prefix is cut inside a word
    assert leading_tokens(tokenizer, one_line, 4096) == tokenizer(one_line).input_ids[:4096]
    assert leading_tokens(tokenizer, text[:500], 10**6) == tokenizer(text[:500]).input_ids
    assert leading_tokens(tokenizer, text[:500], None) == tokenizer(text[:500]).input_ids


@pytest.mark.parametrize("value", ["0", "-2"])
def test_chunks_below_one_is_one_line(tiny_llama, capsys, value):
    assert_one_line_error(*run_cli(capsys, str(tiny_llama), "--chunks", value)[::2],
                          f"--chunks must be at least 1, got {value}")


def test_progress_is_plain_lines_off_a_terminal(tiny_with_tokenizer, wikitext):
    """stdout and stderr piped: the stages as plain lines on stderr, no ANSI escape anywhere."""
    proc = subprocess.run([sys.executable, "-m", "swgguf", "detect", str(tiny_with_tokenizer), "--text", str(wikitext),
                           "--ctx", "32", "--chunks", "2", "--threads", "1"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\x1b" not in proc.stdout + proc.stderr
    ended = [line.split(": done in ")[0] for line in proc.stderr.splitlines() if ": done in " in line]
    # 2 windows for the unmodified model, 2 with the planted weight zeroed
    assert ended == ["swgguf detect: loading the model", "swgguf detect: detecting",
                     "swgguf detect: tokenizing the text", "swgguf detect: verifying 4/4",
                     "swgguf detect: hashing the model"], proc.stderr
    assert "baseline perplexity" in proc.stdout

"""Shared fixtures: a tiny synthetic llama model, the SmolLM2 reference model and a
protected SmolLM2 file with its plain twin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from swgguf import conversion as cv
from swgguf import synthetic
from swgguf.conversion.inputs import strip_sidecars
from swgguf.default_model import default_model_path

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "wiki.test.tokens"


@pytest.fixture(scope="session")
def tiny_cfg() -> synthetic.LlamaConfig:
    return synthetic.LlamaConfig()


@pytest.fixture(scope="session")
def tiny_weights(tiny_cfg):
    """Random weights with a planted super weight at blk.0.ffn_down[5, 17]."""
    w = synthetic.random_weights(tiny_cfg, seed=0)
    synthetic.plant_super_weight(w, layer=0, row=5, col=17, value=4.0)
    return w


@pytest.fixture(scope="session")
def tiny_f32(tmp_path_factory, tiny_cfg, tiny_weights) -> Path:
    return synthetic.write_gguf(tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf", tiny_cfg, tiny_weights)


@dataclass(frozen=True)
class ProtectedPair:
    protected: Path  # `swgguf convert --protect-sw` with the defaults
    plain: Path  # the same file without its sidecar: the same weight bytes, llama-quantize's


@pytest.fixture(scope="session")
def smollm2_q3k(tmp_path_factory) -> ProtectedPair:
    """SmolLM2-135M Q3_K_M protected (default options), and the same file with its sidecar
    tensors and keys dropped. At Q3_K_M the two give visibly different greedy text."""
    work = tmp_path_factory.mktemp("smollm2-q3k")
    ref = cv.make_f16_reference(default_model_path(), work / "f16.gguf")
    protected = work / "smollm2-q3_k_m-sw.gguf"
    cv.convert(ref, protected, cv.ConvertOptions.from_flags(ftype="Q3_K_M", protect_sw=True))
    plain = strip_sidecars(protected, work, []).rename(work / "smollm2-q3_k_m.gguf")
    ref.unlink()
    return ProtectedPair(protected, plain)


@pytest.fixture(scope="session")
def wikitext() -> Path:
    if not WIKITEXT.is_file():
        pytest.fail(f"WikiText-2 test split not found at {WIKITEXT}")
    return WIKITEXT


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where the runtime has a CUDA backend; elsewhere
    they are skipped with a reason that `-ra` prints (never silently)."""
    if not any("cuda" in item.keywords for item in items):
        return
    from swgguf.runtime.info import runtime_info

    if "cuda" in runtime_info().backends:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and `swgguf runtime build --cuda` (run on the GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)

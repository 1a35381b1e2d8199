"""Synthetic llama-architecture GGUF models and their NumPy reference forward.

Test support, not used by swgguf itself: the tests (a 2-layer model of width
256 whose logits are checked against :func:`llama_forward`) and the GPU
benchmark (a ~1B model built for the run) import it. The reference follows llama.cpp's llama graph exactly: RMSNorm,
rotary embedding in "normal" mode (adjacent pairs, as convert_hf_to_gguf
permutes HF checkpoints to), grouped-query attention, SwiGLU, untied output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .formats.gguf_io import dequantize_tensor  # noqa: F401 (also used as synthetic.dequantize_tensor)


@dataclass(frozen=True)
class LlamaConfig:
    n_vocab: int = 512
    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 512
    n_ctx: int = 256
    rope_base: float = 10000.0
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def layer_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """numpy shapes (n_out, n_in) of every tensor of one layer, by GGUF suffix."""
    kv = cfg.n_head_kv * cfg.head_dim
    return {
        "attn_norm.weight": (cfg.n_embd,),
        "attn_q.weight": (cfg.n_embd, cfg.n_embd),
        "attn_k.weight": (kv, cfg.n_embd),
        "attn_v.weight": (kv, cfg.n_embd),
        "attn_output.weight": (cfg.n_embd, cfg.n_embd),
        "ffn_norm.weight": (cfg.n_embd,),
        "ffn_gate.weight": (cfg.n_ff, cfg.n_embd),
        "ffn_up.weight": (cfg.n_ff, cfg.n_embd),
        "ffn_down.weight": (cfg.n_embd, cfg.n_ff),
    }


def random_weights(cfg: LlamaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights by GGUF tensor name, scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {
        "token_embd.weight": rng.standard_normal((cfg.n_vocab, cfg.n_embd), np.float32),
        "output_norm.weight": np.ones(cfg.n_embd, np.float32),
        "output.weight": rng.standard_normal((cfg.n_vocab, cfg.n_embd), np.float32) / np.sqrt(cfg.n_embd),
    }
    for il in range(cfg.n_layer):
        for suffix, shape in layer_shapes(cfg).items():
            if len(shape) == 1:
                a = 1.0 + 0.1 * rng.standard_normal(shape, np.float32)
            else:
                a = rng.standard_normal(shape, np.float32) / np.sqrt(shape[1])
            w[f"blk.{il}.{suffix}"] = a.astype(np.float32)
    return w


def plant_super_weight(w: dict[str, np.ndarray], layer: int, row: int, col: int,
                       value: float, activation_gain: float = 20.0) -> None:
    """Plant a super weight at blk.<layer>.ffn_down[row, col] and make input channel
    ``col`` of that projection spike (its gate and up rows scaled by ``activation_gain``),
    as the paper describes: a large activation times a large weight."""
    w[f"blk.{layer}.ffn_down.weight"][row, col] = value
    for name in ("ffn_gate", "ffn_up"):
        w[f"blk.{layer}.{name}.weight"][col, :] *= np.sqrt(activation_gain)


def write_gguf(path: str | Path, cfg: LlamaConfig, weights: dict[str, np.ndarray],
               dtype: type = np.float32) -> Path:
    """Write a llama GGUF holding ``weights`` (2-D ones as ``dtype``; norms stay F32)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("swgguf-synthetic")
    writer.add_context_length(cfg.n_ctx)
    writer.add_embedding_length(cfg.n_embd)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.n_ff)
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv(cfg.n_head_kv)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_base)
    writer.add_layer_norm_rms_eps(cfg.rms_eps)
    writer.add_vocab_size(cfg.n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == np.float32 else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("no_vocab")
    for name, a in weights.items():
        writer.add_tensor(name, a.astype(dtype) if a.ndim == 2 else a.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """All ``*.weight`` tensors of a GGUF, dequantized to float32 numpy arrays."""
    reader = gguf.GGUFReader(str(path))
    return {t.name: dequantize_tensor(t) for t in reader.tensors if t.name.endswith(".weight")}


# --- reference forward ---------------------------------------------------------


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _rope_normal(x: np.ndarray, base: float) -> np.ndarray:
    """llama.cpp rope mode 0: rotate adjacent pairs (x[2i], x[2i+1]); x is (T, heads, hd)."""
    t, _, hd = x.shape
    theta = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    angle = np.arange(t, dtype=np.float64)[:, None] * theta[None, :]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    x0, x1 = x[..., 0::2].astype(np.float64), x[..., 1::2].astype(np.float64)
    out = np.empty(x.shape, np.float64)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def llama_forward(cfg: LlamaConfig, w: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    """Logits (T, n_vocab) of llama.cpp's llama graph, computed in float64."""
    hd, rep = cfg.head_dim, cfg.n_head // cfg.n_head_kv
    x = w["token_embd.weight"][np.asarray(tokens)].astype(np.float64)
    t = x.shape[0]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for il in range(cfg.n_layer):
        p = f"blk.{il}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], cfg.rms_eps)
        q = _rope_normal((h @ w[p + "attn_q.weight"].T).reshape(t, cfg.n_head, hd), cfg.rope_base)
        k = _rope_normal((h @ w[p + "attn_k.weight"].T).reshape(t, cfg.n_head_kv, hd), cfg.rope_base)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t, cfg.n_head_kv, hd)
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(t, cfg.n_embd)
        x = x + attn @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"], cfg.rms_eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = _rms_norm(x, w["output_norm.weight"], cfg.rms_eps)
    return (x @ w["output.weight"].T).astype(np.float32)

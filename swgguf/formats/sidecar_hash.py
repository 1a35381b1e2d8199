"""swg64: the 64-bit hash that binds a sidecar to the bytes of the weight it corrects.

Defined in docs/sidecar.md and implemented identically in the runtime
(``llama_swgguf_hasher`` in src/llama-swgguf-parse.cpp of the patch series): the
bytes, read as little-endian u64 words ``w_i`` (the last zero-padded), give

    h = fmix64(n_bytes ^ sum_i fmix64(w_i ^ (i + 1) * STEP))      (mod 2**64)

where fmix64 is MurmurHash3's 64-bit finalizer. Each word is mixed on its own, so
NumPy hashes a tensor in a few vectorised passes over it; fmix64 is a bijection,
so a change confined to one word always changes the hash. It is not
cryptographic: it catches stale residuals (a weight re-quantized or edited after
its sidecar was made), not an attacker who forges both.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HASH_M1", "HASH_M2", "HASH_STEP", "Hasher", "swg64"]

HASH_M1 = 0xFF51AFD7ED558CCD
HASH_M2 = 0xC4CEB9FE1A85EC53
HASH_STEP = 0x9E3779B97F4A7C15  # 2**64 / golden ratio

MASK = (1 << 64) - 1
# words per pass: small enough that the temporaries stay in cache
CHUNK_WORDS = 1 << 16
SHIFT = np.uint64(33)


def fmix64(k: np.ndarray, tmp: np.ndarray | None = None) -> np.ndarray:
    """MurmurHash3's finalizer on a uint64 array, in place (uint64 arithmetic wraps)."""
    tmp = np.empty_like(k) if tmp is None else tmp[: k.size]
    for mult in (HASH_M1, HASH_M2):
        np.right_shift(k, SHIFT, out=tmp)
        k ^= tmp
        k *= np.uint64(mult)
    np.right_shift(k, SHIFT, out=tmp)
    k ^= tmp
    return k


class Hasher:
    """swg64 over words fed in order, with reusable buffers."""

    def __init__(self) -> None:
        self.steps = np.arange(1, CHUNK_WORDS + 1, dtype=np.uint64) * np.uint64(HASH_STEP)  # (i + 1) * STEP
        self.k = np.empty(CHUNK_WORDS, np.uint64)
        self.tmp = np.empty(CHUNK_WORDS, np.uint64)
        self.acc = 0
        self.n_words = 0

    def update(self, words: np.ndarray) -> None:
        """Mix little-endian u64 ``words`` (at most CHUNK_WORDS) that follow those fed so far."""
        m = words.size
        k = self.k[:m]
        np.add(self.steps[:m], np.uint64(self.n_words * HASH_STEP & MASK), out=k)
        k ^= words
        fmix64(k, self.tmp)
        self.acc = (self.acc + int(k.sum(dtype=np.uint64))) & MASK
        self.n_words += m


def swg64(data: bytes | np.ndarray) -> int:
    """The swg64 hash of ``data`` (bytes, or any array: its raw bytes in memory order)."""
    raw = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else np.asarray(data).reshape(-1).view(np.uint8)
    n = raw.size
    n_full = n // 8
    h = Hasher()
    for start in range(0, n_full, CHUNK_WORDS):
        h.update(raw[start * 8: min(n_full, start + CHUNK_WORDS) * 8].view("<u8"))
    if n % 8:
        tail = np.zeros(8, np.uint8)
        tail[: n % 8] = raw[n_full * 8:]
        h.update(tail.view("<u8"))
    return int(fmix64(np.array([n ^ h.acc], np.uint64))[0])

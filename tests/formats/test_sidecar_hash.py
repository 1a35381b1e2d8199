"""swg64, the hash that binds a sidecar to its weight's bytes: golden values shared with
the runtime (docs/sidecar.md; tests/fuzz/fuzz_sidecar.cpp checks the same values in
C++), and the vectorised NumPy code against a word-by-word reference."""

from __future__ import annotations

import numpy as np
import pytest

from swgguf.formats import sidecar_hash
from swgguf.formats.sidecar_hash import swg64

GOLDEN = {
    b"": 0x0000000000000000,
    b"a": 0x4DC5EBDAE78C2FA1,
    b"abcdefgh": 0xB74B5102C6ED9033,
    b"abcdefghi": 0xF00BB6306FCCB524,
    b"The quick brown fox jumps over the lazy dog": 0x1BE6D4957107143B,
}
MASK = (1 << 64) - 1


def reference(data: bytes) -> int:
    """docs/sidecar.md's definition, one word at a time in Python integers."""
    def fmix(k: int) -> int:
        k ^= k >> 33
        k = (k * sidecar_hash.HASH_M1) & MASK
        k ^= k >> 33
        k = (k * sidecar_hash.HASH_M2) & MASK
        return k ^ (k >> 33)

    padded = data + b"\0" * (-len(data) % 8)
    acc = 0
    for i in range(len(padded) // 8):
        w = int.from_bytes(padded[8 * i: 8 * i + 8], "little")
        acc = (acc + fmix(w ^ ((i + 1) * sidecar_hash.HASH_STEP & MASK))) & MASK
    return fmix(len(data) ^ acc)


@pytest.mark.parametrize("data", list(GOLDEN))
def test_golden_values(data):
    assert swg64(data) == GOLDEN[data] == reference(data)


@pytest.mark.parametrize("n", [7, 8, 9, 8 * sidecar_hash.CHUNK_WORDS - 3, 8 * sidecar_hash.CHUNK_WORDS + 13])
def test_numpy_matches_the_reference_across_chunks(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    assert swg64(data) == reference(data.tobytes()) == swg64(data.tobytes())


def test_any_change_to_one_word_changes_the_hash():
    data = bytearray(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    base = swg64(bytes(data))
    seen = {base}
    for pos in (0, 1, 2047, 4095):
        for bit in range(8):
            changed = bytearray(data)
            changed[pos] ^= 1 << bit
            seen.add(swg64(bytes(changed)))
    assert len(seen) == 1 + 4 * 8


def test_word_order_and_trailing_zeros_matter():
    a = bytes(range(16))
    assert swg64(a) != swg64(a[8:] + a[:8])
    assert swg64(a) != swg64(a + b"\0")  # the length is mixed in, not only the padded words

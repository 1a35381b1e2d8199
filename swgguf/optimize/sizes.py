"""``--target-size`` / ``--target-bpw``: the file size a plan must fit."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import SwggufError
from ..formats.gguf_io import check_gguf, open_gguf

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMgG]i?[bB]?|[bB])?\s*")
# K/M/G alone and KiB/MiB/GiB are binary (as the sidecar budget's '2M'); KB/MB/GB decimal
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9}


def parse_size(text: str) -> int:
    """'900MiB', '0.9GiB', '900M' (binary), '943718400', '900MB' (decimal) -> bytes."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise SwggufError(f"target size {text!r} is not a size: bytes ('943718400') or with a unit "
                          "('900MiB', '0.9GiB', '900MB')")
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
    if not unit or unit == "b":
        scale = 1
    elif unit.endswith("b") and not unit.endswith("ib"):
        scale = _DECIMAL[unit[0]]
    else:
        scale = _BINARY[unit[0]]
    size = int(value * scale)
    if size <= 0:
        raise SwggufError(f"target size {text!r} is not positive")
    return size


def target_bytes(size: str | None, bpw: float | None, n_params: int) -> int:
    """The file size to fit: the smaller of ``size`` and ``bpw`` bits per parameter (the
    whole file counted, so its bits per weight, sidecar included, are at most ``bpw``)."""
    if size is None and bpw is None:
        raise SwggufError("give --target-size or --target-bpw")
    out = []
    if size is not None:
        out.append(parse_size(size))
    if bpw is not None:
        if not 0 < bpw <= 32:
            raise SwggufError(f"--target-bpw {bpw} is out of range (0, 32]")
        out.append(int(bpw * n_params / 8))
    return min(out)


def model_params(model: Path) -> int:
    """Parameters of a GGUF model (for --target-bpw); a directory is refused."""
    model = Path(model)
    if not model.is_file():
        raise SwggufError("--target-bpw needs a GGUF input (use --target-size for a directory)", model)
    check_gguf(model)
    return sum(int(t.n_elements) for t in open_gguf(model).tensors)

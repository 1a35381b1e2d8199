"""The float GGUF a conversion starts from, and the checks made before any work.

* a float GGUF (F32/F16/BF16) is used as it is;
* a Hugging Face directory is converted with llama.cpp's convert_hf_to_gguf.py
  (:func:`swgguf.runtime.convert_hf`);
* a quantized GGUF (with --allow-requantize) is dequantized to F16 by
  llama.cpp's own quantizer (:func:`make_f16_reference`): every quantized tensor
  is dequantized by ggml and rounded to F16, everything else is copied. For the
  shipped SmolLM2 Q4_1 the result equals gguf-py's dequantization rounded to
  F16 exactly (tests/convert/test_convert_smollm2.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..errors import SwggufError
from ..formats.files import check_outputs
from ..formats.gguf_io import check_gguf, quantized_tensors
from ..formats.lora import lora_path
from ..runtime import convert_hf, quantize
from .options import ConvertOptions, QuantOptions

log = logging.getLogger(__name__)

# nominal bits per weight, for the free-space check only (a generous upper bound)
NOMINAL_BPW = {"Q2_K": 3.5, "Q3_K": 4.5, "Q4_K": 5.5, "Q5_K": 6.5, "Q6_K": 7.0, "Q8_0": 8.5}


def make_f16_reference(src: str | Path, dst: str | Path, nthread: int = 0) -> Path:
    """``dst``: GGUF ``src`` with every tensor dequantized to F16 by llama.cpp (atomic)."""
    return quantize(src, dst, "F16", allow_requantize=True, nthread=nthread)


def check_paths(src: Path, dst: Path, opts: ConvertOptions) -> None:
    """Refuse a missing input and, by the output rule (formats/files.py), an output
    (or its LoRA adapter) that would overwrite an input or each other, or that cannot
    be written."""
    if not src.exists():
        raise SwggufError("no such file or directory", src)
    if src.is_file():
        check_gguf(src)
    outputs = [("the output", dst)]
    if opts.protect is not None and opts.protect.lora_compat:
        outputs.append(("the LoRA adapter", lora_path(dst)))
    check_outputs(outputs, [src, *opts.input_paths()])


def prepare_input(src: Path, work: Path, opts: QuantOptions, warnings: list[str]) -> Path:
    """A float GGUF for ``src``: as is, converted from HF, or dequantized (with a warning)."""
    if src.is_dir():
        out = work / f"hf-{opts.hf_outtype}.gguf"
        log.info("converting %s with convert_hf_to_gguf.py", src)
        return convert_hf(src, out, opts.hf_outtype)
    quantized = quantized_tensors(src)
    if not quantized:
        return src
    if not opts.allow_requantize:
        name, qtype = next(iter(quantized.items()))
        raise SwggufError(f"the input is quantized ({name} is {qtype}); pass --allow-requantize to dequantize it "
                          "first (the reference is then the dequantized model)", src)
    warnings.append(f"the input is quantized ({len(quantized)} tensors, e.g. {next(iter(quantized.values()))}): "
                    "it was dequantized to F16 first, so the reference is the dequantized model")
    return make_f16_reference(src, work / "dequantized-f16.gguf", nthread=opts.nthread)


def check_free_space(float_path: Path, dst: Path, ftype: str) -> None:
    """Refuse up front an output folder without room for the plain file and the output."""
    bpw = next((b for k, b in NOMINAL_BPW.items() if ftype.startswith(k)), 16.5)
    need = int(2.2 * float_path.stat().st_size * bpw / 16)
    free = shutil.disk_usage(dst.parent).free
    if free < need:
        raise SwggufError(f"not enough free space: about {need / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free",
                          dst.parent)

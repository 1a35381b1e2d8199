"""The float GGUF a conversion starts from, and the checks made before any work.

* a float GGUF (F32/F16/BF16) is used as it is;
* a Hugging Face directory is converted with llama.cpp's convert_hf_to_gguf.py
  (:func:`swgguf.runtime.convert_hf`);
* a GGUF that carries a swgguf sidecar loses it first (:func:`strip_sidecars`): its
  residuals fit the input's weight bytes, never the output's;
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
from ..formats.gguf_io import check_gguf, copy_gguf, open_gguf, quantized_tensors
from ..formats.lora import lora_path
from ..formats.sidecar import sidecar_tensor_names
from ..runtime import convert_hf, quantize
from .options import ConvertOptions, QuantOptions

log = logging.getLogger(__name__)

SWGGUF_KEY_PREFIX = "swgguf."  # the sidecar keys and the provenance of a protected file

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


def strip_sidecars(src: Path, work: Path, warnings: list[str]) -> Path:
    """``src`` without sidecar tensors and swgguf keys (with a one-line warning), or ``src``
    itself when it has none: llama-quantize would copy them unchanged into the output,
    where the old residuals no longer match the re-quantized bytes."""
    reader = open_gguf(src)
    tensors = sidecar_tensor_names(reader)
    keys = [k for k in reader.fields if k.startswith(SWGGUF_KEY_PREFIX)]
    if not tensors and not keys:
        return src
    warnings.append(f"the input carries a swgguf sidecar ({len(tensors)} tensors, {len(keys)} keys): dropped, "
                    "since its residuals fit the input's bytes, not the output's")
    return copy_gguf(reader, work / "input-without-sidecar.gguf", drop=tensors, drop_keys=keys)


def prepare_input(src: Path, work: Path, opts: QuantOptions, warnings: list[str]) -> Path:
    """A float GGUF for ``src``: as is, converted from HF, or dequantized (with a warning),
    without any sidecar it carried."""
    if src.is_dir():
        out = work / f"hf-{opts.hf_outtype}.gguf"
        log.info("converting %s with convert_hf_to_gguf.py", src)
        return convert_hf(src, out, opts.hf_outtype)
    stripped = strip_sidecars(src, work, warnings)
    quantized = quantized_tensors(stripped)
    if not quantized:
        return stripped
    if not opts.allow_requantize:
        name, qtype = next(iter(quantized.items()))
        raise SwggufError(f"the input is quantized ({name} is {qtype}); pass --allow-requantize to dequantize it "
                          "first (the reference is then the dequantized model)", src)
    warnings.append(f"the input is quantized ({len(quantized)} tensors, e.g. {next(iter(quantized.values()))}): "
                    "it was dequantized to F16 first, so the reference is the dequantized model")
    return make_f16_reference(stripped, work / "dequantized-f16.gguf", nthread=opts.nthread)


def check_free_space(float_path: Path, dst: Path, ftype: str) -> None:
    """Refuse up front an output folder without room for the plain file and the output."""
    bpw = next((b for k, b in NOMINAL_BPW.items() if ftype.startswith(k)), 16.5)
    need = int(2.2 * float_path.stat().st_size * bpw / 16)
    free = shutil.disk_usage(dst.parent).free
    if free < need:
        raise SwggufError(f"not enough free space: about {need / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free",
                          dst.parent)

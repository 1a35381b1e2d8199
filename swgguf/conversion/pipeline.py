"""A conversion as one library call: prepare the float input, quantize it with
llama.cpp, protect it (``--protect-sw``), write the result.

``swgguf convert``, ``swgguf demo`` and the benchmarks call :func:`convert`;
the command only parses flags and renders the :class:`ConvertReport`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import SwggufError
from ..formats.files import publish
from ..formats.lora import lora_path, write_lora_adapter
from ..formats.sidecar import write_with_sidecars
from ..progress import Progress, no_progress, renamed
from ..protect import ProtectOptions, Protection, protect
from ..protect.provenance import provenance
from ..runtime import quantize
from .calibration import QuantImatrix, quantization_imatrix, salience_statistics
from .inputs import check_free_space, check_paths, prepare_input
from .options import ConvertOptions, QuantOptions
from .report import ConvertReport, summarize


def convert(src: str | Path, dst: str | Path, opts: ConvertOptions,
            progress: Progress = no_progress) -> ConvertReport:
    """Convert ``src`` (a float or, with allow_requantize, quantized GGUF, or a HF directory)
    to ``dst``, written atomically; with ``opts.protect``, with the outlier sidecar (or its
    LoRA adapter). Temporary files live in a folder beside ``dst``, removed at the end."""
    src, dst = Path(src), Path(dst)
    opts.validate()
    check_paths(src, dst)
    with tempfile.TemporaryDirectory(prefix=".swgguf-convert-", dir=dst.parent) as tmp:
        try:
            return _convert(src, dst, opts, Path(tmp), progress)
        except OSError as err:
            raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None


def _convert(src: Path, dst: Path, opts: ConvertOptions, work: Path, progress: Progress) -> ConvertReport:
    q, warnings = opts.quant, []
    progress("preparing input", 0, 1, src.name)
    float_path = prepare_input(src, work, q, warnings)
    check_free_space(float_path, dst, q.ftype)
    progress("preparing input", 1, 1, src.name)
    quant_imatrix = quantization_imatrix(float_path, q, work, progress)
    plain = work / "plain.gguf"
    quantize_plain(float_path, plain, q, quant_imatrix, progress)
    if opts.protect is None:
        publish(plain, dst)
        return summarize(dst, q.ftype, None, warnings, quant_imatrix is not None)
    return _protected(float_path, plain, dst, opts.protect, q, quant_imatrix, work, warnings, progress)


def quantize_plain(float_path: Path, dst: Path, q: QuantOptions, imatrix: QuantImatrix | None,
                   progress: Progress = no_progress) -> Path:
    """llama.cpp's quantization of ``float_path`` under ``q`` (llama-quantize's bytes)."""
    return quantize(float_path, dst, q.ftype, pure=q.pure, nthread=q.nthread,
                    imatrix=imatrix.imatrix if imatrix else None, imatrix_file=imatrix.recorded_as if imatrix else None,
                    tensor_types=q.tensor_types, output_tensor_type=q.output_tensor_type,
                    token_embedding_type=q.token_embedding_type, leave_output_tensor=q.leave_output_tensor,
                    progress=progress)


def _protected(float_path: Path, plain: Path, dst: Path, p: ProtectOptions, q: QuantOptions,
               quant_imatrix: QuantImatrix | None, work: Path, warnings: list[str],
               progress: Progress) -> ConvertReport:
    """The protected file (or plain file + LoRA adapter) from the plain quantization."""
    stats = salience_statistics(float_path, quant_imatrix, p, q, work, progress)

    def requantize(clipped: Path) -> Path:  # --clip: the clipped float model onto the plain file
        return quantize_plain(clipped, plain, q, quant_imatrix, renamed(progress, "quantizing (clipped)"))

    protection = protect(float_path, plain, stats, p, requantize=requantize, work=work, progress=progress)
    warnings += protection.warnings
    if not protection.sidecars:
        warnings.append("nothing to protect: the output is the plain quantization")
        publish(plain, dst)
        return summarize(dst, q.ftype, protection, warnings, quant_imatrix is not None)
    kv = provenance(protection, stats, ftype=q.ftype, manifest=p.manifest,
                    imatrix_in_quantization=quant_imatrix is not None, clip=p.clip)
    return _write(plain, dst, protection, kv, p.lora_compat, q.ftype, warnings, quant_imatrix is not None, progress)


def _write(plain: Path, dst: Path, protection: Protection, kv: dict[str, object], lora_compat: bool, ftype: str,
           warnings: list[str], imatrix_used: bool, progress: Progress) -> ConvertReport:
    """The sidecars into a copy of the plain file, or beside it as a LoRA adapter."""
    progress("writing", 0, 1, dst.name)
    adapter = None
    if lora_compat:
        adapter = write_lora_adapter(plain, lora_path(dst), protection.sidecars, kv)
        publish(plain, dst)
    else:
        write_with_sidecars(plain, dst, protection.sidecars, kv)
    progress("writing", 1, 1, dst.name)
    report = summarize(dst, ftype, protection, warnings, imatrix_used)
    if adapter is not None:
        report.lora_adapter = adapter
        report.sidecar_bytes = adapter.stat().st_size
    return report

"""A conversion as one library call: prepare the float input, quantize it with
llama.cpp, protect it (``--protect-sw``), write the result.

``swgguf convert``, ``swgguf demo`` and the benchmarks call :func:`convert`;
the command only parses flags and renders the :class:`ConvertReport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import SwggufError
from ..formats.files import publish, work_dir
from ..formats.gguf_io import shares_readers
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


@shares_readers
def convert(src: str | Path, dst: str | Path, opts: ConvertOptions,
            progress: Progress = no_progress) -> ConvertReport:
    """Convert ``src`` (a float or, with allow_requantize, quantized GGUF, or a HF directory)
    to ``dst``, written atomically; with ``opts.protect``, with the outlier sidecar (or its
    LoRA adapter). Temporary files live in a folder beside ``dst``, removed at the end
    or on an interrupt (formats/files.py work_dir)."""
    src, dst = Path(src), Path(dst)
    opts.validate()
    check_paths(src, dst, opts)
    with work_dir(dst.parent, "convert") as tmp:
        try:
            return _convert(src, dst, opts, tmp, progress)
        except OSError as err:
            raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None


def _convert(src: Path, dst: Path, opts: ConvertOptions, work: Path, progress: Progress) -> ConvertReport:
    q, warnings = opts.quant, []
    progress("preparing input", 0, 1, src.name)
    float_path = prepare_input(src, work, q, warnings)
    check_free_space(float_path, dst, q.ftype)
    progress("preparing input", 1, 1, src.name)
    job = _Job(dst, work, q, quantization_imatrix(float_path, q, work, progress), warnings, progress)
    plain = quantize_plain(float_path, work / "plain.gguf", q, job.imatrix, progress)
    if opts.protect is None:
        publish(plain, dst)
        return job.report(None)
    return job.protected(float_path, plain, opts.protect)


def quantize_plain(float_path: Path, dst: Path, q: QuantOptions, imatrix: QuantImatrix | None,
                   progress: Progress = no_progress) -> Path:
    """llama.cpp's quantization of ``float_path`` under ``q`` (llama-quantize's bytes)."""
    return quantize(float_path, dst, q.ftype, pure=q.pure, nthread=q.nthread,
                    imatrix=imatrix.imatrix if imatrix else None, imatrix_file=imatrix.recorded_as if imatrix else None,
                    tensor_types=q.tensor_types, output_tensor_type=q.output_tensor_type,
                    token_embedding_type=q.token_embedding_type, leave_output_tensor=q.leave_output_tensor,
                    progress=progress)


@dataclass
class _Job:
    """What the steps after quantization share."""

    dst: Path
    work: Path
    quant: QuantOptions
    imatrix: QuantImatrix | None  # the quantizer's
    warnings: list[str]
    progress: Progress

    def report(self, protection: Protection | None) -> ConvertReport:
        return summarize(self.dst, self.quant.ftype, protection, self.warnings, self.imatrix is not None)

    def protected(self, float_path: Path, plain: Path, p: ProtectOptions) -> ConvertReport:
        """The protected file (or plain file + LoRA adapter) from the plain quantization."""
        stats = salience_statistics(float_path, self.imatrix, p, self.quant, self.work, self.progress)

        def requantize(clipped: Path) -> Path:  # --clip: the clipped float model onto the plain file
            return quantize_plain(clipped, plain, self.quant, self.imatrix,
                                  renamed(self.progress, "quantizing (clipped)"))

        protection = protect(float_path, plain, stats, p, requantize=requantize, work=self.work,
                             progress=self.progress)
        self.warnings += protection.warnings
        if not protection.sidecars:
            self.warnings.append("nothing to protect: the output is the plain quantization")
            publish(plain, self.dst)
            return self.report(protection)
        kv = provenance(protection, stats, ftype=self.quant.ftype, manifest=p.manifest,
                        imatrix_in_quantization=self.imatrix is not None, clip=p.clip)
        return self.write(plain, protection, kv, p.lora_compat)

    def write(self, plain: Path, protection: Protection, kv: dict[str, object], lora_compat: bool) -> ConvertReport:
        """The sidecars into a copy of the plain file, or beside it as a LoRA adapter."""
        self.progress("writing", 0, 1, self.dst.name)
        adapter = None
        if lora_compat:
            adapter = write_lora_adapter(plain, lora_path(self.dst), protection.sidecars, kv)
            publish(plain, self.dst)
        else:
            write_with_sidecars(plain, self.dst, protection.sidecars, kv)
        self.progress("writing", 1, 1, self.dst.name)
        report = self.report(protection)
        if adapter is not None:
            report.lora_adapter = adapter
            report.sidecar_bytes = adapter.stat().st_size
        return report

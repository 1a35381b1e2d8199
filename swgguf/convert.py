"""Make a k-quant GGUF, optionally with an outlier sidecar (`--protect-sw`).

  swgguf convert MODEL --q4_k [--imatrix FILE | --calib TEXT] [--protect-sw] -o OUT.gguf

MODEL is a Hugging Face directory (converted with llama.cpp's own
convert_hf_to_gguf.py) or an F32/F16/BF16 GGUF; a quantized GGUF needs
--allow-requantize. Quantization is llama.cpp's (llama_model_quantize), so
without --protect-sw the file is the one llama-quantize writes. With
--protect-sw, each weight tensor also carries the input columns whose
quantization error costs the most, (column error)² x (mean activation²), and
the super-weight scalars, as fp16 residuals computed from the bytes written
(docs/convert.md, docs/sidecar.md). Such a file needs the swgguf runtime:
stock llama.cpp refuses it ("wrong number of tensors").
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import gguf
import numpy as np

from . import __version__, salience, sidecar
from .errors import SwggufError
from .imatrix import Imatrix, compute_imatrix, load_imatrix
from .quantize import canonical_ftype, check_gguf, parse_tensor_type, publish, quantize
from .reference import FLOAT_TYPES, convert_hf, make_f16_reference, quantized_tensors
from .synthetic import dequantize_tensor

log = logging.getLogger(__name__)

# Chosen by measurement on SmolLM2-135M (bench/convert_sweep.py, docs/convert.md): without
# --protect-cols/--sidecar-budget, the bytes of 2 columns per protected tensor, allocated over
# all tensors by salience per byte (at equal bytes it beat 2 columns in every tensor).
DEFAULT_BUDGET = "2cols"
# --calib / built-in calibration: llama-imatrix context and chunk cap
CALIB_CTX = 512
CALIB_CHUNKS = 64
BUILTIN_CALIB_CTX = 128  # the built-in text is short; llama-imatrix needs 2 x ctx tokens
BUILTIN_CALIBRATION = "calibration.txt"

# flags for the common ftypes (`--q4_k`); --type NAME takes any llama.cpp ftype
FTYPE_FLAGS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k", "q4_k_s", "q4_k_m",
               "q5_k_s", "q5_k_m", "q6_k", "q8_0")
# nominal bits per weight, for the free-space check only (a generous upper bound)
_NOMINAL_BPW = {"Q2_K": 3.5, "Q3_K": 4.5, "Q4_K": 5.5, "Q5_K": 6.5, "Q6_K": 7.0, "Q8_0": 8.5}

PROV = sidecar.KEY_PROVENANCE_PREFIX
KEY_FTYPE = PROV + "ftype"
KEY_POLICY = PROV + "policy"
KEY_COLS_PER_TENSOR = PROV + "cols_per_tensor"
KEY_SCALARS = PROV + "super_weights"
KEY_MANIFEST_SHA = PROV + "manifest_sha256"
KEY_CALIB_SHA = PROV + "calibration_sha256"
KEY_CALIB_SOURCE = PROV + "calibration_source"
KEY_IMATRIX_QUANT = PROV + "imatrix_in_quantization"
KEY_CLIP = PROV + "clip"
KEY_SCALAR_SOURCE = PROV + "super_weight_source"

# stage, done, total, item
Progress = Callable[[str, int, int, str], None]


def _no_progress(stage: str, done: int, total: int, item: str) -> None:
    pass


@dataclass
class ConvertOptions:
    ftype: str = "Q4_K_M"
    pure: bool = False
    allow_requantize: bool = False
    imatrix: Path | None = None  # llama.cpp imatrix file, used for quantization (and salience)
    calib: Path | None = None  # text: compute an imatrix with the runtime and use it
    calib_chunks: int = CALIB_CHUNKS
    tensor_types: Sequence[tuple[str, str]] = ()
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    hf_outtype: str = "f16"
    nthread: int = 0
    # --protect-sw
    protect_sw: bool = False
    protect_cols: int | None = None  # top K columns in every tensor; under a budget, the cap per tensor
    sidecar_budget: str | None = None  # "0.5%" of the plain file, bytes ("2M"), or "2cols" (per tensor, on average)
    max_tensors: int | None = None  # under a budget: protect at most this many tensors (runtime speed)
    manifest: Path | None = None
    clip: bool = False
    salience_text: Path | None = None  # activation statistics only (default: built-in text)
    salience_imatrix: Path | None = None  # activation statistics only, from an imatrix file
    policy: salience.ColumnPolicy | None = None  # library use: overrides protect_cols
    lora_compat: bool = False  # correction as a LoRA adapter next to a plain file, not as a sidecar

    def validate(self) -> None:
        self.ftype = canonical_ftype(self.ftype)
        self.tensor_types = [parse_tensor_type(f"{p}={t}") for p, t in self.tensor_types]
        if self.imatrix is not None and self.calib is not None:
            raise SwggufError("--imatrix and --calib are exclusive (--calib computes an imatrix)")
        for what, path in (("imatrix", self.imatrix), ("calibration text", self.calib),
                           ("manifest", self.manifest), ("salience text", self.salience_text),
                           ("salience imatrix", self.salience_imatrix)):
            if path is not None and not Path(path).is_file():
                raise SwggufError(f"no such {what} file", path)
        if self.protect_cols is not None and not 0 <= self.protect_cols <= sidecar.MAX_COLS:
            raise SwggufError(f"--protect-cols {self.protect_cols} is out of range [0, {sidecar.MAX_COLS}]")
        if self.sidecar_budget is not None:
            parse_budget(self.sidecar_budget, 1, 1)
        if self.max_tensors is not None and self.max_tensors < 1:
            raise SwggufError(f"--max-tensors must be at least 1, got {self.max_tensors}")
        if self.max_tensors is not None and self.protect_cols is not None and self.sidecar_budget is None:
            raise SwggufError("--max-tensors applies to a sidecar budget, not to --protect-cols alone: "
                              "add --sidecar-budget")
        if self.salience_text is not None and self.salience_imatrix is not None:
            raise SwggufError("--salience-text and --salience-imatrix are exclusive")
        if not self.protect_sw and (self.manifest or self.clip or self.sidecar_budget or self.protect_cols is not None
                                    or self.salience_text or self.salience_imatrix or self.lora_compat
                                    or self.max_tensors is not None):
            raise SwggufError("--manifest, --clip, --protect-cols, --sidecar-budget, --max-tensors, --salience-* and "
                              "--lora-compat need --protect-sw")
        if self.lora_compat and self.clip:
            # the clipped quantization is only right with its correction, which a LoRA-less
            # stock run would drop: the plain file must stay llama-quantize's
            raise SwggufError("--lora-compat and --clip are exclusive")


@dataclass
class ConvertReport:
    output: Path
    ftype: str
    file_bytes: int
    weight_bytes: int  # bytes of the model's tensors, sidecars excluded
    n_params: int  # elements of the model's tensors
    sidecar_bytes: int
    tensor_types: dict[str, tuple[int, int]]  # type -> (tensors, bytes)
    protected: dict[str, tuple[int, int]]  # base -> (columns, scalars)
    scalars: list[tuple[str, int, int]]
    scalar_source: str
    warnings: list[str] = field(default_factory=list)
    imatrix_used: bool = False
    lora_adapter: Path | None = None

    @property
    def bpw(self) -> float:
        return 8 * self.weight_bytes / self.n_params

    @property
    def bpw_with_sidecar(self) -> float:
        return 8 * (self.weight_bytes + self.sidecar_bytes) / self.n_params


# --- inputs ----------------------------------------------------------------------


def parse_budget(text: str, plain_bytes: int, column_bytes: int) -> int:
    """Budget text -> bytes: '0.5%' of ``plain_bytes``; a size ('2M', '512k', '1500000');
    or '2cols', as many bytes as 2 columns in every tensor (``column_bytes`` = one column
    in each), spent where salience is highest."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%|cols?|[kKmMgG]i?[bB]?|[bB])?\s*", text)
    if not m:
        raise SwggufError(f"sidecar budget {text!r} is not a percentage ('0.5%'), a size ('2M') "
                          "or columns per tensor ('2cols')")
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
    if unit.startswith("col"):
        return int(value * column_bytes)
    if unit == "%":
        if value > 100:
            raise SwggufError(f"sidecar budget {text!r} is over 100%")
        return int(plain_bytes * value / 100)
    scale = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit[:1]]
    return int(value * scale)


def prepare_input(src: Path, work: Path, opts: ConvertOptions, warnings: list[str]) -> Path:
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


def builtin_calibration() -> Path:
    return Path(str(resources.files("swgguf") / "data" / BUILTIN_CALIBRATION))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_free_space(float_path: Path, dst: Path, ftype: str) -> None:
    bpw = next((b for k, b in _NOMINAL_BPW.items() if ftype.startswith(k)), 16.5)
    need = int(2.2 * float_path.stat().st_size * bpw / 16)  # the plain file and the output
    free = shutil.disk_usage(dst.parent).free
    if free < need:
        raise SwggufError(f"not enough free space: about {need / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free",
                          dst.parent)


# --- super-weight scalars ---------------------------------------------------------


def scalars_from_manifest(path: Path, tensors: "TensorSet") -> list[tuple[str, int, int, float]]:
    """(base, row, col, value) of the manifest's (verified) super weights, checked against
    the model: the tensor must be protected here, the position inside it, the value its own."""
    from .manifest import load_manifest

    manifest = load_manifest(path)
    out = []
    for sw in manifest.super_weights:
        name = sw.tensor if sw.tensor in tensors.shapes else sw.tensor + sidecar.WEIGHT_SUFFIX
        if name not in tensors.shapes:
            raise SwggufError(f"super weight in tensor {sw.tensor!r}, which this model has not as a quantized "
                              "weight with activation statistics", path)
        n_out, n_in = tensors.shapes[name]
        if not (0 <= sw.row < n_out and 0 <= sw.col < n_in):
            raise SwggufError(f"super weight ({sw.row}, {sw.col}) is outside {sw.tensor} of shape ({n_out}, {n_in})",
                              path)
        have = float(tensors.true_value(name, sw.row, sw.col))
        if abs(have - sw.value) > 1e-2 * abs(sw.value) + 1e-3:
            raise SwggufError(f"super weight {sw.tensor}[{sw.row}, {sw.col}] is {sw.value:g} in the manifest but "
                              f"{have:g} in this model: was the manifest made for another model?", path)
        out.append((_base_name(name), int(sw.row), int(sw.col), have))
    return out


def _base_name(tensor: str) -> str:
    return tensor[: -len(sidecar.WEIGHT_SUFFIX)] if tensor.endswith(sidecar.WEIGHT_SUFFIX) else tensor


# Without a manifest, super weights are found from the activation statistics. A
# massive activation is >= MASSIVE_ACT_RATIO x the median channel's mean x²
# (SmolLM2-135M: 1.4e3-9.3e5 in the layers with super weights, <= 4e2 elsewhere
# but for one); the super weight is the largest weight of that input column
# and must be an outlier of its matrix, >= SUPER_WEIGHT_Z x its RMS (SmolLM2's
# published super weights: 28-30 x; swgguf detect uses 10 x for candidates
# that it then verifies, which this rule cannot).
MASSIVE_ACT_RATIO = 1e3
SUPER_WEIGHT_Z = 20.0


def super_weight_of(t: salience.TensorQuant) -> tuple[str, int, int, float] | None:
    """The super-weight scalar of one tensor from the activation statistics alone (no
    manifest): in an ffn_down, the largest weight of the input column with a massive mean
    x², if it is an outlier weight. A heuristic: `swgguf detect` + --manifest is the
    measured way."""
    if not t.name.endswith("ffn_down.weight") or t.act_sq is None:
        return None
    c = int(np.argmax(t.act_sq))
    if t.act_sq[c] < MASSIVE_ACT_RATIO * max(float(np.median(t.act_sq)), 1e-30):
        return None
    col = np.abs(t.w_true[:, c])
    r = int(np.argmax(col))
    rms = float(np.sqrt(np.mean(np.square(t.w_true, dtype=np.float64))))
    return (_base_name(t.name), r, c, float(t.w_true[r, c])) if col[r] >= SUPER_WEIGHT_Z * rms else None


# --- clipping (the paper's variant) -----------------------------------------------


def _block_size(qtype: gguf.GGMLQuantizationType) -> int:
    return gguf.GGML_QUANT_SIZES[qtype][0]


def clip_outliers(float_path: Path, plain_path: Path, scalars: list[tuple[str, int, int, float]],
                  dst: Path) -> Path:
    """Copy of the float model with each super weight replaced by the median of its
    quantization block (the block size of the type llama.cpp chose for its tensor)."""
    plain_types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(plain_path)).tensors}
    reader = gguf.GGUFReader(str(float_path))
    by_tensor: dict[str, list[tuple[int, int]]] = {}
    for base, r, c, _ in scalars:
        by_tensor.setdefault(base + sidecar.WEIGHT_SUFFIX, []).append((r, c))
    replaced = []
    for t in reader.tensors:
        if t.name not in by_tensor:
            continue
        w = dequantize_tensor(t).copy()  # a float input's tensor is a read-only map
        bs = _block_size(plain_types[t.name])
        for r, c in by_tensor[t.name]:
            lo = (c // bs) * bs
            block = np.delete(w[r, lo: lo + bs], c - lo)
            w[r, c] = np.median(block)
        replaced.append((t.name, _encode_like(w, t.tensor_type)))
    return _copy_replacing(reader, dst, dict(replaced))


def _encode_like(w: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype == gguf.GGMLQuantizationType.F32:
        return w.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return w.astype(np.float16)
    return gguf.quants.quantize(w, qtype)  # BF16: raw bytes


def _copy_replacing(reader: gguf.GGUFReader, dst: Path, replace: dict[str, np.ndarray]) -> Path:
    writer = gguf.GGUFWriter(str(dst), arch=reader.get_field("general.architecture").contents(),
                             endianess=reader.endianess)
    for fld in reader.fields.values():
        if fld.name.startswith("GGUF.") or fld.name == "general.architecture":
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, fld.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        data = replace.get(t.name, t.data)
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        replace[t.name] = data
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(replace[t.name])
    writer.close()
    return dst


# --- the sidecars -------------------------------------------------------------------


def eligible(name: str, qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...]) -> bool:
    """Weights the runtime corrects (2-D, through build_lora_mm) that were quantized.

    token_embd is read with get_rows; its sidecar would only touch a tied output."""
    return (name.endswith(sidecar.WEIGHT_SUFFIX) and len(shape) == 2 and qtype not in FLOAT_TYPES
            and not name.startswith("token_embd."))


class TensorSet:
    """The eligible tensors of a (float, quantized) pair with activation statistics, read
    one at a time: holding them all as float32 twice would take 8 bytes per parameter."""

    def __init__(self, float_path: Path, quant_path: Path, act: Imatrix | None) -> None:
        self.true = {t.name: t for t in gguf.GGUFReader(str(float_path)).tensors}
        self.act = act
        self.quant = {}
        self.shapes: dict[str, tuple[int, int]] = {}
        for t in gguf.GGUFReader(str(quant_path)).tensors:
            shape = tuple(int(d) for d in reversed(t.shape))
            # a tensor without statistics never saw the calibration text (e.g. output)
            if eligible(t.name, t.tensor_type, shape) and (act is None or t.name in act.values):
                self.quant[t.name] = t
                self.shapes[t.name] = shape  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.quant)

    def get(self, name: str) -> salience.TensorQuant:
        w_deq = dequantize_tensor(self.quant[name])
        act_sq = self.act.mean_sq(name, w_deq.shape[1]) if self.act is not None else None
        return salience.TensorQuant(name, dequantize_tensor(self.true[name]), w_deq, act_sq)

    def true_value(self, name: str, row: int, col: int) -> float:
        return float(dequantize_tensor(self.true[name])[row, col])

    def column_bytes(self) -> int:
        """Bytes of one column in every tensor."""
        return sum(n_out * salience.RESID_BYTES + salience.INDEX_BYTES for n_out, _ in self.shapes.values())


@dataclass
class Survey:
    """What the first pass over the tensors keeps: small per-column vectors only."""

    scores: dict[str, np.ndarray]  # salience per column (with a budget)
    chosen: dict[str, np.ndarray]  # columns picked by a per-tensor policy
    scalars: list[tuple[str, int, int, float]]  # super weights found from the activations


def survey(tensors: TensorSet, policy: salience.ColumnPolicy | None, want_scores: bool,
           progress: Progress) -> Survey:
    out = Survey({}, {}, [])
    for i, name in enumerate(tensors.quant):
        progress("scoring columns", i + 1, len(tensors), name)
        t = tensors.get(name)
        if want_scores:
            out.scores[name] = salience.salience(t)
        if policy is not None:
            out.chosen[name] = np.asarray(policy(t), np.int32)
        sw = super_weight_of(t)
        if sw is not None:
            out.scalars.append(sw)
    return out


def build_sidecars(tensors: TensorSet, chosen: dict[str, np.ndarray],
                   scalars: list[tuple[str, int, int, float]], progress: Progress) -> dict[str, sidecar.Sidecar]:
    """Second pass: the sidecars of the tensors with chosen columns or scalars, residuals from
    the quantized bytes."""
    by_tensor: dict[str, list[tuple[int, int]]] = {}
    for base, r, c, _ in scalars:
        by_tensor.setdefault(base + sidecar.WEIGHT_SUFFIX, []).append((r, c))
    out = {}
    names = [n for n in tensors.quant if chosen.get(n, np.zeros(0)).size or n in by_tensor]
    for i, n in enumerate(names):
        progress("building sidecars", i + 1, len(names), n)
        t = tensors.get(n)
        picked = chosen.get(n, np.zeros(0, np.int32))
        err = salience.column_error(t) if picked.size else None
        cols = [int(c) for c in picked if err[c] > 0]  # an exact column needs no residual
        if not cols and n not in by_tensor:
            continue
        base = _base_name(n)
        out[base] = sidecar.build_sidecar(base, t.w_true, t.w_deq, cols, by_tensor.get(n, []))
    return out


def _policy(opts: ConvertOptions) -> salience.ColumnPolicy | None:
    if opts.policy is not None:
        return opts.policy
    return None if opts.protect_cols is None else salience.top_k(opts.protect_cols)


def _budget_text(opts: ConvertOptions) -> str | None:
    """The byte budget in force: the user's, or the default when no column policy was given."""
    if opts.sidecar_budget is not None:
        return opts.sidecar_budget
    return DEFAULT_BUDGET if _policy(opts) is None else None


# --- the conversion -------------------------------------------------------------------


def convert(src: str | Path, dst: str | Path, opts: ConvertOptions,
            progress: Progress = _no_progress) -> ConvertReport:
    """Convert ``src`` to ``dst`` (written atomically) as described in the module docstring."""
    src, dst = Path(src), Path(dst)
    opts.validate()
    if not src.exists():
        raise SwggufError("no such file or directory", src)
    if src.is_file():
        check_gguf(src)
    if dst.exists() and src.is_file() and dst.resolve() == src.resolve():
        raise SwggufError("output would overwrite the input", dst)
    if dst.is_dir():
        raise SwggufError("the output is a directory", dst)
    if not dst.parent.is_dir():
        raise SwggufError("the output directory does not exist", dst.parent)
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".swgguf-convert-", dir=dst.parent) as tmp:
        work = Path(tmp)
        try:
            return _convert(src, dst, opts, work, warnings, progress)
        except OSError as err:
            raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None


def _convert(src: Path, dst: Path, opts: ConvertOptions, work: Path, warnings: list[str],
             progress: Progress) -> ConvertReport:
    progress("preparing input", 0, 1, src.name)
    float_path = prepare_input(src, work, opts, warnings)
    _check_free_space(float_path, dst, opts.ftype)
    progress("preparing input", 1, 1, src.name)

    # importance matrix for quantization (llama-quantize semantics) and statistics for salience
    quant_imatrix: Imatrix | None = None
    imatrix_name = None
    calib_source = calib_sha = None
    if opts.imatrix is not None:
        quant_imatrix, imatrix_name = load_imatrix(opts.imatrix), str(opts.imatrix)
        calib_source, calib_sha = f"imatrix:{Path(opts.imatrix).name}", _sha256(Path(opts.imatrix))
    elif opts.calib is not None:
        progress("computing imatrix", 0, 1, opts.calib.name)
        quant_imatrix = compute_imatrix(float_path, opts.calib, work / "imatrix.gguf", n_ctx=CALIB_CTX,
                                        chunks=opts.calib_chunks, threads=opts.nthread or None)
        imatrix_name = str(opts.calib)
        calib_source, calib_sha = f"text:{Path(opts.calib).name}", _sha256(Path(opts.calib))
        progress("computing imatrix", 1, 1, opts.calib.name)

    quant_kwargs = dict(pure=opts.pure, nthread=opts.nthread, imatrix=quant_imatrix, imatrix_file=imatrix_name,
                        tensor_types=opts.tensor_types, output_tensor_type=opts.output_tensor_type,
                        token_embedding_type=opts.token_embedding_type,
                        leave_output_tensor=opts.leave_output_tensor)
    plain = work / "plain.gguf"
    quantize(float_path, plain, opts.ftype, progress=lambda i, n, name: progress("quantizing", i, n, name),
             **quant_kwargs)

    if not opts.protect_sw:
        publish(plain, dst)
        return summarize(dst, opts.ftype, {}, [], "none", warnings, quant_imatrix is not None)

    act = quant_imatrix
    if opts.salience_imatrix is not None:
        act = load_imatrix(opts.salience_imatrix)
        calib_source, calib_sha = f"imatrix:{opts.salience_imatrix.name}", _sha256(opts.salience_imatrix)
    elif act is None or opts.salience_text is not None:
        text = opts.salience_text or builtin_calibration()
        progress("computing activation statistics", 0, 1, text.name)
        ctx = BUILTIN_CALIB_CTX if opts.salience_text is None else CALIB_CTX
        act = compute_imatrix(float_path, text, work / "salience-imatrix.gguf", n_ctx=ctx,
                              chunks=opts.calib_chunks, threads=opts.nthread or None)
        calib_source, calib_sha = f"text:{text.name}", _sha256(text)
        progress("computing activation statistics", 1, 1, text.name)

    policy, budget_text = _policy(opts), _budget_text(opts)
    tensors = TensorSet(float_path, plain, act)
    found = survey(tensors, policy, budget_text is not None, progress)
    if opts.manifest is not None:
        scalars = scalars_from_manifest(opts.manifest, tensors)
        scalar_source = f"manifest:{opts.manifest.name}"
    else:
        scalars, scalar_source = found.scalars, "activations"
    if not scalars:
        warnings.append("no super weight found: only salient columns are protected")

    if opts.clip and scalars:
        clipped = clip_outliers(float_path, plain, scalars, work / "clipped.gguf")
        quantize(clipped, plain, opts.ftype, progress=lambda i, n, name: progress("quantizing (clipped)", i, n, name),
                 **quant_kwargs)
        tensors = TensorSet(float_path, plain, act)  # true weights, clipped quantization
        found = survey(tensors, policy, budget_text is not None, progress)

    budget = None
    chosen = found.chosen
    if budget_text is not None:
        budget = parse_budget(budget_text, plain.stat().st_size, tensors.column_bytes())
        chosen = salience.allocate_budget(found.scores, {n: s[0] for n, s in tensors.shapes.items()}, budget,
                                          max_per_tensor=opts.protect_cols if opts.protect_cols is not None
                                          else sidecar.MAX_COLS, max_tensors=opts.max_tensors)
    sidecars = build_sidecars(tensors, chosen, scalars, progress)
    if not sidecars:
        warnings.append("nothing to protect: the output is the plain quantization")
        publish(plain, dst)
        return summarize(dst, opts.ftype, {}, [], scalar_source, warnings, quant_imatrix is not None)

    kv = {
        sidecar.KEY_SWGGUF_VERSION: __version__,
        KEY_FTYPE: opts.ftype,
        KEY_POLICY: (f"budget:{budget_text}" + (f",max_tensors:{opts.max_tensors}" if opts.max_tensors else "")
                     if budget is not None else getattr(policy, "__name__", "custom")),
        KEY_COLS_PER_TENSOR: ([sc.n_cols for sc in sidecars.values()], gguf.GGUFValueType.UINT32),
        KEY_SCALARS: [f"{b}[{r},{c}]" for b, r, c, _ in scalars] or [""],
        KEY_SCALAR_SOURCE: scalar_source,
        KEY_MANIFEST_SHA: _sha256(opts.manifest) if opts.manifest else "",
        KEY_CALIB_SHA: calib_sha or "",
        KEY_CALIB_SOURCE: calib_source or "",
        KEY_IMATRIX_QUANT: quant_imatrix is not None,
        KEY_CLIP: bool(opts.clip),
    }
    progress("writing", 0, 1, dst.name)
    adapter = None
    if opts.lora_compat:
        adapter = write_lora_adapter(plain, lora_path(dst), sidecars, kv)
        publish(plain, dst)
    else:
        sidecar.write_with_sidecars(plain, dst, sidecars, kv)
        publish_mode(dst)
    progress("writing", 1, 1, dst.name)
    report = summarize(dst, opts.ftype, {b: (sc.n_cols, sc.n_scalars) for b, sc in sidecars.items()},
                       [(b, r, c) for b, r, c, _ in scalars], scalar_source, warnings, quant_imatrix is not None)
    if adapter is not None:
        report.lora_adapter = adapter
        report.sidecar_bytes = adapter.stat().st_size
    return report


# --- the correction as a LoRA adapter (--lora-compat) ------------------------------------

LORA_SUFFIX = ".lora.gguf"


def lora_path(dst: Path) -> Path:
    """``out.gguf`` -> ``out.lora.gguf``."""
    return dst.with_name(dst.name.removesuffix(".gguf") + LORA_SUFFIX)


def write_lora_adapter(model: Path, dst: Path, sidecars: dict[str, sidecar.Sidecar],
                       extra_kv: dict[str, object]) -> Path:
    """A llama.cpp LoRA adapter adding the same correction as ``sidecars``: for each
    weight, ``lora_a`` (K, n_in) selects the protected input columns (one-hot) and
    ``lora_b`` (n_out, K) holds their residuals, so ``B (A x) = R x[cols]``. With
    alpha = 0 llama.cpp applies it at the ``--lora`` scale (1 by default). Both are F32,
    so the gathered activations (super activations among them) are never rounded to
    F16, as in the swgguf runtime; the residuals are the sidecar's F16 values."""
    reader = gguf.GGUFReader(str(model))
    arch = reader.get_field("general.architecture").contents()
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch=arch)
        writer.add_type("adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", 0.0)
        for key, value in extra_kv.items():
            sidecar._add_kv(writer, key, value)
        for base, sc in sidecars.items():
            n_out, n_in = sc.shape
            a = np.zeros((sc.n_cols, n_in), np.float32)
            a[np.arange(sc.n_cols), sc.cols] = 1.0
            writer.add_tensor(f"{base}{sidecar.WEIGHT_SUFFIX}.lora_a", a)
            writer.add_tensor(f"{base}{sidecar.WEIGHT_SUFFIX}.lora_b", sc.resid.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        publish(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def publish_mode(path: Path) -> None:
    """Give a file written through mkstemp (0600) the mode a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def summarize(path: Path, ftype: str, protected: dict[str, tuple[int, int]], scalars: list[tuple[str, int, int]],
              scalar_source: str, warnings: list[str], imatrix_used: bool) -> ConvertReport:
    reader = gguf.GGUFReader(str(path))
    types: dict[str, list[int]] = {}
    weight_bytes = n_params = side_bytes = 0
    for t in reader.tensors:
        if sidecar.sidecar_base(t.name) is not None:
            side_bytes += int(t.n_bytes)
            continue
        weight_bytes += int(t.n_bytes)
        n_params += int(t.n_elements)
        entry = types.setdefault(t.tensor_type.name, [0, 0])
        entry[0] += 1
        entry[1] += int(t.n_bytes)
    return ConvertReport(path, ftype, path.stat().st_size, weight_bytes, n_params, side_bytes,
                         {k: (v[0], v[1]) for k, v in sorted(types.items())}, protected, scalars, scalar_source,
                         warnings, imatrix_used)


# --- command line ---------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="HF model directory or F32/F16/BF16 GGUF")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output GGUF")
    q = parser.add_argument_group("quantization (llama.cpp's own)")
    kinds = q.add_mutually_exclusive_group()
    for name in FTYPE_FLAGS:
        kinds.add_argument(f"--{name}", dest="ftype", action="store_const", const=name.upper(),
                           help="= Q4_K_M" if name == "q4_k" else None)
    kinds.add_argument("--type", dest="ftype", metavar="NAME", help="any llama.cpp ftype (Q4_0, IQ4_XS, ...)")
    q.add_argument("--pure", action="store_true", help="no k-quant mixture: every tensor gets the type")
    q.add_argument("--imatrix", type=Path, help="llama.cpp importance matrix (GGUF or .dat)")
    q.add_argument("--calib", type=Path, metavar="TEXT", help="compute an importance matrix from this text and use it")
    q.add_argument("--calib-chunks", type=int, default=CALIB_CHUNKS, help="at most this many chunks of 512 tokens")
    q.add_argument("--tensor-type", action="append", default=[], metavar="PATTERN=TYPE",
                   help="per-tensor type override, as llama-quantize (repeatable)")
    q.add_argument("--output-tensor-type", metavar="TYPE")
    q.add_argument("--token-embedding-type", metavar="TYPE")
    q.add_argument("--leave-output-tensor", action="store_true")
    q.add_argument("--allow-requantize", action="store_true",
                   help="accept a quantized input (dequantized first; it is then the reference)")
    q.add_argument("--outtype", default="f16", choices=("f16", "bf16", "f32"), help="HF conversion type")
    q.add_argument("--threads", type=int, default=0)
    p = parser.add_argument_group("outlier sidecar")
    p.add_argument("--protect-sw", action="store_true", help="add the outlier sidecar (needs the swgguf runtime)")
    p.add_argument("--protect-cols", type=int, default=None, metavar="K",
                   help="the K most salient input columns of every tensor (0 = scalars only); "
                        "with --sidecar-budget, at most K per tensor")
    p.add_argument("--sidecar-budget", metavar="SIZE",
                   help="total size of the columns, spent where salience per byte is highest: '0.5%%' of the "
                        f"file, '2M', or '2cols' = 2 columns per tensor on average (default: {DEFAULT_BUDGET} "
                        "unless --protect-cols is given)")
    p.add_argument("--max-tensors", type=int, metavar="N",
                   help="spend the budget on at most N tensors (each protected tensor adds 3 small graph nodes: "
                        "fewer tensors, less runtime overhead; default: no limit)")
    p.add_argument("--manifest", type=Path, help="super weights from `swgguf detect` (default: found from activations)")
    p.add_argument("--clip", action="store_true",
                   help="the paper's variant: quantize with each super weight replaced by its block median")
    p.add_argument("--salience-text", type=Path, metavar="TEXT",
                   help="text for the activation statistics when there is no --imatrix/--calib "
                        "(default: a built-in text)")
    p.add_argument("--lora-compat", action="store_true",
                   help="write the correction as a LoRA adapter OUT.lora.gguf next to a plain OUT, "
                        "for stock llama.cpp (--lora); no sidecar")
    p.add_argument("--salience-imatrix", type=Path, metavar="FILE",
                   help="activation statistics from this imatrix, not used for quantization")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs every file it writes
    opts = ConvertOptions(
        ftype=args.ftype or "Q4_K_M", pure=args.pure, allow_requantize=args.allow_requantize,
        imatrix=args.imatrix, calib=args.calib, calib_chunks=args.calib_chunks,
        tensor_types=[parse_tensor_type(s) for s in args.tensor_type],
        output_tensor_type=args.output_tensor_type, token_embedding_type=args.token_embedding_type,
        leave_output_tensor=args.leave_output_tensor, hf_outtype=args.outtype, nthread=args.threads,
        protect_sw=args.protect_sw, protect_cols=args.protect_cols, sidecar_budget=args.sidecar_budget,
        manifest=args.manifest, clip=args.clip, salience_text=args.salience_text,
        salience_imatrix=args.salience_imatrix, lora_compat=args.lora_compat, max_tensors=args.max_tensors)
    if args.ftype is None:
        console.print("[dim]no type given: Q4_K_M[/]")
    with _RichProgress(console) as bar:
        report = convert(args.model, args.output, opts, bar.update)
    print_report(console, report)
    return 0


class _RichProgress:
    """One rich progress bar per stage; the quantizer reports tensor by tensor."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("[dim]{task.fields[item]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "_RichProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, stage: str, done: int, total: int, item: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, item="")
        self.progress.update(self.tasks[stage], completed=done, total=total, item=item[-40:])


def print_report(console, report: ConvertReport) -> None:
    from rich.table import Table

    table = Table(title=f"{report.output.name}: {report.ftype}", show_footer=True)
    table.add_column("tensor type", footer="total")
    table.add_column("tensors", justify="right", footer=str(sum(n for n, _ in report.tensor_types.values())))
    table.add_column("MiB", justify="right", footer=f"{report.weight_bytes / 2**20:.2f}")
    for name, (n, b) in report.tensor_types.items():
        table.add_row(name, str(n), f"{b / 2**20:.2f}")
    console.print(table)
    pct = 100 * report.sidecar_bytes / report.file_bytes
    console.print(f"file {report.file_bytes / 2**20:.2f} MiB, {report.bpw:.3f} bits per weight"
                  + (f" ({report.bpw_with_sidecar:.3f} with the sidecar)" if report.sidecar_bytes else ""))
    if report.protected:
        cols = sum(c for c, _ in report.protected.values())
        where = f"LoRA adapter {report.lora_adapter.name}" if report.lora_adapter else "sidecar"
        console.print(f"{where}: {len(report.protected)} tensors, {cols} columns, "
                      f"{len(report.scalars)} super-weight scalars ({report.scalar_source}), "
                      f"{report.sidecar_bytes / 2**10:.1f} KiB = {pct:.3f}% of the file")
        for base, r, c in report.scalars:
            console.print(f"  super weight {base}[{r}, {c}]")
        if report.lora_adapter:
            console.print(f"use: llama-cli -m {report.output.name} --lora {report.lora_adapter.name}")
        else:
            console.print("[yellow]needs the swgguf runtime: stock llama.cpp refuses this file "
                          "(\"wrong number of tensors\")[/]")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")

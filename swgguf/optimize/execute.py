"""``swgguf convert --target-size``: measure, plan, and make the file through the
ordinary conversion pieces (llama.cpp's quantizer with the plan's ``--tensor-type``
overrides, the protection engine with the plan's columns), then check its size.

The plan is recorded in the file as ``swgguf.provenance.plan`` (JSON) with
``swgguf.provenance.target_bytes``; a types-only file (``--no-sidecar``, or a plan
without columns) is a stock llama.cpp file with those two keys added.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import SwggufError
from ..formats.files import publish, work_dir
from ..formats.gguf_io import check_gguf, check_tokenizer, copy_gguf, shares_readers
from ..formats.sidecar import KEY_PROVENANCE_PREFIX, write_with_sidecars
from ..conversion import ConvertOptions, ConvertReport, summarize
from ..conversion.calibration import QuantImatrix, builtin_calibration, quantization_imatrix, salience_statistics
from ..conversion.inputs import check_paths, prepare_input
from ..conversion.pipeline import quantize_plain
from ..progress import Progress, no_progress
from ..protect import ProtectOptions, Statistics, protect
from ..protect.provenance import provenance
from ..protect.salience import TensorQuant, salience
from ..evaluate import Window
from ..evaluate.text import load_text, text_windows
from .measure import LADDER, measure_tables, override_patterns
from .planner import Plan, plan, trajectory
from .sensitivity import GroupFactor, measure_factors, weigh
from .tables import Tables

KEY_PLAN = KEY_PROVENANCE_PREFIX + "plan"
KEY_TARGET = KEY_PROVENANCE_PREFIX + "target_bytes"
RESERVE = 8192  # bytes kept free for the provenance keys and scalar-only sidecars
SENSITIVITY = ("kld", "none")
SENSITIVITY_CTX = 512
SENSITIVITY_WINDOWS = 2  # of the calibration text: 1,022 scored tokens per group
MAX_TRIES = 3  # replans when the written file overshoots the prediction


@dataclass
class SizedResult:
    report: ConvertReport
    plan: Plan
    tables: Tables


@shares_readers
def convert_to_size(src: str | Path, dst: str | Path, target: int, opts: ConvertOptions, *, sidecar: bool = True,
                    ladder: tuple[str, ...] = LADDER, tables: Tables | None = None, column_weight: float = 1.0,
                    sensitivity: str = "kld", factors: dict[str, GroupFactor] | None = None,
                    fixed_types: dict[str, str] | None = None, progress: Progress = no_progress) -> SizedResult:
    """``src`` converted to ``dst`` (atomic) as the plan for ``target`` file bytes says;
    ``tables`` measured beforehand (same model, base mixture and imatrix) skip the
    measurement; ``column_weight``: see :func:`.planner.trajectory`. ``sensitivity``
    "kld": the tables weighed by each tensor group's measured KLD per unit of proxy
    (:mod:`.sensitivity`; ``factors`` measured beforehand skip it), "none": the plain
    proxy. ``fixed_types`` (tensor -> type) set tensors outside the tables explicitly
    (experiments: bench/pareto_sized.py keeps some at the stock file's type). They must
    be set, not left to the mixture: llama.cpp counts attn_v/ffn_down layers only over
    tensors without an override, so the mixture's choice for one depends on which others
    are overridden."""
    if sensitivity not in SENSITIVITY:
        raise SwggufError(f"sensitivity {sensitivity!r} is not one of {', '.join(SENSITIVITY)}")
    if sensitivity == "kld" and factors is None:
        check_gguf(src)  # its own errors first (missing, not a GGUF)
        try:
            check_tokenizer(src)
        except SwggufError as err:
            raise SwggufError(f"{err.args[0]}; --sensitivity kld measures KLD on a text (--sensitivity none: "
                              "the plain error proxy)", src) from None

    def run(job: "_SizedJob") -> SizedResult:
        t = tables
        q = dict(quant_imatrix=job.quant.imatrix if job.quant else None,
                 imatrix_file=job.quant.recorded_as if job.quant else None, nthread=opts.quant.nthread)
        if t is None:
            t = measure_tables(job.float_path, job.stats.imatrix, job.work, base_ftype=opts.quant.ftype, ladder=ladder,
                               progress=progress, **q)
        if sensitivity == "kld":
            f = factors or measure_factors(job.float_path, t, calibration_windows(job.float_path, opts), job.work,
                                           ctx=SENSITIVITY_CTX, progress=progress, **q)
            t = weigh(t, f)
        return job.fit(Path(dst), target, t, sidecar, column_weight, sensitivity)
    return _in_work(src, dst, opts, progress, run, fixed_types)


def calibration_windows(float_path: Path, opts: ConvertOptions) -> list[Window]:
    """The windows the sensitivity is measured on: the --calib text, else the built-in one."""
    text = load_text(opts.quant.calib or builtin_calibration())
    return text_windows(float_path, text, SENSITIVITY_CTX, SENSITIVITY_WINDOWS, False)


def write_plan(src: str | Path, dst: str | Path, p: Plan, opts: ConvertOptions,
               progress: Progress = no_progress) -> ConvertReport:
    """``src`` converted to ``dst`` as plan ``p`` says, whatever its size (experiments:
    bench/proxy_validation.py)."""
    def run(job: "_SizedJob") -> ConvertReport:
        out, protection = job.make(p, p.budget)
        publish(out, dst)
        return summarize(Path(dst), opts.quant.ftype, protection, job.warnings, job.quant is not None)
    return _in_work(src, dst, opts, progress, run)


def _in_work(src: str | Path, dst: str | Path, opts: ConvertOptions, progress: Progress, run,
             fixed_types: dict[str, str] | None = None):
    """``run(job)`` with the float input, imatrix and statistics prepared in a work folder
    beside ``dst`` (removed at the end); ``fixed_types``: see :func:`convert_to_size`."""
    src, dst = Path(src), Path(dst)
    opts.validate()
    if opts.quant.tensor_types:
        raise SwggufError("--tensor-type and --target-size are exclusive: the optimizer sets the types")
    check_paths(src, dst, opts)
    with work_dir(dst.parent, "convert") as tmp:
        work, warnings = Path(tmp), []
        try:
            float_path = prepare_input(src, work, opts.quant, warnings)
            quant = quantization_imatrix(float_path, opts.quant, work, progress)
            stats = salience_statistics(float_path, quant, opts.protect or ProtectOptions(), opts.quant, work,
                                        progress)
            return run(_SizedJob(float_path, work, opts, quant, stats, warnings, progress, dict(fixed_types or {})))
        except OSError as err:
            raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None


@dataclass
class _SizedJob:
    float_path: Path
    work: Path
    opts: ConvertOptions
    quant: QuantImatrix | None
    stats: Statistics
    warnings: list[str]
    progress: Progress
    fixed_types: dict[str, str] = field(default_factory=dict)  # set beside the plan's types (convert_to_size)

    def fit(self, dst: Path, target: int, tables: Tables, sidecar: bool, column_weight: float = 1.0,
            sensitivity: str = "none") -> SizedResult:
        """Plan, make, check the size; replan with the overshoot taken off if needed."""
        steps = trajectory(tables, sidecar, column_weight)
        budget = target - RESERVE
        for _ in range(MAX_TRIES):
            p = plan(tables, budget, sidecar, steps)
            p.budget, p.column_weight, p.sensitivity = target, column_weight, sensitivity
            out, protection = self.make(p, target)
            size = out.stat().st_size
            if size <= target:
                publish(out, dst)
                report = summarize(dst, self.opts.quant.ftype, protection, self.warnings, self.quant is not None)
                return SizedResult(report, p, tables)
            budget -= size - target + RESERVE
        raise SwggufError(f"the planned file is {size} bytes, over the target of {target} bytes after "
                          f"{MAX_TRIES} plans", dst)

    def make(self, p: Plan, target: int) -> tuple[Path, object]:
        """The file of plan ``p`` under the work folder, and its protection (or None)."""
        q = replace(self.opts.quant, tensor_types=override_patterns({**self.fixed_types, **p.types}))
        plain = quantize_plain(self.float_path, self.work / "plain.gguf", q, self.quant, self.progress)
        out = self.work / "planned.gguf"
        kv: dict[str, object] = {KEY_PLAN: p.to_json(), KEY_TARGET: int(target)}
        if not p.cols:
            copy_gguf(plain, out, kv=kv)
            return out, None
        prot_opts = ProtectOptions(policy=columns_policy(p.cols),
                                   manifest=self.opts.protect.manifest if self.opts.protect else None)
        protection = protect(self.float_path, plain, self.stats, prot_opts, progress=self.progress)
        self.warnings += protection.warnings
        keys = provenance(protection, self.stats, ftype=self.opts.quant.ftype, manifest=prot_opts.manifest,
                          imatrix_in_quantization=self.quant is not None, clip=False)
        write_with_sidecars(plain, out, protection.sidecars, {**keys, **kv})
        return out, protection


def columns_policy(cols: dict[str, int]):
    """The column policy of a plan: each tensor's planned number of most salient columns."""
    def policy(t: TensorQuant) -> np.ndarray:
        k = min(cols.get(t.name, 0), t.shape[1])
        if k <= 0:
            return np.zeros(0, np.int32)
        s = salience(t)
        return np.sort(np.argpartition(-s, k - 1)[:k]).astype(np.int32)
    policy.__name__ = "plan"
    return policy

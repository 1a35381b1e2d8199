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
import logging
from pathlib import Path

from ..conversion import DEFAULT_BUDGET, ConvertOptions, ConvertReport, convert
from ..conversion.options import CALIB_CHUNKS, DEFAULT_FTYPE
from ..errors import SwggufError
from ..runtime import parse_tensor_type

# flags for the common ftypes (`--q4_k`); --type NAME takes any llama.cpp ftype
FTYPE_FLAGS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k", "q4_k_s", "q4_k_m",
               "q5_k_s", "q5_k_m", "q6_k", "q8_0")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags' dests are ConvertOptions' field names (ConvertOptions.from_args)."""
    parser.add_argument("model", type=Path, help="HF model directory or F32/F16/BF16 GGUF")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output GGUF")
    _quantization_flags(parser)
    _sidecar_flags(parser)
    _target_flags(parser)


def _target_flags(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("size-targeted optimizer (docs/optimizer.md)")
    t.add_argument("--target-size", metavar="SIZE",
                   help="make the file at most SIZE ('900MiB', '0.9GiB', bytes): per tensor, spend bytes on a "
                        "higher type or on sidecar columns, whichever removes more expected error per byte; "
                        "--type sets the base mixture of the tensors it does not plan (token_embd, output)")
    t.add_argument("--target-bpw", type=float, metavar="BPW",
                   help="the same for at most BPW bits per parameter (the whole file counted)")
    t.add_argument("--no-sidecar", action="store_true", help="with a target: types only, no sidecar")
    t.add_argument("--column-weight", type=float, default=1.0, metavar="W",
                   help="count each sidecar column W times its expected error when planning (docs/optimizer.md)")
    t.add_argument("--sensitivity", choices=("kld", "none"), default=None,
                   help="kld (default): weigh each tensor group's expected error by the KLD it was measured to "
                        "cause per unit, on the calibration text (one more quantization, and one evaluation per "
                        "group); none: the plain error proxy (docs/optimizer.md)")


def _quantization_flags(parser: argparse.ArgumentParser) -> None:
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
    q.add_argument("--tensor-type", dest="tensor_types", action="append", default=[], metavar="PATTERN=TYPE",
                   help="per-tensor type override, as llama-quantize (repeatable)")
    q.add_argument("--output-tensor-type", metavar="TYPE")
    q.add_argument("--token-embedding-type", metavar="TYPE")
    q.add_argument("--leave-output-tensor", action="store_true")
    q.add_argument("--allow-requantize", action="store_true",
                   help="accept a quantized input (dequantized first; it is then the reference)")
    q.add_argument("--outtype", dest="hf_outtype", default="f16", choices=("f16", "bf16", "f32"),
                   help="HF conversion type")
    q.add_argument("--threads", dest="nthread", metavar="THREADS", type=int, default=0)


def _sidecar_flags(parser: argparse.ArgumentParser) -> None:
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

    from .progress_bars import StageBars

    console = Console(stderr=True)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs every file it writes
    args.tensor_types = [parse_tensor_type(s) for s in args.tensor_types]  # refused before anything is said
    if args.ftype is None:
        console.print(f"[dim]no type given: {DEFAULT_FTYPE}[/]")
    opts = ConvertOptions.from_args(args)
    if args.target_size is not None or args.target_bpw is not None:
        return _main_sized(console, args, opts)
    if args.no_sidecar or args.sensitivity is not None:
        raise SwggufError("--no-sidecar and --sensitivity apply to --target-size/--target-bpw")
    with StageBars(console, "convert") as bars:
        report = convert(args.model, args.output, opts, bars)
    print_report(console, report)
    return 0


def _main_sized(console, args: argparse.Namespace, opts: ConvertOptions) -> int:
    from ..optimize import convert_to_size, model_params, target_bytes
    from .progress_bars import StageBars

    if opts.protect is not None and (opts.protect.protect_cols is not None or opts.protect.sidecar_budget
                                     or opts.protect.max_tensors or opts.protect.clip or opts.protect.lora_compat):
        raise SwggufError("--target-size plans the sidecar itself: drop --protect-cols, --sidecar-budget, "
                          "--max-tensors, --clip and --lora-compat")
    target = target_bytes(args.target_size, args.target_bpw,
                          model_params(args.model) if args.target_bpw is not None else 0)
    with StageBars(console, "convert") as bars:
        result = convert_to_size(args.model, args.output, target, opts, sidecar=not args.no_sidecar,
                                 column_weight=args.column_weight, sensitivity=args.sensitivity or "kld", progress=bars)
    print_report(console, result.report)
    print_plan(console, result.plan, result.report.file_bytes)
    return 0


def print_plan(console, plan, file_bytes: int) -> None:
    counts = ", ".join(f"{n} {t}" for t, n in plan.type_counts().items())
    console.print(f"plan: {len(plan.types)} tensors planned ({counts}) on base {plan.base_ftype}; "
                  f"sidecar {plan.sidecar_cols} columns in {len(plan.cols)} tensors"
                  + ("" if plan.sidecar else " (--no-sidecar)"))
    console.print(f"target {plan.budget} bytes ({plan.budget / 2**20:.2f} MiB): predicted {plan.bytes}, "
                  f"written {file_bytes}; "
                  + (f"predicted KLD added {plan.error:.4g} nats" if plan.sensitivity == "kld"
                     else f"error proxy {plan.error:.4g}") + " (recorded in swgguf.provenance.plan)")


def print_report(console, report: ConvertReport) -> None:
    from rich.table import Table

    table = Table(title=f"{report.output.name}: {report.ftype}", show_footer=True)
    table.add_column("tensor type", footer="total")
    table.add_column("tensors", justify="right", footer=str(sum(n for n, _ in report.tensor_types.values())))
    table.add_column("MiB", justify="right", footer=f"{report.weight_bytes / 2**20:.2f}")
    for name, (n, b) in report.tensor_types.items():
        table.add_row(name, str(n), f"{b / 2**20:.2f}")
    console.print(table)
    console.print(f"file {report.file_bytes / 2**20:.2f} MiB, {report.bpw:.3f} bits per weight"
                  + (f" ({report.bpw_with_sidecar:.3f} with the sidecar)" if report.sidecar_bytes else ""))
    if report.protected:
        _print_protection(console, report)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def _print_protection(console, report: ConvertReport) -> None:
    pct = 100 * report.sidecar_bytes / report.file_bytes
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

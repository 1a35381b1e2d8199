"""The size-targeted optimizer of ``swgguf convert --target-size``: per tensor, measured
error and bytes at each candidate type and per sidecar column (:mod:`.measure`,
:mod:`.tables`), a greedy plan for a byte budget (:mod:`.planner`, a pure function of
the tables), and its execution through the ordinary conversion (:mod:`.execute`).
docs/optimizer.md describes the error model and where it fails."""

from .execute import KEY_PLAN, KEY_TARGET, SizedResult, convert_to_size, write_plan
from .measure import LADDER, file_error, measure_tables, override_patterns, rebase
from .planner import Plan, plan, smallest_bytes, trajectory
from .sensitivity import (GroupFactor, factor_of, load_factors, measure_factors, save_factors, tensor_groups,
                          weigh)
from .sizes import model_params, parse_size, target_bytes
from .tables import Tables, TensorTable, TypeOption, bits_per_weight, load_tables, restrict, save_tables

__all__ = ["KEY_PLAN", "KEY_TARGET", "SizedResult", "convert_to_size", "write_plan", "LADDER", "file_error",
           "measure_tables", "override_patterns", "rebase", "Plan", "plan", "smallest_bytes", "trajectory", "model_params",
           "parse_size", "target_bytes", "Tables", "TensorTable", "TypeOption", "bits_per_weight", "load_tables",
           "restrict", "save_tables", "GroupFactor", "factor_of", "load_factors", "measure_factors", "save_factors",
           "tensor_groups", "weigh"]

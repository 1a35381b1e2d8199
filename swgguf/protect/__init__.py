"""The protection engine of ``convert --protect-sw``: which input columns and super
weights each quantized weight's sidecar carries, and the sidecars themselves.

One call, :func:`protect` (``float model, quantized file, statistics, options ->
sidecars and how they were chosen``); the policies (:mod:`.salience`), the
super-weight scalars (:mod:`.scalars`), ``--clip`` (:mod:`.clip`) and the
recorded provenance (:mod:`.provenance`) are its parts.
"""

from .engine import Protection, Statistics, protect
from .options import DEFAULT_BUDGET, ProtectOptions, parse_budget

__all__ = ["Protection", "Statistics", "protect", "DEFAULT_BUDGET", "ProtectOptions", "parse_budget"]

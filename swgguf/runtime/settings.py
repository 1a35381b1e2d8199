"""The SWGGUF_* environment variables the patched runtime and swgguf read.

The runtime reads ``SWGGUF_SIDECAR`` and ``SWGGUF_SW_SCALE`` once, when a
context is made (docs/runtime.md); :class:`ContextSettings` is how swgguf code
asks for them, so no other module spells an environment variable.
``SWGGUF_CACHE`` and ``SWGGUF_PATCHES`` (where builds are cached, which patches
apply) are read by :mod:`swgguf.runtime.build` and :mod:`swgguf.runtime.pins`.
"""

from __future__ import annotations

from dataclasses import dataclass

ENV_SIDECAR = "SWGGUF_SIDECAR"  # "0": ignore every sidecar (A/B runs); "1" or unset: apply
ENV_SW_SCALE = "SWGGUF_SW_SCALE"  # a float α: apply each super-weight scalar as α · w_true
ENV_LLAMA_LOG = "SWGGUF_LLAMA_LOG"  # "1": echo llama.cpp's log through Python logging (debugging)


@dataclass(frozen=True)
class ContextSettings:
    """How a context applies its file's sidecars. The defaults are the file as it is
    meant to be used: sidecars on, super-weight scalars as stored."""

    sidecars: bool = True
    sw_scale: float | None = None  # None: as stored (α = 1)

    def environment(self) -> dict[str, str | None]:
        """The variables to set (None: unset) while the context is made."""
        return {ENV_SIDECAR: None if self.sidecars else "0",
                ENV_SW_SCALE: None if self.sw_scale is None else repr(float(self.sw_scale))}

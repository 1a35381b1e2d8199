"""Compatibility name: llama.cpp's quantizer is :mod:`swgguf.runtime.quantize`.

Kept for tests/test_runtime_*.py and bench/runtime_overhead.py, which import
``swgguf.quantize.quantize``; new code imports it from ``swgguf.runtime``.
"""

from .runtime.quantize import quantize  # noqa: F401

"""Compatibility name: the embedded default model is :mod:`swgguf.default_model`.

Kept for tests/test_runtime_stock.py and bench/runtime_overhead.py, which import
``swgguf.models.default_model_path``; new code imports ``swgguf.default_model``.
"""

from .default_model import default_model_path  # noqa: F401

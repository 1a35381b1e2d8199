"""swgguf: super-weight-aware low-bit GGUF files for llama.cpp."""

__version__ = "0.1.0"

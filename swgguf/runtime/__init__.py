"""The patched llama.cpp runtime (llama-cpp-python built from the pinned sdist with patches/)."""

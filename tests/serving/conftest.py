"""Fixtures of the serving tests: swgguf's in-process greedy run of the protected SmolLM2
file and of its plain twin (tests/conftest.py smollm2_q3k), and the weights it protects."""

from __future__ import annotations

import pytest

from reference_run import Greedy, in_process_greedy, sidecar_bases


@pytest.fixture(scope="session")
def greedy_protected(smollm2_q3k) -> Greedy:
    return in_process_greedy(smollm2_q3k.protected)


@pytest.fixture(scope="session")
def greedy_plain(smollm2_q3k) -> Greedy:
    return in_process_greedy(smollm2_q3k.plain)


@pytest.fixture(scope="session")
def protected_bases(smollm2_q3k) -> list[str]:
    """The protected file's sidecar bases (gguf-py parses the whole header: read once)."""
    return sidecar_bases(smollm2_q3k.protected)

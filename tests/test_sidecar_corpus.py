"""One validator, stated once: the runtime's loader and the Python reader give the same
verdict on every file of the crafted corpus (tests/sidecar_corpus.py), and it is the
verdict docs/sidecar.md gives.

C++ = the installed patched runtime loading the model in a child process
(swgguf.runtime.probe: exit 0 loaded, 1 a one-line refusal, anything else a crash);
Python = swgguf.formats.sidecar.read_sidecars.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swgguf.errors import SwggufError
from swgguf.formats import sidecar

from sidecar_corpus import write_corpus

VERDICT = {True: "accept", False: "refuse"}
CASES = [
    "good", "version-UINT64", "version-INT32", "version-UINT8", "version-BOOL", "version-FLOAT32", "version-3",
    "version-without-sidecar", "weight-types-INT32", "weight-types-FLOAT32", "weight-types-STRING",
    "weight-type-9999", "tensors-not-strings", "tensors-listed-twice", "not-listed", "v1-unhashed",
    "hashes-missing", "hashes-INT64", "hashes-too-many", "hash-mismatch", "requantized-q4_0",
    "requantized-back-to-q8_0", "requantized-same-type", "sw-pos-1d", "resid-3d-trailing-1",
    "cols-2d-trailing-1", "resid-transposed", "sw-pos-empty", "on-1d-output-norm", "on-token-embd",
    "on-tied-token-embd", "column-out-of-range", "column-negative", "columns-not-increasing", "cols-wrong-type",
    "resid-f32", "resid-non-finite", "sw-val-nan", "sw-pos-without-val", "resid-without-cols",
    "sw-row-out-of-range", "sw-column-not-protected", "sw-position-twice", "weight-missing",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("sidecar-corpus"))


def runtime_verdict(path) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-m", "swgguf.runtime.probe", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), f"the runtime crashed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("swgguf: error:")]
    assert proc.returncode == 0 or len(errors) == 1, proc.stderr[-2000:]
    return proc.returncode == 0, (errors or [proc.stderr[-300:]])[0]


def python_verdict(path) -> tuple[bool, str]:
    try:
        sidecar.read_sidecars(path)
    except SwggufError as err:
        return False, str(err)
    return True, ""


def test_corpus_covers_every_listed_case(corpus):
    """The cases of issue 12 (3 and 4) are in the corpus, with both verdicts represented."""
    for name in ("version-UINT64", "version-INT32", "version-UINT8", "version-BOOL", "version-FLOAT32",
                 "weight-types-INT32", "weight-types-FLOAT32", "weight-types-STRING", "weight-type-9999",
                 "resid-3d-trailing-1", "cols-2d-trailing-1", "on-1d-output-norm", "sw-pos-1d",
                 "requantized-same-type", "on-tied-token-embd", "requantized-back-to-q8_0", "v1-unhashed"):
        assert name in corpus
    assert {v for _, v in corpus.values()} == {True, False}
    assert sorted(CASES) == sorted(corpus)


@pytest.mark.parametrize("case", CASES)
def test_runtime_and_python_agree(corpus, case):
    path, expected = corpus[case]
    cpp, cpp_msg = runtime_verdict(path)
    py, py_msg = python_verdict(path)
    assert (VERDICT[cpp], VERDICT[py]) == (VERDICT[expected], VERDICT[expected]), (cpp_msg, py_msg)
    if not expected:
        assert str(path) in cpp_msg and str(path) in py_msg  # both name the file


def test_stale_residuals_are_caught_only_by_the_hash(corpus):
    """llama-quantize through Q4_0 and back leaves the weight Q8_0 (the type check passes) with
    other bytes: the refusal is the hash's, in both readers."""
    path, _ = corpus["requantized-back-to-q8_0"]
    assert "hash to" in runtime_verdict(path)[1]
    assert "hash to" in python_verdict(path)[1]


def test_version_1_loads_with_a_warning(corpus, capfd, tmp_path):
    path = tmp_path / "v1.gguf"  # a path of its own: the reader warns once per file
    shutil.copy(corpus["v1-unhashed"][0], path)
    proc = subprocess.run([sys.executable, "-m", "swgguf.runtime.probe", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "cannot check that the residuals" in proc.stderr + proc.stdout
    assert python_verdict(path)[0]
    assert "cannot check that the residuals" in capfd.readouterr().err


@pytest.mark.parametrize("case", ["weight-type-9999", "version-BOOL", "on-tied-token-embd"])
def test_ablate_refuses_in_one_line(corpus, case):
    """Issue 12, case 5: a bad sidecar key is a one-line error and a non-zero exit, no traceback."""
    path, _ = corpus[case]
    proc = subprocess.run([sys.executable, "-m", "swgguf.cli", "ablate", str(path), "--chunks", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("swgguf: error:")]
    assert len(errors) == 1 and str(path) in errors[0], proc.stderr[-2000:]


CRASHES = sorted((Path(__file__).parent / "fuzz" / "crashes").glob("*.gguf"))


@pytest.mark.parametrize("path", CRASHES, ids=[p.name for p in CRASHES])
def test_fuzzer_findings_are_refused_by_both(path):
    """Inputs the fuzzer flagged (tests/fuzz/crashes, see bench/results/fuzz_sidecar.txt):
    both readers refuse them, in one line, without crashing. upstream-ggml-gguf-nelements-abort
    aborted every llama.cpp until patch 0006 (gguf.cpp now refuses the shape ggml_new_tensor
    would abort on)."""
    assert not python_verdict(path)[0]
    assert not runtime_verdict(path)[0]


def test_there_are_fuzzer_findings_to_check():
    assert CRASHES

"""The patched llama-server serves a protected file through its OpenAI-compatible API.

A real server on 127.0.0.1 (a free port, a bounded wait, always stopped), asked with
``requests`` (a maintained HTTP client; the API is plain JSON over HTTP) for a greedy
completion with the top log-probabilities of each generated token:

* the server's log says the sidecars were loaded and applied;
* the tokens equal what swgguf's llama-cpp-python path generates for the same file
  and prompt, and each log-probability (the token's and the top ones') is within
  LOGPROB_TOL of it;
* the plain file (the same weight bytes without the sidecar) generates other text,
  so the agreement above is the sidecar's, not the quantization's.

LOGPROB_TOL: both processes run the same ggml CPU code with the same thread count,
batches (the prompt as one, then one token at a time) and KV cache type, so the logits
agree to float32 rounding. What can differ is the order of float sums where the shapes
differ (the server computes logits for the last prompt position only, swgguf for all)
and the server's float32 softmax against NumPy's float64 one. Observed on this machine
(2 cores, 1 thread): at most 1.6e-4 nats. 2e-3 leaves 10 x that; the sidecar moves the
first step's top log-probabilities by up to 0.5 nats, and test_the_plain_file_differs
asks for more than 50 x LOGPROB_TOL.
"""

from __future__ import annotations

import re

import pytest
import requests

from reference_run import N_CTX, N_PREDICT, N_TOP, PROMPT, THREADS
from processes import HOST, free_port, running, tool

pytestmark = pytest.mark.slow

LOGPROB_TOL = 2e-3
REQUEST_TIMEOUT_S = 300  # a bound, not a measurement: a loaded 2-core machine is slow


def server_cmd(model, port: int) -> list:
    # -lv 4: llama.cpp's INFO lines (the sidecar loader's among them) are verbosity 4 in
    # the server's log; -np 1: one slot; --no-warmup: no empty run before serving
    return [tool("llama-server"), "-m", model, "--host", HOST, "--port", port, "-t", THREADS, "-tb", THREADS,
            "-c", N_CTX, "-np", 1, "-fa", "off", "-lv", 4, "--no-warmup"]


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def served(smollm2_q3k, tmp_path_factory):
    """(completion response, server log) for PROMPT from a server of the protected file."""
    log = tmp_path_factory.mktemp("server") / "llama-server.log"
    port = free_port()
    url = f"http://{HOST}:{port}"
    with running(server_cmd(smollm2_q3k.protected, port), log, lambda: healthy(url)):
        r = requests.post(f"{url}/v1/completions", timeout=REQUEST_TIMEOUT_S, json={
            "prompt": PROMPT, "max_tokens": N_PREDICT, "temperature": 0, "logprobs": N_TOP})
    assert r.status_code == 200, r.text[-2000:]
    return r.json(), log.read_text(errors="replace")


def test_the_server_loads_and_applies_the_sidecars(served, protected_bases):
    _, log = served
    n = len(protected_bases)
    assert re.search(rf"upload: swgguf: {n} sidecars in CPU \(\d+\.\d+ MiB\)", log), log[-3000:]
    assert re.search(rf"swgguf: {n} sidecars .*SWGGUF_SIDECAR=\(unset\) -> applied", log), log[-3000:]


def test_completion_equals_swgguf_in_process(served, greedy_protected):
    body, _ = served
    choice = body["choices"][0]
    steps = choice["logprobs"]["content"]
    assert [s["id"] for s in steps] == greedy_protected.ids
    assert choice["text"] == greedy_protected.text
    assert body["usage"]["prompt_tokens"] == len(greedy_protected.prompt)
    for step, ours in zip(steps, greedy_protected.tokens):
        assert step["logprob"] == pytest.approx(ours.logprob, abs=LOGPROB_TOL)
        theirs_top = [(t["id"], t["logprob"]) for t in step["top_logprobs"]]
        assert [t for t, _ in theirs_top] == [t for t, _ in ours.top]
        assert [lp for _, lp in theirs_top] == pytest.approx([lp for _, lp in ours.top], abs=LOGPROB_TOL)


def test_the_plain_file_differs(served, greedy_plain):
    """Without the sidecar the same weights continue the prompt otherwise: other text,
    and log-probabilities far outside the tolerance where the two still agree on the token."""
    steps = served[0]["choices"][0]["logprobs"]["content"]
    assert [s["id"] for s in steps] != greedy_plain.ids
    assert served[0]["choices"][0]["text"] != greedy_plain.text
    first = steps[0]  # the same context for both: the prompt
    plain = dict(greedy_plain.tokens[0].top)
    gaps = [abs(t["logprob"] - plain[t["id"]]) for t in first["top_logprobs"] if t["id"] in plain]
    assert gaps and max(gaps) > 50 * LOGPROB_TOL, gaps

"""The patched llama-cli completes one prompt greedily with a protected file.

This llama.cpp's llama-cli is a chat client only: it refuses ``-no-cnv`` (raw
completion moved to llama-completion, which the runtime build does not make). Given
a chat template that passes the user's text through unchanged, its single turn
(``-st``) is exactly a greedy completion of the prompt, BOS added as for any text
prompt. Its text must equal what swgguf's llama-cpp-python path generates for the same
file and prompt, differ from the plain file's, and its log must show the sidecars
loaded and applied.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from processes import tool
from reference_run import N_CTX, N_PREDICT, PROMPT, THREADS

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 600  # a bound, not a measurement
PASS_THROUGH_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
# llama-cli prints the user's turn as "> PROMPT", then the answer, then a blank line
# and its speed in brackets
ANSWER = re.compile(r"^> " + re.escape(PROMPT) + r"\n(.*?)\n\n\[ Prompt: ", re.S | re.M)


@pytest.fixture(scope="module")
def cli_run(smollm2_q3k, tmp_path_factory) -> subprocess.CompletedProcess:
    template = tmp_path_factory.mktemp("cli") / "pass-through.jinja"
    template.write_text(PASS_THROUGH_TEMPLATE)
    # -lv 4: llama.cpp's INFO lines, the sidecar loader's among them, go to stderr
    cmd = [tool("llama-cli"), "-m", smollm2_q3k.protected, "-p", PROMPT, "-st", "--temp", 0, "-n", N_PREDICT,
           "-t", THREADS, "-tb", THREADS, "-c", N_CTX, "-fa", "off", "--chat-template-file", template,
           "--no-warmup", "--color", "off", "-lv", 4]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def answer(proc: subprocess.CompletedProcess) -> str:
    m = ANSWER.search(proc.stdout)
    assert m, proc.stdout[-2000:]
    return m.group(1)


def test_the_cli_loads_and_applies_the_sidecars(cli_run, protected_bases):
    n = len(protected_bases)
    assert re.search(rf"upload: swgguf: {n} sidecars in CPU \(\d+\.\d+ MiB\)", cli_run.stderr), cli_run.stderr[-3000:]
    assert re.search(rf"swgguf: {n} sidecars .*-> applied", cli_run.stderr), cli_run.stderr[-3000:]


def test_cli_text_equals_swgguf_in_process(cli_run, greedy_protected, greedy_plain):
    assert len(greedy_protected.tokens) == N_PREDICT  # no early end: the CLI ran as many tokens
    assert answer(cli_run) == greedy_protected.text
    assert answer(cli_run) != greedy_plain.text

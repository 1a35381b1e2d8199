"""`swgguf ppl --hellaswag` on SmolLM2-135M through the patched llama.cpp, against the
runtime's own `llama-perplexity --hellaswag` on the same tasks; the four endings in one
decode against each evaluated alone; a file with a sidecar scored with it applied;
`ablate --hellaswag`; bad task files. One thread per model: on a busy 2-core machine
two threads spend most of their time waiting for each other."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from swgguf import ablation, cli, runtime
from swgguf.default_model import default_model_path
from swgguf.evaluate import ModelSpec, hellaswag
from swgguf.formats.manifest import DetectionInfo, Manifest, ModelInfo, SuperWeight, save_manifest
from swgguf.evaluate.evaluator import Evaluator
from swgguf.runtime.branches import batches_sequences
from swgguf.runtime.perplexity_tool import llama_perplexity_hellaswag

HELLASWAG = Path(__file__).resolve().parents[3] / "shared" / "data" / "hellaswag" / "hellaswag_val_full.txt.bz2"
N_TASKS = 20
LONG = (8, 15)  # tasks whose endings hold over 64 tokens together (the llama.cpp bug's size)
SUPER_WEIGHTS = [(2, 507, 90, 5.09), (11, 507, 1229, 5.88)]  # SmolLM2-135M's (docs/detect.md)


def smollm2_manifest(model: Path) -> Manifest:
    return Manifest(
        model=ModelInfo(path=str(model), format="gguf", architecture="llama", sha256="0" * 64, n_layers=30),
        detection=DetectionInfo(prompt="test", threshold=1.0, threshold_rule="known"),
        super_weights=[SuperWeight(layer=l, row=r, col=c, value=v, tensor=f"blk.{l}.ffn_down.weight")
                       for l, r, c, v in SUPER_WEIGHTS])


@pytest.fixture(scope="module")
def model() -> Path:
    return default_model_path()


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    """The first N_TASKS tasks of the validation file, as plain text: llama-perplexity
    then takes exactly these (in an order of its own)."""
    if not HELLASWAG.is_file():
        pytest.fail(f"HellaSwag validation file not found at {HELLASWAG}")
    with bz2.open(HELLASWAG, "rt", encoding="utf-8", newline="") as f:
        lines = [next(f) for _ in range(hellaswag.TASK_LINES * N_TASKS)]
    path = tmp_path_factory.mktemp("hellaswag") / "first.txt"
    path.write_bytes("".join(lines).encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def ours(model, task_file) -> hellaswag.HellaswagResult:
    (result,) = hellaswag.hellaswag([model], hellaswag.read_tasks(task_file), n_threads=1)
    return result


def test_tasks_read_from_bz2_and_plain_are_the_same(task_file):
    plain = hellaswag.read_tasks(task_file)
    packed = hellaswag.read_tasks(HELLASWAG, N_TASKS)
    assert plain.tasks == packed.tasks and len(plain) == N_TASKS and plain.n_in_file == N_TASKS
    assert packed.n_in_file == 10042  # the whole validation split
    first = packed.tasks[0]
    assert first.context.startswith("Roof shingle removal:") and first.gold == 3 and len(first.endings) == 4


@pytest.mark.slow
def test_choices_agree_with_llama_perplexity(model, task_file, ours):
    """Task by task, in the order the tool takes them. Its ubatches of 32 tokens keep
    llama.cpp's multi-sequence attention right (docs/hellaswag.md); flash attention
    on, its default, as swgguf's contexts have it."""
    theirs = llama_perplexity_hellaswag(model, task_file, N_TASKS, threads=1, ubatch=32)
    order = hellaswag.llama_perplexity_order(N_TASKS)
    assert sorted(order) == list(range(N_TASKS)) and order != list(range(N_TASKS))
    assert [bool(ours.stats.right[i]) for i in order] == theirs
    assert 0 < ours.stats.accuracy < 1 and ours.stats.n_tasks == N_TASKS
    assert ours.info.type == "Q4_1" and ours.info.sidecar_bytes == 0 and ours.tokens_per_s > 0


@pytest.mark.slow
def test_endings_in_one_decode_score_as_each_alone(model, task_file):
    """The batched path against one decode per ending in a plain context, on tasks long
    enough for the llama.cpp bug to show if the ubatches were larger."""
    tasks = hellaswag.read_tasks(task_file).tasks
    tokens = hellaswag.task_tokens(model, [tasks[i] for i in (0, *LONG)], 512)
    assert all(sum(len(s) - t.prefix - 1 for s in t.sequences) > 64 for t in tokens[1:])
    options = hellaswag.load_options(512, 1)
    batched = Evaluator(ModelSpec(model), options)
    alone = Evaluator(ModelSpec(model), runtime.LoadOptions(n_ctx=512, n_batch=512, n_threads=1, flash_attn=True))
    try:
        assert batches_sequences(batched.llama) == hellaswag.N_ENDINGS and batches_sequences(alone.llama) == 1
        for t in tokens:
            assert hellaswag.ending_scores(batched, t).tolist() == hellaswag.ending_scores(alone, t).tolist()
    finally:
        batched.close()
        alone.close()


@pytest.mark.slow
def test_a_file_with_a_sidecar_is_scored_with_it_applied(model, task_file, ours, tmp_path):
    """A copy whose sidecar carries the super weights as scalars: as stored it is the
    original exactly; scaled to zero through its sidecar, it chooses differently."""
    m = smollm2_manifest(model)
    copy = ablation.write_scalar_copy(model, tmp_path / "copy.gguf", ablation.find_super_weights(model, m))
    tasks = hellaswag.read_tasks(task_file, 6)
    stored, pruned = hellaswag.hellaswag(
        [ModelSpec(copy, "as stored"), ModelSpec(copy, "scalars x0", runtime.ContextSettings(sw_scale=0.0))], tasks,
        n_threads=1)
    assert any("2 super-weight scalars" in line and "-> applied" in line for line in runtime.swgguf_log_lines())
    assert stored.info.sidecar_bytes > 0
    assert stored.stats.choices == ours.stats.choices[:6]  # α = 1: the original exactly
    assert pruned.stats.choices != stored.stats.choices


@pytest.mark.slow
def test_ablate_scores_every_variant(model, task_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    m = save_manifest(smollm2_manifest(model), tmp_path / "m.json")
    out = tmp_path / "ablate.json"
    assert cli.main(["ablate", str(model), "--manifest", str(m), "--ctx", "128", "--chunks", "1", "--scale", "0",
                     "--restore-sa", "--hellaswag", str(task_file), "--tasks", "6", "--threads", "1",
                     "--json", str(out)]) == 0
    assert "HellaSwag: the first 6 tasks" in capsys.readouterr().out
    doc = json.loads(out.read_text())["hellaswag"]
    assert doc["tasks"]["n_tasks"] == 6
    rows = {r["label"]: r for r in doc["rows"]}
    assert set(rows) == {"α=0", "α=0 +SA"} and rows["α=0 +SA"]["restore_sa"]
    assert rows["α=0"]["vs_original"]["agree"] < 1.0
    assert doc["original"]["n_tasks"] == rows["α=0 +SA"]["n_tasks"] == 6


# --- bad input: one line, exit 1 --------------------------------------------------------------


def _error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("swgguf: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_missing_task_file(capsys, model, tmp_path):
    err = _error(capsys, ["ppl", str(model), "--hellaswag", str(tmp_path / "nope.txt")])
    assert "nope.txt" in err and "no such HellaSwag task file" in err


def test_malformed_task_block(capsys, model, task_file, tmp_path):
    lines = task_file.read_text(encoding="utf-8").split("\n")
    lines[6 + 1] = "the second"  # task 2's gold ending
    bad = tmp_path / "bad-label.txt"
    bad.write_text("\n".join(lines), encoding="utf-8")
    err = _error(capsys, ["ppl", str(model), "--hellaswag", str(bad)])
    assert "bad-label.txt" in err and "line 8 (task 2)" in err and "'the second'" in err
    short = tmp_path / "short.txt"
    short.write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    err = _error(capsys, ["ppl", str(model), "--hellaswag", str(short)])
    assert "short.txt" in err and "10 lines, not a positive multiple of 6" in err


def test_damaged_bz2_and_bad_options(capsys, model, task_file, tmp_path):
    damaged = tmp_path / "tasks.txt.bz2"
    damaged.write_bytes(b"BZh9" + b"\0" * 64)
    assert "tasks.txt.bz2: cannot read it" in _error(capsys, ["ppl", str(model), "--hellaswag", str(damaged)])
    err = _error(capsys, ["ppl", str(model), "--hellaswag", str(task_file), "--tasks", "0"])
    assert "--tasks must be at least 1" in err
    err = _error(capsys, ["ppl", str(model), "--hellaswag", str(task_file), "--llama-compat"])
    assert "do not apply" in err

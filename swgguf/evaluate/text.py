"""Evaluation text: the embedded English corpus, text files, and cutting windows.

Two scoring conventions (docs/ppl.md):

* **swgguf** (default): the text is tokenized once without BOS and cut into
  consecutive, non-overlapping windows. A window of ``ctx`` tokens is
  ``[BOS] + ctx-1`` text tokens where the vocabulary adds a BOS, else ``ctx``
  text tokens; every prediction inside the window is scored, so each window
  scores ``ctx - 1`` tokens and, with BOS, every text token is scored exactly
  once.
* **llama-compat**: what ``llama-perplexity`` does. The text is tokenized with
  BOS (where the vocabulary adds one), cut into chunks of ``ctx`` tokens, the
  first token of each chunk replaced by BOS, and only the second half of each
  chunk is scored (positions ``ctx/2 .. ctx-2`` predicting the next token).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from ..errors import SwggufError
from ..formats.files import write_text
from ..runtime import vocab

CORPUS_FILE = "corpus_en.txt"
CORPUS_LABEL = "embedded: Alice's Adventures in Wonderland"
_HEADER_PREFIX = "# swgguf embedded corpus:"


@dataclass(frozen=True)
class Text:
    content: str
    label: str  # file path or the embedded corpus's name

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Window:
    """A sequence evaluated from position 0; logits at positions ``score_from ..
    len(tokens)-2`` are scored against the next token."""

    tokens: list[int]
    score_from: int = 0

    @property
    def targets(self) -> list[int]:
        return self.tokens[self.score_from + 1:]

    @property
    def n_scored(self) -> int:
        return len(self.tokens) - 1 - self.score_from


def embedded_corpus() -> Text:
    """The embedded corpus without its one-line provenance header."""
    raw = resources.files("swgguf.data").joinpath(CORPUS_FILE).read_text(encoding="utf-8")
    if raw.startswith(_HEADER_PREFIX):
        raw = raw.split("\n", 1)[1]
    return Text(raw, CORPUS_LABEL)


def load_text(path: str | Path | None = None) -> Text:
    """The text of ``path`` (UTF-8, read as is, e.g. WikiText-2's wiki.test.tokens),
    or the embedded corpus when ``path`` is None."""
    if path is None:
        return embedded_corpus()
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SwggufError("no such text file", path) from None
    except IsADirectoryError:
        raise SwggufError("is a directory, not a text file", path) from None
    except UnicodeDecodeError as err:
        raise SwggufError(f"not UTF-8 text ({err.reason} at byte {err.start})", path) from None
    if not content.strip():
        raise SwggufError("the text file is empty", path)
    return Text(content, str(path))


def text_from(path: str | Path, start: float, n_chars: int, label: str | None = None) -> Text:
    """``n_chars`` of a text file from the first line break after fraction ``start`` of its
    characters: evaluation text disjoint from a calibration slice that ends before ``start``
    (:func:`calibration_slice`)."""
    raw = load_text(path).content
    cut = raw.find("\n", int(len(raw) * start)) + 1
    return Text(raw[cut: cut + n_chars], label or f"{path}@{start}")


def calibration_slice(text: str | Path, out: str | Path, start: float, stop: float) -> Path:
    """Write the lines of ``text`` between fractions ``start`` and ``stop`` of its characters
    to ``out``: disjoint slices of one corpus for calibration and evaluation."""
    raw = Path(text).read_text(encoding="utf-8")
    a, b = int(len(raw) * start), int(len(raw) * stop)
    a = raw.rfind("\n", 0, a) + 1 if a > 0 else 0
    b = len(raw) if stop >= 1 else raw.rfind("\n", 0, b) + 1
    return write_text(raw[a:b], out)


def text_windows(model: str | Path, text: Text, ctx: int, chunks: int | None, llama_compat: bool) -> list[Window]:
    """The windows of ``text`` for ``model``'s tokenizer under the chosen convention."""
    bos = vocab.bos_token(model)
    if llama_compat:
        return compat_windows(vocab.tokenize(model, text.content, add_bos=True), ctx, bos, chunks)
    return windows(vocab.tokenize(model, text.content), ctx, bos, chunks)


def windows(tokens: Sequence[int], ctx: int, bos: int | None, chunks: int | None = None) -> list[Window]:
    """The swgguf convention: consecutive windows of ``ctx`` tokens, BOS first where
    the vocabulary adds one; at most ``chunks`` of them."""
    if ctx < 2:
        raise SwggufError(f"--ctx must be at least 2, got {ctx}")
    stride = ctx - 1 if bos is not None else ctx
    available = len(tokens) // stride
    if available < 1:
        raise SwggufError(f"the text has {len(tokens)} tokens, shorter than one window of {ctx} "
                          f"({stride} text tokens): use a longer text or a smaller --ctx")
    n = cap_windows(available, chunks)
    prefix = [bos] if bos is not None else []
    return [Window(prefix + list(tokens[i * stride:(i + 1) * stride])) for i in range(n)]


def compat_windows(tokens_with_bos: Sequence[int], ctx: int, bos: int | None,
                   chunks: int | None = None) -> list[Window]:
    """llama-perplexity's chunks: ``tokens_with_bos`` is the text tokenized with BOS
    (where the vocabulary adds one); each chunk's first token becomes BOS and the
    second half of the chunk is scored."""
    if ctx < 4:
        raise SwggufError(f"--ctx must be at least 4 with --llama-compat, got {ctx}")
    if len(tokens_with_bos) < 2 * ctx:
        # llama-perplexity refuses the same way: "you need at least 2*n_ctx tokens"
        raise SwggufError(f"the text has {len(tokens_with_bos)} tokens; --llama-compat needs at least "
                          f"{2 * ctx} (two windows of {ctx}), as llama-perplexity does")
    n = cap_windows(len(tokens_with_bos) // ctx, chunks)
    out = []
    for i in range(n):
        w = list(tokens_with_bos[i * ctx:(i + 1) * ctx])
        if bos is not None:
            w[0] = bos
        out.append(Window(w, score_from=ctx // 2))
    return out


def check_chunks(chunks: int | None) -> None:
    """``--chunks`` is a number of windows, at least 1 (None: no cap)."""
    if chunks is not None and chunks < 1:
        raise SwggufError(f"--chunks must be at least 1, got {chunks}")


def cap_windows(available: int, chunks: int | None) -> int:
    """How many of ``available`` windows ``--chunks`` lets through: the first ``chunks``
    (all when None); shared by ``ppl``, ``ablate`` and ``detect``."""
    check_chunks(chunks)
    return available if chunks is None else min(chunks, available)

"""Where swgguf's outputs may go, and writing them so that they are complete or absent.

The output rule, for every file any command writes (the converted GGUF and its
LoRA adapter, JSON reports, plots, manifests, the demo's folder):

* :func:`check_outputs` refuses, before any work, an output that is a
  directory, that is one of the inputs or another output (same path after
  symlinks, or the same inode: a hard link), or whose folder is missing or
  cannot be written (probed by creating a file there: permission bits do not
  stop root, a read-only mount does);
* :func:`atomic_output` writes under a temporary name in the destination folder
  and renames onto the destination when complete, with the permissions a plain
  ``open()`` would give (the umask's, not mkstemp's 0600); a failure or an
  interrupt leaves no half file;
* :func:`work_dir` is the temporary folder of a long job, named
  ``.swgguf-<job>-<host>-<pid>-XXXXXXXX``: removed when the job ends, fails or
  is interrupted (SIGINT; the CLI turns SIGTERM into the same exception), and,
  when a SIGKILL left it behind, removed by the next job of that kind in that
  folder once no process of that pid runs on this host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import SwggufError

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 22  # bytes read at a time when hashing
WORK_PREFIX = ".swgguf-"

# (what the output is, e.g. "--json"; its path, None when not asked for)
Output = tuple[str, "str | Path | None"]


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (model files are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- the rule -----------------------------------------------------------------------


def check_outputs(outputs: Iterable[Output], inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse, before any work, an output that breaks the rule (module docstring).
    Every file directly inside an input directory (a HF model) counts as an input."""
    taken = [(f"the input {p}", p) for p in _input_files(inputs)]
    for what, path in outputs:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise SwggufError(f"{what} is a directory", path)
        for name, other in taken:
            if same_file(path, other):
                raise SwggufError(f"{what} would overwrite {name}", path)
        check_folder(path.parent)
        taken.append((f"{what} ({path})", path))


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether writing ``a`` would write ``b``: the same path once symlinks are
    resolved, or the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_folder(folder: str | Path) -> None:
    """Refuse a folder that is missing, not a folder, or where a file cannot be created."""
    folder = Path(folder)
    if not folder.exists():
        raise SwggufError("the output directory does not exist", folder)
    if not folder.is_dir():
        raise SwggufError("the output directory is not a directory", folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{WORK_PREFIX}probe-", dir=folder)
    except OSError as err:
        raise SwggufError(f"cannot write in the output directory ({err.strerror or err})", folder) from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | Path) -> None:
    """Refuse, before any work, an output whose folder does not exist."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise SwggufError("the output directory does not exist", parent)


def _input_files(inputs: Iterable[str | Path | None]) -> Iterator[Path]:
    for p in inputs:
        if p is None:
            continue
        p = Path(p)
        yield p
        if p.is_dir():
            yield from (f for f in p.iterdir() if f.is_file())


# --- writing ------------------------------------------------------------------------


def publish(tmp: str | Path, dst: str | Path) -> None:
    """Rename a finished temporary file onto ``dst`` with the permissions a plain
    ``open()`` would have given it (mkstemp makes files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)


@contextmanager
def atomic_output(dst: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``dst`` to write to; on leaving the block without an
    error it becomes ``dst``. ``suffix`` matters to writers that pick the format from
    the name (matplotlib). An OSError becomes a one-line SwggufError naming ``dst``."""
    dst = Path(dst)
    check_output_dir(dst)
    if dst.is_dir():
        raise SwggufError("the output is a directory", dst)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=suffix, dir=dst.parent)
    except OSError as err:
        raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, dst)
    except OSError as err:
        raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(data: Any, path: str | Path) -> Path:
    """``data`` as indented JSON (no NaN: not JSON), written atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return write_text(text, path)


def write_text(text: str, path: str | Path) -> Path:
    """UTF-8 ``text`` written atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# --- temporary folders ------------------------------------------------------------------


@contextmanager
def work_dir(folder: str | Path, job: str) -> Iterator[Path]:
    """A new temporary folder for ``job`` (e.g. "convert") in ``folder``, removed on
    leaving the block, however it is left; stale ones of the same job are removed first."""
    folder = Path(folder)
    remove_stale_work_dirs(folder, job)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{job}-{_host()}-{os.getpid()}-", dir=folder))
    except OSError as err:
        raise SwggufError(f"cannot make a temporary folder ({err.strerror or err})", folder) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_work_dirs(folder: str | Path, job: str) -> list[Path]:
    """Remove (and log) the work folders of ``job`` in ``folder`` whose process, on
    this host, is gone. A pid that runs again (reused) keeps its folder: never
    remove what a live process may be writing."""
    pattern = re.compile(re.escape(f"{WORK_PREFIX}{job}-") + r"(.+)-(\d+)-[A-Za-z0-9_]+")
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    removed = []
    for d in entries:
        m = pattern.fullmatch(d.name)
        if m is None or m.group(1) != _host() or not d.is_dir() or d.is_symlink() or _running(int(m.group(2))):
            continue
        shutil.rmtree(d, ignore_errors=True)
        log.warning("removed %s, left by process %s, which no longer runs", d, m.group(2))
        removed.append(d)
    return removed


def _host() -> str:
    """This host's name as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

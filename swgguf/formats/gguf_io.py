"""GGUF files through gguf-py: open (errors name the file), read tensors as
float32, copy a file with tensors added, replaced or removed, write a new one.

Tensor shapes: gguf-py reports GGUF ``ne`` order (innermost first); swgguf uses
NumPy order, so a weight of ``ne = [n_in, n_out]`` is ``(n_out, n_in)`` here
(:func:`tensor_shape`).

Key values passed to the writers may be plain Python values (bool, int, float,
str, list) or ``(value, GGUFValueType)`` to force a type (for a list: the
element type).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Mapping, TypeVar

import gguf
import numpy as np

from ..errors import SwggufError
from .files import atomic_output, same_file

GGUF_MAGIC = b"GGUF"
KEY_ARCHITECTURE = "general.architecture"
KEY_FILE_TYPE = "general.file_type"
KEY_TOKENIZER_MODEL = "tokenizer.ggml.model"
KEY_TOKENS = "tokenizer.ggml.tokens"
NO_TOKENIZER = ("no_vocab", "none")  # llama.cpp's names of "no tokenizer" (LLAMA_VOCAB_TYPE_NONE)
FLOAT_TYPES = frozenset({gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                         gguf.GGMLQuantizationType.BF16})

Tensors = Iterable[tuple[str, np.ndarray]]


# --- reading --------------------------------------------------------------------


def check_gguf(path: str | Path) -> None:
    """Refuse, before any native code sees it, a path that is not a GGUF file."""
    path = Path(path)
    if not path.exists():
        raise SwggufError("no such file", path)
    if not path.is_file():
        raise SwggufError("not a file", path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise SwggufError(f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})", path)


def check_tokenizer(path: str | Path) -> None:
    """Refuse, before llama.cpp aborts on it (llama-vocab.cpp), a GGUF without a
    tokenizer (e.g. one made by swgguf.synthetic): reading a text needs one."""
    reader = open_gguf(path)
    model = field_value(reader, KEY_TOKENIZER_MODEL)
    tokens = reader.get_field(KEY_TOKENS)
    if model is None or model in NO_TOKENIZER:
        shown = "absent" if model is None else repr(model)
        raise SwggufError(f"the model has no tokenizer ({KEY_TOKENIZER_MODEL} {shown}): it cannot read a text", path)
    if tokens is None or not tokens.data:
        raise SwggufError(f"the model has no tokenizer (no {KEY_TOKENS}): it cannot read a text", path)


# gguf-py parses every key when it opens a file, one array element at a time: a 49k-token
# vocabulary takes 3-5 s, and one conversion or evaluation opens the same files several
# times. Inside shared_readers(), open_gguf hands out one reader per file version.
SHARED_READERS_MAX = 4  # a reader of a 150k-token vocabulary holds ~0.5 GB of parsed fields
_shared: ContextVar[OrderedDict | None] = ContextVar("swgguf_shared_readers", default=None)
F = TypeVar("F", bound=Callable)


@contextmanager
def shared_readers() -> Iterator[None]:
    """Within the block, open_gguf returns the reader it returned before for the same
    file version (device, inode, size, modification time: a file written again, always
    through a rename, is a new version), keeping the last SHARED_READERS_MAX. Nested
    blocks share the outermost one; the readers are dropped when it ends."""
    if _shared.get() is not None:
        yield
        return
    token = _shared.set(OrderedDict())
    try:
        yield
    finally:
        _shared.reset(token)


def shares_readers(fn: F) -> F:
    """``fn`` runs inside shared_readers() (for library entry points)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with shared_readers():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def open_gguf(path: str | Path) -> gguf.GGUFReader:
    """A reader for ``path``; SwggufError naming the file when it is missing or unreadable."""
    cache = _shared.get()
    try:
        if cache is None:
            return gguf.GGUFReader(str(path))
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        reader = cache[key] = gguf.GGUFReader(str(path))
        while len(cache) > SHARED_READERS_MAX:
            cache.popitem(last=False)
        return reader
    except FileNotFoundError:
        raise SwggufError("no such file", path) from None
    except Exception as err:  # gguf-py raises ValueError/struct.error on bad files
        raise SwggufError(f"not a readable GGUF file ({err})", path) from None


def field_value(reader: gguf.GGUFReader, key: str) -> object:
    """The value of key ``key``, or None when the file does not have it."""
    field = reader.get_field(key)
    return None if field is None else field.contents()


def tensor_shape(t: gguf.ReaderTensor) -> tuple[int, ...]:
    """A tensor's shape in NumPy order ((n_out, n_in) for a weight)."""
    return tuple(int(d) for d in reversed(t.shape))


def dequantize_tensor(t: gguf.ReaderTensor) -> np.ndarray:
    """One GGUF tensor as float32 in NumPy order."""
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(a, np.float32).reshape(tensor_shape(t))


def dequantize_row(t: gguf.ReaderTensor, row: int) -> np.ndarray:
    """Row ``row`` of a weight as float32: cheap on large tensors."""
    return np.asarray(gguf.quants.dequantize(np.asarray(t.data)[row: row + 1], t.tensor_type),
                      np.float32).reshape(-1)


def encode_like(w: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """float32 ``w`` as the data of a tensor of float type ``qtype`` (BF16: raw bytes)."""
    if qtype == gguf.GGMLQuantizationType.F32:
        return w.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return w.astype(np.float16)
    return gguf.quants.quantize(w, qtype)


def quantized_tensors(path: str | Path) -> dict[str, str]:
    """Name -> type of the tensors of a GGUF that are not F32/F16/BF16."""
    check_gguf(path)
    return {t.name: t.tensor_type.name for t in open_gguf(path).tensors if t.tensor_type not in FLOAT_TYPES}


def file_type_name(value: int | None) -> str:
    """llama.cpp's name of a ``general.file_type``, e.g. 'Q4_K_M'; '?' when absent."""
    if value is None:
        return "?"
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return f"ftype {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


# --- writing ----------------------------------------------------------------------


def add_key_value(writer: gguf.GGUFWriter, key: str, value: object) -> None:
    """Add one key; ``value`` is plain or ``(value, GGUFValueType)`` (module docstring)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], gguf.GGUFValueType):
        value, vtype = value
        if isinstance(value, list):
            writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=vtype)
        else:
            writer.add_key_value(key, value, vtype)
    elif isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint64(key, value) if value >= 0 else writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, (list, tuple)):
        writer.add_array(key, list(value))
    else:
        raise TypeError(f"cannot store {key}={value!r} in GGUF")


def copy_keys(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, skip: Collection[str] = ()) -> None:
    """Copy every key of ``reader`` but ``skip`` with its own type; the writer sets
    GGUF.* and the architecture itself."""
    for fld in reader.fields.values():
        if fld.name.startswith("GGUF.") or fld.name == KEY_ARCHITECTURE or fld.name in skip:
            continue
        vtype = fld.types[0]
        sub_type = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, fld.contents(), vtype, sub_type=sub_type)


def copy_gguf(src: str | Path | gguf.GGUFReader, dst: str | Path, *, add: Tensors = (),
              replace: Mapping[str, np.ndarray] | None = None, drop: Collection[str] = (),
              kv: Mapping[str, object] | None = None, drop_keys: Collection[str] = (),
              swap: Mapping[str, gguf.ReaderTensor] | None = None) -> Path:
    """Copy GGUF ``src`` (a path or a reader) to ``dst``, atomically.

    Keys and tensor bytes are copied unchanged, as gguf-py's gguf_new_metadata.py
    does, except: tensors named in ``drop`` are left out; those in ``replace`` get new
    data of the same type and size; those in ``swap`` become another file's tensor of
    the same shape, in its type (another quantization of the same weight); ``add`` is
    appended (unvalidated: callers check their format); keys in ``kv`` are set
    (replacing the file's). ``dst`` may not be the source.
    """
    reader = src if isinstance(src, gguf.GGUFReader) else open_gguf(src)
    dst = Path(dst)
    if same_file(dst, reader.data.filename):
        raise SwggufError("output would overwrite the input", dst)
    kept = [_swapped(t, (swap or {}).get(t.name)) for t in reader.tensors if t.name not in drop]
    data = {t.name: _replacement(t, (replace or {}).get(t.name)) for t in kept}
    add = list(add)
    with atomic_output(dst) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=field_value(reader, KEY_ARCHITECTURE),
                                 endianess=reader.endianess)
        copy_keys(reader, writer, skip=set(kv or {}) | set(drop_keys))
        for key, value in (kv or {}).items():
            add_key_value(writer, key, value)
        for t in kept:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        for name, a in add:
            writer.add_tensor_info(name, a.shape, a.dtype, a.nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in kept:
            writer.write_tensor_data(data[t.name])
        for _, a in add:
            writer.write_tensor_data(a)
        writer.close()
    return dst


def _swapped(t: gguf.ReaderTensor, other: gguf.ReaderTensor | None) -> gguf.ReaderTensor:
    if other is None:
        return t
    if tensor_shape(other) != tensor_shape(t):
        raise SwggufError(f"tensor '{t.name}' of shape {tensor_shape(t)} swapped for one of shape "
                          f"{tensor_shape(other)}")
    return other


def _replacement(t: gguf.ReaderTensor, new: np.ndarray | None) -> np.ndarray:
    if new is None:
        return t.data
    if new.nbytes != t.data.nbytes:
        raise SwggufError(f"replacement for tensor '{t.name}' has {new.nbytes} bytes, the tensor {t.data.nbytes}")
    return new


def write_gguf(dst: str | Path, arch: str, kv: Mapping[str, object], tensors: Tensors) -> Path:
    """A new GGUF of architecture ``arch`` with keys ``kv`` (in order) and ``tensors``
    (stored in their NumPy dtype), written atomically."""
    with atomic_output(dst) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=arch)
        for key, value in kv.items():
            add_key_value(writer, key, value)
        for name, a in tensors:
            writer.add_tensor(name, a)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(dst)

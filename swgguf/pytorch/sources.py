"""Where a PyTorch model's weights come from: a :class:`WeightSource` reads one
tensor at a time, by its Hugging Face parameter name, from either

* a Hugging Face directory (``config.json`` + ``*.safetensors``), or
* a GGUF file of any tensor type, dequantized with gguf-py. The config, the
  GGUF -> HF tensor-name map and the per-tensor fix-ups (llama's q/k row
  permutation, Gemma's ``norm - 1``) are transformers' own GGUF support
  (``transformers.modeling_gguf_pytorch_utils``); only its loader is bypassed,
  because ``from_pretrained(gguf_file=...)`` requires ``accelerate`` and loads
  every tensor at once.

Tensor bytes are read with ``os.pread`` rather than through a memory map: a
mapped file's touched pages count in the process's resident set, which would
defeat ``low_mem`` on a multi-gigabyte file.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SwggufError
from ..formats.files import sha256_file
from ..formats.gguf_io import GGUF_MAGIC


def _quiet_transformers() -> None:
    """transformers logs every unparsed GGUF key at INFO/WARNING; keep the terminal for results."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# --- sources -----------------------------------------------------------------------


class WeightSource(ABC):
    """One model on disk: its config, tokenizer and tensors by HF parameter name."""

    kind: str  # "hf" or "gguf"
    path: Path
    config: object  # transformers.PretrainedConfig

    @property
    def architecture(self) -> str:
        return str(self.config.model_type)

    @abstractmethod
    def has_tensor(self, name: str) -> bool: ...

    @abstractmethod
    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name`` (HF parameter name) as float32."""

    @abstractmethod
    def tokenizer(self): ...

    @abstractmethod
    def files(self) -> list[Path]:
        """The files the weights come from (what :meth:`sha256` hashes)."""

    def bind(self, skeleton: nn.Module) -> None:
        """Learn the parameter names of ``skeleton`` (GGUF needs them for its name map)."""

    def sha256(self) -> str:
        """SHA-256 of the model file; of a directory, of its files' names and hashes."""
        files = self.files()
        if len(files) == 1 and self.kind == "gguf":
            return sha256_file(files[0])
        outer = hashlib.sha256()
        for f in sorted(files):
            outer.update(f"{f.name}\0{sha256_file(f)}\n".encode())
        return outer.hexdigest()


def open_source(path: str | Path) -> WeightSource:
    """A :class:`WeightSource` for a Hugging Face directory or a GGUF file; SwggufError otherwise."""
    path = Path(path)
    if not path.exists():
        raise SwggufError("no such file or directory", path)
    _quiet_transformers()
    if path.is_dir():
        return HfSource(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise SwggufError("not a model: neither a Hugging Face directory nor a GGUF file", path)
    return GgufSource(path)


# --- safetensors, read without mmap --------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class _SafetensorsEntry:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def _safetensors_index(file: Path) -> dict[str, _SafetensorsEntry]:
    try:
        with open(file, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            size = file.stat().st_size
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError(f"header length {header_len} does not fit a file of {size} bytes")
            header = json.loads(f.read(header_len))
    except (OSError, ValueError) as err:
        raise SwggufError(f"not a readable safetensors file ({err})", file) from None
    base = 8 + header_len
    entries = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = (base + int(o) for o in meta["data_offsets"])
        if end > size:
            raise SwggufError(f"truncated: tensor {name!r} ends at byte {end}, the file has {size}", file)
        entries[name] = _SafetensorsEntry(file, meta["dtype"], tuple(meta["shape"]), start, end)
    return entries


def _pread(path: Path, offset: int, n_bytes: int) -> bytearray:
    buf = bytearray(n_bytes)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < n_bytes:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise SwggufError(f"truncated: expected {n_bytes} bytes at offset {offset}", path)
            done += got
    finally:
        os.close(fd)
    return buf


class HfSource(WeightSource):
    kind = "hf"

    def __init__(self, path: Path) -> None:
        from transformers import AutoConfig

        self.path = path
        if not (path / "config.json").is_file():
            raise SwggufError("not a model directory: no config.json", path)
        try:
            self.config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (ValueError, KeyError, OSError) as err:
            model_type = _json_field(path / "config.json", "model_type")
            raise SwggufError(f"unsupported architecture {model_type!r}: transformers cannot build it "
                              f"({str(err).splitlines()[0]})", path) from None
        self._files = sorted(path.glob("*.safetensors"))
        if not self._files:
            found = sorted(p.name for p in path.glob("*.bin"))
            hint = f" (found {', '.join(found)}: only safetensors are read)" if found else ""
            raise SwggufError(f"no *.safetensors weights{hint}", path)
        self._entries: dict[str, _SafetensorsEntry] = {}
        for f in self._files:
            self._entries.update(_safetensors_index(f))

    def files(self) -> list[Path]:
        return [self.path / "config.json", *self._files]

    def has_tensor(self, name: str) -> bool:
        return name in self._entries

    def tensor(self, name: str) -> torch.Tensor:
        e = self._entries[name]
        raw = _pread(e.file, e.start, e.end - e.start)
        if e.dtype not in _SAFETENSORS_DTYPES:
            raise SwggufError(f"tensor {name!r} has unsupported dtype {e.dtype}", e.file)
        t = torch.frombuffer(raw, dtype=_SAFETENSORS_DTYPES[e.dtype]) if raw else torch.empty(0)
        return t.reshape(e.shape).to(torch.float32)

    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, TypeError) as err:
            raise SwggufError(f"no usable tokenizer in the model directory ({str(err).splitlines()[0]})",
                              self.path) from None


def _json_field(path: Path, key: str) -> object:
    try:
        return json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


# --- GGUF ------------------------------------------------------------------------------


def supported_gguf_architectures() -> list[str]:
    """GGUF ``general.architecture`` values that transformers can configure (and so swgguf can load)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(GGUF_SUPPORTED_ARCHITECTURES)


class GgufSource(WeightSource):
    kind = "gguf"

    def __init__(self, path: Path) -> None:
        import gguf

        self.path = path
        try:
            self._reader = gguf.GGUFReader(str(path))
        except Exception as err:  # gguf-py raises ValueError, struct.error, IndexError... on bad files
            # a cut file shows up as a reshape/struct error on the first tensor it cannot map
            raise SwggufError(f"not a readable GGUF file, truncated or corrupt ({type(err).__name__}: {err})",
                              path) from None
        arch_field = self._reader.fields.get("general.architecture")
        if arch_field is None:
            raise SwggufError("GGUF file without general.architecture", path)
        self.gguf_architecture = bytes(arch_field.parts[arch_field.data[0]]).decode()
        if self.gguf_architecture not in supported_gguf_architectures():
            raise SwggufError(
                f"unsupported GGUF architecture {self.gguf_architecture!r} "
                f"(supported: {', '.join(supported_gguf_architectures())})", path)
        self._tensors = {t.name: t for t in self._reader.tensors}
        size = path.stat().st_size
        for t in self._reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise SwggufError(f"truncated: tensor {t.name!r} ends at byte {t.data_offset + t.n_bytes}, "
                                  f"the file has {size}", path)
        self.config = self._load_config()
        self._hf_to_gguf: dict[str, str] | None = None
        self._processor = None

    def _load_config(self):
        from transformers import AutoConfig
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        try:
            parsed = load_gguf_checkpoint(str(self.path), return_tensors=False)
            config = dict(parsed["config"])
            model_type = config.pop("model_type")
            return AutoConfig.for_model(model_type, **config)
        except (ValueError, KeyError) as err:
            raise SwggufError(f"cannot configure a {self.gguf_architecture!r} model from this GGUF "
                              f"({str(err).splitlines()[0]})", self.path) from None

    def files(self) -> list[Path]:
        return [self.path]

    def bind(self, skeleton: nn.Module) -> None:
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map)

        config_dict = self.config.to_dict()
        self._processor = TENSOR_PROCESSORS.get(self.gguf_architecture, TensorProcessor)(config=config_dict)
        gguf_to_hf = get_gguf_hf_weights_map(skeleton, self._processor)
        self._hf_to_gguf = {hf: g for g, hf in gguf_to_hf.items() if g in self._tensors}

    def gguf_name(self, hf_name: str) -> str | None:
        if self._hf_to_gguf is None:
            raise RuntimeError("bind() the source to a model skeleton first")
        return self._hf_to_gguf.get(hf_name)

    def has_tensor(self, name: str) -> bool:
        return self.gguf_name(name) is not None

    def tensor(self, name: str) -> torch.Tensor:
        import gguf

        t = self._tensors[self.gguf_name(name)]
        raw = np.frombuffer(_pread(self.path, t.data_offset, t.n_bytes), dtype=t.data.dtype).reshape(t.data.shape)
        weights = gguf.quants.dequantize(raw, t.tensor_type)
        weights = self._processor.process(weights=weights, name=t.name).weights
        return torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))

    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name,
                                                 local_files_only=True)
        except Exception as err:  # transformers raises assorted errors on a GGUF without a vocabulary
            raise SwggufError(f"no usable tokenizer in the GGUF ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})", self.path) from None

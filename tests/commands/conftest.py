"""Fixtures of the output-rule and interrupt tests: a private copy of SmolLM2, a
manifest of its super weights, a tokenizer-less model, a folder nobody can write."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from swgguf.default_model import default_model_path
from swgguf.formats.manifest import DetectionInfo, Manifest, ModelInfo, SuperWeight, save_manifest

# SmolLM2-135M's super weights (docs/detect.md)
SMOLLM2_SUPER_WEIGHTS = [(2, 507, 90, 5.09), (11, 507, 1229, 5.88)]


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """A copy of the SmolLM2-135M Q4_1 GGUF: tests hard-link it into their own
    folders, so that a run that does overwrite its input never reaches the package's file."""
    dst = tmp_path_factory.mktemp("smollm2") / "smollm2-q4_1.gguf"
    shutil.copyfile(default_model_path(), dst)
    return dst


def manifest_for(model: Path, weights, path: Path, n_layers: int) -> Path:
    m = Manifest(model=ModelInfo(path=str(model), format="gguf", architecture="llama", sha256="0" * 64,
                                 n_layers=n_layers),
                 detection=DetectionInfo(prompt="test", threshold=1.0, threshold_rule="known"),
                 super_weights=[SuperWeight(layer=l, row=r, col=c, value=v, tensor=f"blk.{l}.ffn_down.weight")
                                for l, r, c, v in weights])
    return save_manifest(m, path)


@pytest.fixture(scope="session")
def smollm2_manifest(smollm2, tmp_path_factory) -> Path:
    return manifest_for(smollm2, SMOLLM2_SUPER_WEIGHTS, tmp_path_factory.mktemp("m") / "smollm2.json", 30)


@pytest.fixture(scope="session")
def tiny_manifest(tiny_f32, tmp_path_factory) -> Path:
    """The planted super weight of the synthetic model (tests/conftest.py)."""
    return manifest_for(tiny_f32, [(0, 5, 17, 4.0)], tmp_path_factory.mktemp("m") / "tiny.json", 2)


def _run(*cmd: str | Path) -> bool:
    return subprocess.run([str(c) for c in cmd], capture_output=True).returncode == 0


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder where no file can be created. Mode bits stop an ordinary user
    (0555). They do not stop root, so as root: a read-only bind mount of the
    folder (EROFS, needs CAP_SYS_ADMIN) or, where mounting is not allowed, /sys,
    where the kernel lets no one create a file."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if not _run("mount", "--bind", d, d):
        yield Path("/sys")
        return
    try:
        if _run("mount", "-o", "remount,bind,ro", d):
            yield d
        else:
            yield Path("/sys")
    finally:
        _run("umount", d)

"""`swgguf runtime build` / `info` on the runtime this environment was set up with."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swgguf.errors import SwggufError
from swgguf.formats import sidecar
from swgguf.runtime import build


def _swgguf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swgguf.cli", *args], capture_output=True, text=True, timeout=600)


def test_info_reports_the_patched_runtime():
    proc = _swgguf("runtime", "info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["installed"] and info["patched"]
    assert info["sidecar_version"] == sidecar.SIDECAR_VERSION
    assert info["llama_cpp_python"] == build.LLAMA_CPP_PYTHON_VERSION
    assert info["patch_sha256"] == build.patch_hash() and info["patch_up_to_date"]
    assert "cpu" in info["backends"]


def test_second_build_returns_at_once():
    start = time.monotonic()
    proc = _swgguf("runtime", "build", "--tools")
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stderr
    # nothing was rebuilt: the cache key matched (no compiler ran; a build takes minutes)
    assert time.monotonic() - start < 60


def test_tools_are_installed_from_the_patched_tree():
    for tool in build.TOOLS:
        assert (build.tools_dir() / tool).is_file(), tool
    marker = json.loads(build.tools_marker_path().read_text())
    assert marker["key"] == build.build_key(build.BuildConfig(tools=True))


def _wheel_lib_dir() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "lib"


@pytest.mark.parametrize("tool", build.TOOLS)
def test_tools_start_on_libraries_of_the_wheels_compile(tool):
    """llama.cpp is compiled once: every library a tool loads resolves (through its RPATH)
    into the tools' library folder, and the ones the wheel has are byte-identical to the
    wheel's (the same compile, not a second build)."""
    proc = subprocess.run(["ldd", str(build.tools_dir() / tool)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "not found" not in proc.stdout, proc.stdout + proc.stderr
    resolved = dict(re.findall(r"^\s*(lib(?:llama|ggml|mtmd)\S*) => (\S+)", proc.stdout, re.MULTILINE))
    assert "libggml-base.so.0" in resolved, proc.stdout
    shared = 0
    for lib, path in resolved.items():
        assert Path(path).resolve().parent == build.tools_lib_dir().resolve(), (lib, path)
        in_wheel = _wheel_lib_dir() / lib
        if in_wheel.exists():
            assert Path(path).read_bytes() == in_wheel.read_bytes(), lib
            shared += 1
    assert shared >= 2  # at least libggml and libggml-base come from the wheel's compile
    started = subprocess.run([str(build.tools_dir() / tool), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 0, started.stderr


def test_the_wheel_holds_only_the_python_package():
    """llama.cpp's own install rules (headers, top-level lib/, bin/llama-server) stay out
    of the wheel, although the tools are built in its tree."""
    import zipfile

    wheel = next(Path(build.installed_marker()["wheel"]).glob("llama_cpp_python-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"llama_cpp", f"llama_cpp_python-{build.LLAMA_CPP_PYTHON_VERSION}.dist-info"}, tops


def test_cache_key_tracks_the_patches(tmp_path, monkeypatch):
    key = build.build_key(build.BuildConfig())
    patch = tmp_path / "0001-x.patch"
    patch.write_text("diff --git a/x b/x\n")
    monkeypatch.setenv("SWGGUF_PATCHES", str(tmp_path))
    assert build.build_key(build.BuildConfig()) != key


def test_cpu_flags_leave_amx_out():
    cpuinfo = "flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f amx_int8 amx_tile\n"
    flags = build.cpu_cmake_flags(cpuinfo)
    assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_AVX2=ON" in flags and "-DGGML_AVX512=ON" in flags
    assert not any("AMX" in f for f in flags)
    assert build.cpu_cmake_flags("no flags here") == ["-DGGML_NATIVE=ON"]


def test_failed_build_step_shows_the_log_tail(tmp_path):
    log = tmp_path / "build.log"
    with pytest.raises(SwggufError) as err:
        build._run([sys.executable, "-c", "print('compiling x'); print('error: boom'); raise SystemExit(3)"],
                   log, lambda msg: None)
    assert "exit 3" in str(err.value) and "error: boom" in str(err.value) and str(log) in str(err.value)
    assert "error: boom" in log.read_text()


def test_missing_sdist_is_a_clear_error(tmp_path):
    with pytest.raises(SwggufError, match="no such sdist file"):
        build.fetch_sdist(lambda m: None, tmp_path / "log", tmp_path / "nope.tar.gz")

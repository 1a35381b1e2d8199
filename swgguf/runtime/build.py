"""Build and install the patched llama.cpp runtime.

``build_runtime`` gets the pinned llama-cpp-python sdist through pip, applies
patches/llama.cpp/*.patch to its vendored llama.cpp, builds a wheel with pip
(scikit-build-core + CMake) and installs it. With ``tools`` the same CMake
tree also builds llama-cli, llama-server, llama-perplexity, llama-quantize,
llama-imatrix, llama-bench and ggml-rpc-server (llama.cpp is compiled once); they
link the wheel's shared libraries and are copied into ``tools_dir()``.

Everything is cached under ``cache_root()`` by a key made of the sdist
version, the hash of the patches and the build variant, so a second run with
nothing changed returns at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import SwggufError
from .pins import LLAMA_CPP_PYTHON_VERSION, SDIST_NAME, patch_files, patches_dir
from .tools import (TOOLS, TOOLS_RPATH, install_tools, tools_dir, tools_lib_dir, tools_marker_path,  # noqa: F401
                    tools_up_to_date)

log = logging.getLogger(__name__)

BUILD_MARKER = "_swgguf_build.json"  # written into the wheel's llama_cpp package
# llama-cpp-python's runtime dependencies (its wheel is installed with --no-deps
# so that pip never swaps numpy or torch underneath us)
WHEEL_DEPS = ("typing-extensions>=4.5.0", "numpy>=1.20.0", "diskcache>=5.6.1", "jinja2>=2.11.3")

# x86 features passed explicitly instead of -march=native. AMX is left out on
# purpose: ggml's AMX matmul crashed (SIGSEGV in ggml_backend_amx_mul_mat) on
# the Sapphire Rapids machines this project runs on.
X86_FEATURES = {  # /proc/cpuinfo flag -> GGML CMake option
    "sse4_2": "GGML_SSE42",
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "bmi2": "GGML_BMI2",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}
# GGML_RPC: the RPC backend (ggml-rpc in the wheel, ggml-rpc-server among the tools)
COMMON_CMAKE = ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_RPC=ON"]
# the wheel: no multimodal library (swgguf does not use it; it is a third of the compile)
WHEEL_CMAKE = ["-DLLAVA_BUILD=OFF"]
# the tools, built in the wheel's tree (not installed into the wheel: llama_tools.cmake)
TOOLS_CMAKE = ["-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_APP=OFF",
               "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"]
# bumped when the way the runtime is built changes (2: wheel and tools in one compile)
BUILD_RECIPE = "recipe-2"
# the libraries the wheel installs; with the tools, the only other targets built
WHEEL_LIBS = ("llama", "ggml", "ggml-base", "ggml-cpu", "ggml-rpc")
# run after project(llama.cpp): install RPATHs only, llama.cpp's own install rules out of the wheel
LLAMA_TOOLS_CMAKE = Path(__file__).with_name("llama_tools.cmake")


@dataclass(frozen=True)
class BuildConfig:
    cuda: bool = False
    cuda_arch: str | None = None  # e.g. "90"; default: what nvidia-smi reports, else "native"
    tools: bool = False
    jobs: int | None = None
    sdist: Path | None = None  # a local copy of the pinned sdist (.tar.gz or .tar.xz); default: pip download
    build_isolation: bool = True  # False: build with this environment's scikit-build-core (offline machines)

    @property
    def variant(self) -> str:
        return f"cuda-sm{self.resolved_cuda_arch()}" if self.cuda else "cpu"

    def resolved_cuda_arch(self) -> str:
        return self.cuda_arch or detect_cuda_arch() or "native"


def cache_root() -> Path:
    return Path(os.environ.get("SWGGUF_CACHE", Path.home() / ".cache" / "swgguf"))


def patch_hash() -> str:
    files = patch_files()
    if not files:
        raise SwggufError("no patches found (expected patches/llama.cpp/*.patch)", patches_dir())
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def detect_cuda_arch() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    caps = sorted({line.strip().replace(".", "") for line in out.splitlines() if line.strip()})
    return ";".join(caps) or None


def cpu_cmake_flags(cpuinfo: str | None = None) -> list[str]:
    """GGML options for this CPU: its x86 features without AMX, or -march=native elsewhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    match = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    if not match:  # not x86 Linux: let ggml pick
        return ["-DGGML_NATIVE=ON"]
    flags = set(match.group(1).split())
    return ["-DGGML_NATIVE=OFF"] + [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for flag, opt in X86_FEATURES.items()]


def cmake_args(cfg: BuildConfig) -> list[str]:
    args = COMMON_CMAKE + cpu_cmake_flags()
    if cfg.cuda:
        # --exclude-libs: libggml-cuda.so came out carrying (and exporting) a static copy of
        # libstdc++ (CUDA 13 toolchain); libllama then bound its iostream calls to that copy
        # and crashed in llama_model::print_info. Static archives' symbols stay private.
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={cfg.resolved_cuda_arch()}",
                 "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL"]
    return args


def build_key(cfg: BuildConfig) -> str:
    # the recipe (BUILD_RECIPE) is part of the flags: a new way of building is a new key
    flags = hashlib.sha256(" ".join([BUILD_RECIPE, *cmake_args(cfg)]).encode()).hexdigest()[:8]
    return f"{LLAMA_CPP_PYTHON_VERSION}-{patch_hash()[:12]}-{cfg.variant}-{flags}"


# --- steps ---------------------------------------------------------------------

Progress = Callable[[str], None]


def _run(cmd: list[str], log_path: Path, progress: Progress, env: dict | None = None,
         cwd: Path | None = None) -> None:
    """Run a build step, its output appended to log_path; on failure show the log's tail."""
    tail: deque[str] = deque(maxlen=40)
    with open(log_path, "a") as log_file:
        log_file.write(f"\n$ {' '.join(cmd)}\n")
        log_file.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})}, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            tail.append(line.rstrip())
            step = re.search(r"\[\s*\d+%\]|\[\d+/\d+\]", line)
            if step:
                progress(line.strip()[:100])
        rc = proc.wait()
    if rc != 0:
        raise SwggufError(
            f"build step failed (exit {rc}): {' '.join(cmd[:4])} ...\n" + "\n".join(tail)
            + f"\n(full log: {log_path})"
        )


def fetch_sdist(progress: Progress, log_path: Path, local: Path | None = None) -> Path:
    if local is not None:
        if not Path(local).is_file():
            raise SwggufError("no such sdist file", local)
        return Path(local)
    dest = cache_root() / "sdist"
    sdist = dest / SDIST_NAME
    if sdist.is_file():
        return sdist
    dest.mkdir(parents=True, exist_ok=True)
    progress(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} (sdist)")
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
          f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(dest)], log_path, progress)
    if not sdist.is_file():
        raise SwggufError(f"pip did not produce {SDIST_NAME}", dest)
    return sdist


def prepare_source(sdist: Path, workdir: Path, marker: dict | None, progress: Progress,
                   log_path: Path, patched: bool = True) -> Path:
    """Extract the sdist into workdir and (if ``patched``) apply the patches."""
    progress("extracting sources")
    with tarfile.open(sdist) as tar:
        tar.extractall(workdir, filter="data")
    src = workdir / SDIST_NAME.removesuffix(".tar.gz")
    vendor = src / "vendor" / "llama.cpp"
    if patched:
        for patch in patch_files():
            progress(f"applying {patch.name}")
            if shutil.which("patch"):
                _run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)], log_path, progress, cwd=vendor)
            elif shutil.which("git"):
                _run(["git", "apply", "-p1", str(patch)], log_path, progress, cwd=vendor)
            else:
                raise SwggufError("neither `patch` nor `git` is installed: cannot apply the patches", patch)
    if marker is not None:
        (src / "llama_cpp" / BUILD_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return src


def prepared_source(sdist: Path, work: Path, marker: dict, progress: Progress, log_path: Path) -> Path:
    """The patched sources in work/, extracted once per cache key (a resumed build keeps
    their timestamps, so CMake recompiles nothing that is already built)."""
    done = work / ".prepared"
    if not done.is_file():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        prepare_source(sdist, work, marker, progress, log_path)
        done.touch()
    return work / SDIST_NAME.removesuffix(".tar.gz")


def wheel_cmake_args(cfg: BuildConfig) -> list[str]:
    args = cmake_args(cfg) + WHEEL_CMAKE + [f"-DCMAKE_PROJECT_llama.cpp_INCLUDE={LLAMA_TOOLS_CMAKE}"]
    if cfg.tools:
        args += TOOLS_CMAKE + [f"-DCMAKE_INSTALL_RPATH={TOOLS_RPATH}"]
    return args


def wheel_targets(cfg: BuildConfig) -> list[str]:
    return [*WHEEL_LIBS, *(["ggml-cuda"] if cfg.cuda else []), *TOOLS]


def build_wheel(src: Path, out: Path, cfg: BuildConfig, progress: Progress, log_path: Path,
                build_dir: Path) -> Path:
    """The wheel, built in build_dir (kept: with ``cfg.tools`` the tools are in build_dir/bin)."""
    progress("building the llama-cpp-python wheel" + (" and the tools" if cfg.tools else "") + " (minutes)")
    env = {"CMAKE_ARGS": " ".join(wheel_cmake_args(cfg))}
    if cfg.jobs:
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(cfg.jobs)
    isolation = [] if cfg.build_isolation else ["--no-build-isolation"]
    # Unspecified: llama-cpp-python's own install rules (llama_cpp/lib), see llama_tools.cmake
    settings = [f"--config-settings=build-dir={build_dir}", "--config-settings=install.components=Unspecified"]
    if cfg.tools:  # only the wheel's libraries and our tools, not every llama.cpp tool
        settings.append(f"--config-settings=build.targets={';'.join(wheel_targets(cfg))}")
    # -v streams CMake's output, which drives the progress display
    _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", *isolation, *settings, "-w", str(out), str(src)],
         log_path, progress, env=env)
    wheels = sorted(out.glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise SwggufError("pip wheel produced no wheel", log_path)
    return wheels[-1]


def build_cmake(vendor: Path, build_dir: Path, cfg: BuildConfig, targets: list[str], extra: list[str],
                progress: Progress, log_path: Path) -> Path:
    """Configure and build llama.cpp targets directly with CMake; returns the bin dir."""
    progress(f"configuring {', '.join(targets)}")
    _run(["cmake", "-S", str(vendor), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
          *cmake_args(cfg), *extra], log_path, progress)
    jobs = ["-j", str(cfg.jobs or os.cpu_count() or 2)]
    _run(["cmake", "--build", str(build_dir), "--config", "Release", *jobs, "--target", *targets],
         log_path, progress)
    return build_dir / "bin"


# --- what is installed -----------------------------------------------------------


def missing_requirements(requirements: tuple[str, ...]) -> list[str]:
    """The requirements not satisfied in this environment."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for req in requirements:
        r = Requirement(req)
        try:
            if not r.specifier.contains(version(r.name), prereleases=True):
                missing.append(req)
        except PackageNotFoundError:
            missing.append(req)
    return missing


def installed_marker() -> dict | None:
    """The build marker of the installed llama_cpp package, or None (absent or not ours)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    marker = Path(next(iter(spec.submodule_search_locations))) / BUILD_MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class BuildResult:
    key: str
    wheel: str | None
    installed: bool  # False: was already up to date
    tools: list[str]
    log: str | None


def build_runtime(cfg: BuildConfig, progress: Progress = lambda msg: None) -> BuildResult:
    key = build_key(cfg)
    marker = installed_marker()
    wheel_ok = marker is not None and marker.get("key") == key
    tools_ok = not cfg.tools or tools_up_to_date(key)
    tool_paths = [str(tools_dir() / t) for t in TOOLS] if cfg.tools else []
    if wheel_ok and tools_ok:
        return BuildResult(key, marker.get("wheel"), False, tool_paths, None)

    cache = cache_root() / "runtime" / key
    cache.mkdir(parents=True, exist_ok=True)
    log_path = cache / "build.log"
    wheel_dir = cache / "wheel"
    wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    new_marker = {
        "key": key,
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "patch_sha256": patch_hash(),
        "patches": [p.name for p in patch_files()],
        "variant": cfg.variant,
        "cmake_args": cmake_args(cfg),
        "wheel": str(wheel_dir),
    }
    # the sources and the CMake tree stay in the cache until the build succeeds, so that
    # a failed or interrupted build resumes where it stopped (same key = same sources)
    work = cache / "work"
    build_dir = work / "build"
    # one compile: a cached wheel is reused only when no tools are wanted from this build
    if not wheels or not tools_ok:
        sdist = fetch_sdist(progress, log_path, cfg.sdist)
        src = prepared_source(sdist, work, new_marker, progress, log_path)
        shutil.rmtree(wheel_dir, ignore_errors=True)
        wheels = [build_wheel(src, wheel_dir, cfg, progress, log_path, build_dir)]
    if not wheel_ok or not tools_ok:
        install_wheel(wheels[-1], progress, log_path)
    if not tools_ok:
        install_tools(build_dir, wheels[-1], log_path)
        tools_marker_path().write_text(json.dumps({"key": key}) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return BuildResult(key, str(wheels[-1]), True, tool_paths, str(log_path))


def install_wheel(wheel: Path, progress: Progress, log_path: Path) -> None:
    progress("installing the wheel")
    missing = missing_requirements(WHEEL_DEPS)
    if missing:  # only then ask pip: machines without an index have them already
        _run([sys.executable, "-m", "pip", "install", "-q", *missing], log_path, progress)
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
         log_path, progress)


def stock_build_dir(cfg: BuildConfig = BuildConfig()) -> Path:
    """The CMake build folder of the unpatched library: keyed by the CMake options, so a
    library built elsewhere with the same options (tools/asan_check.sh) is found here."""
    flags = hashlib.sha256(" ".join(cmake_args(cfg)).encode()).hexdigest()[:8]
    return cache_root() / "stock" / f"{LLAMA_CPP_PYTHON_VERSION}-{cfg.variant}-{flags}" / "build"


def build_stock_library(cfg: BuildConfig = BuildConfig(), progress: Progress = lambda msg: None) -> Path:
    """libllama of the *unpatched* pinned sdist (for A/B tests); returns its directory.

    Built with the same CMake options as the runtime, so a difference in logits
    can only come from the patches.
    """
    cache = stock_build_dir(cfg).parent
    lib_dir = cache / "build" / "bin"
    if (lib_dir / "libllama.so").is_file():
        return lib_dir
    cache.mkdir(parents=True, exist_ok=True)
    log_path = cache / "build.log"
    sdist = fetch_sdist(progress, log_path, cfg.sdist)
    src = prepare_source(sdist, cache, None, progress, log_path, patched=False)
    build_cmake(src / "vendor" / "llama.cpp", cache / "build", cfg, ["llama"],
                ["-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                 "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_OPENSSL=OFF"],
                progress, log_path)
    return lib_dir


def result_dict(result: BuildResult) -> dict:
    return asdict(result)

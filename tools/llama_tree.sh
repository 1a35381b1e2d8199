#!/usr/bin/env bash
# Work on the llama.cpp patches as a git branch, then export them as a series.
#
#   tools/llama_tree.sh init DIR      # DIR: the pinned sdist's vendor/llama.cpp as a git repo,
#                                     # commit "vendored" + one commit per patch (git am), branch swgguf
#   tools/llama_tree.sh export DIR    # patches/llama.cpp/*.patch <- git format-patch vendored..HEAD (DIR's)
#
# The sdist comes from pip (the pin in swgguf/runtime/pins.py) or $SWGGUF_SDIST.
# Each patch is one commit: its message is the patch's header. `swgguf runtime
# build` applies the files in name order with `patch -p1`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cmd=$1 dir=$2
git_() { git -C "$dir" -c user.name=swgguf -c user.email=dev@swgguf "$@"; }

init() {
    local version sdist tmp
    version=$(${PYTHON:-python3} -c "import sys; sys.path.insert(0, '$ROOT'); from swgguf.runtime.pins import LLAMA_CPP_PYTHON_VERSION as v; print(v)")
    sdist=${SWGGUF_SDIST:-}
    tmp=$(mktemp -d)
    if [ -z "$sdist" ]; then
        python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp"
        sdist=$(ls "$tmp"/llama_cpp_python-*.tar.gz)
    fi
    tar -xzf "$sdist" -C "$tmp"
    mkdir -p "$dir"
    cp -r "$tmp"/llama_cpp_python-"$version"/vendor/llama.cpp/. "$dir"/
    rm -rf "$tmp" "$dir/.git"  # the sdist's .git is a submodule pointer
    git -C "$dir" init -q
    git_ add -A
    git_ commit -qm "llama.cpp as vendored in llama-cpp-python $version"
    git_ tag -f vendored
    git_ checkout -qb swgguf
    git_ am -q "$ROOT"/patches/llama.cpp/*.patch
    git_ log --oneline vendored..swgguf
}

export_() {
    rm -f "$ROOT"/patches/llama.cpp/*.patch
    # HEAD, not the branch name: DIR may be a git worktree on a branch of its own
    git_ format-patch -q --no-signature --zero-commit -o "$ROOT/patches/llama.cpp" vendored..HEAD
    ls "$ROOT"/patches/llama.cpp
}

case $cmd in
    init) init ;;
    export) export_ ;;
    *) echo "usage: $0 init|export DIR" >&2; exit 2 ;;
esac

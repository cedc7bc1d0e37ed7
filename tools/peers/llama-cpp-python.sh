#!/bin/sh
# Installs llama.cpp's Python reference (llama-cpp-python, with its
# OpenAI-compatible server) into a virtual environment of its own, once, and
# prints the environment's python. Used by the engine benchmark
# (bench/engine-vs-llamacpp.sh) and by the test of `--endpoint` against a
# real server (tests/endpoint_peer.rs).
#
# llama.cpp is built from source with native CPU detection off and AVX2 /
# AVX-512 on: built with GGML_NATIVE on some of these machines' CPUs it dies
# with SIGILL on the first batched prompt (see ../shared/ENGINE-NOTES.md).
# CMake comes from tools/build/cmake (the system's, or PyPI's wheel).
#
# Environment: AGENT_PEERS_DIR (default ~/.cache/agent/peers).
set -e
here=$(cd "$(dirname "$0")" && pwd)
version=0.3.36
dir="${AGENT_PEERS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/agent/peers}/llama-cpp-python-$version"
if [ -f "$dir/.complete" ]; then
    echo "$dir/bin/python"
    exit 0
fi
python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
    echo "llama-cpp-python: python3 is needed to install the reference" >&2
    exit 1
fi
rm -rf "$dir"
"$python" -m venv "$dir" >&2
# pip's isolated build gets CMake from PyPI; our shim's folder goes first on
# PATH so a system CMake is used where there is one.
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || true
echo "llama-cpp-python: building llama-cpp-python==$version from source (several minutes, once) into $dir" >&2
# Each instruction set is switched on only where this CPU has it (a build
# with AVX-512 on dies with SIGILL on a CPU without it).
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { case " $flags " in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c) -DGGML_AVX512=$(has avx512f) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    "llama-cpp-python[server]==$version" >&2
touch "$dir/.complete"
echo "$dir/bin/python"

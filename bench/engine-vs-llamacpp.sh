#!/bin/sh
# The local engine beside llama.cpp's reference (llama-cpp-python) on the
# same GGUFs, prompt and machine; prints a table for the README.
#   bench/engine-vs-llamacpp.sh [--model NAME ...] [--goal TEXT]
# Builds agent (the project's one profile) and, once, the reference in a
# virtual environment (tools/peers/llama-cpp-python.sh). Models come from
# agent's cache (pulled on first use).
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --quiet
target="${CARGO_TARGET_DIR:-$root/target}"
python=$("$root/tools/peers/llama-cpp-python.sh")
exec "$python" "$root/bench/engine_vs_llamacpp.py" --agent "$target/debug/agent" "$@"

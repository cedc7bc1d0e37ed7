# Shared by the build-tool shims in this folder (sourced, not run).
#
# The local llama.cpp engine is built from source by the `llama-cpp-sys-2`
# crate, which needs CMake and libclang (for bindgen). `.cargo/config.toml`
# points cargo at these shims (CMAKE, LLVM_CONFIG_PATH) so that a fresh machine
# with only a Rust toolchain, a C/C++ compiler and Python 3 with pip can build
# the project: a shim uses the system's tool when there is one, and otherwise
# installs the pinned wheel from PyPI, once, into the build-tools cache.
# Variables set in the environment win over `.cargo/config.toml`, so a user
# with their own CMake or LLVM is never overridden.

tools_cache() {
    printf '%s\n' "${AGENT_BUILD_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/agent/build-tools}"
}

# pip_install NAME==VERSION DIR: installs the wheel into DIR, atomically (a
# half-done install is never seen), unless DIR is already complete.
pip_install() {
    spec=$1
    dir=$2
    [ -f "$dir/.complete" ] && return 0
    python=$(command -v python3 || command -v python || true)
    if [ -z "$python" ]; then
        echo "agent build: $spec is needed to build llama.cpp, and neither it nor python3 (to fetch it from PyPI) was found." >&2
        echo "agent build: install Python 3 with pip, or install the tool itself (Debian/Ubuntu: apt-get install cmake libclang-dev)." >&2
        return 1
    fi
    mkdir -p "$(dirname "$dir")"
    tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    echo "agent build: fetching $spec from PyPI into $dir (once)" >&2
    if ! PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$tmp" "$spec" >&2; then
        rm -rf "$tmp"
        echo "agent build: pip could not install $spec. Check that PyPI is reachable, or install the tool itself (Debian/Ubuntu: apt-get install cmake libclang-dev)." >&2
        return 1
    fi
    touch "$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
    [ -f "$dir/.complete" ]
}

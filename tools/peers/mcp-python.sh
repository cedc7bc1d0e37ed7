#!/bin/sh
# Installs the official MCP Python SDK (the `mcp` package from PyPI) once,
# for the tests that run agent's MCP client against a server no one here
# wrote (tests/it/mcp.rs), and prints the python to run it with: a virtual
# environment's, or, where `python3 -m venv` is missing (Debian without
# python3-venv), a wrapper that puts a pip --target folder on the path.
#
# Environment: AGENT_PEERS_DIR (default ~/.cache/agent/peers).
set -e
version="2.3.0"
dir="${AGENT_PEERS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/agent/peers}/mcp-python-$version"
if [ -f "$dir/.complete" ]; then
    echo "$dir/bin/python"
    exit 0
fi
python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
    echo "mcp-python: python3 is needed to install the MCP Python SDK" >&2
    exit 1
fi
rm -rf "$dir"
echo "mcp-python: installing mcp==$version from PyPI into $dir (once)" >&2
if "$python" -m venv "$dir" >&2 2>/dev/null; then
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "mcp==$version" >&2
else
    rm -rf "$dir"
    mkdir -p "$dir/bin"
    "$python" -m pip install --quiet --disable-pip-version-check --target "$dir/site" "mcp==$version" >&2
    printf '#!/bin/sh\nPYTHONPATH="%s/site" exec "%s" "$@"\n' "$dir" "$python" > "$dir/bin/python"
    chmod +x "$dir/bin/python"
fi
"$dir/bin/python" -c "import mcp.server.mcpserver" >&2
touch "$dir/.complete"
echo "$dir/bin/python"

#!/usr/bin/env bash
# Installs the official MCP Python SDK (the `mcp` package on PyPI) into a
# virtual environment at $1, once, for the tests that run agent's MCP client
# against a server no one here wrote. Prints the venv's python on success.
set -euo pipefail
venv="$1"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mcp.server.mcpserver" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "mcp>=2.3,<3" >&2
fi
echo "$venv/bin/python"

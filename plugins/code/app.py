"""`code`: the agent's built-in plugin that runs Python code in the sandbox.

Tool: `run_python(code)` (its name is part of the public interface; keep it).

Built with componentize-py (pinned in the host's build.rs), which compiles
CPython to a WASI component; this file implements the `tools` interface of
`plugins/wit/agent-plugin.wit`. The sandbox is the point: the host preopens
only the workspace (as `/workspace`, our working directory), grants no
network (there is no `socket` module), and stops the code at its deadline and
memory cap. So this file does not try to restrict the code itself; it only
makes the result useful to a model: stdout and stderr captured in order and
capped (head and tail kept), the value of a final expression shown as a
REPL would, and an exception reported as its traceback without our frames.
"""

import ast
import builtins
import json
import linecache
import os
import re
import sys
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import ToolInfo

# componentize-py snapshots the interpreter after this file is imported and
# ships no file system with the component: a module not imported here cannot
# be imported by the model's code at all (before 2026-12-01 `import csv`
# failed, and a 1.5B model that reached for csv, statistics or datetime, as
# it should, lost the run). So the standard library that data work uses is
# imported now, each on its own: one this CPython build lacks is left out,
# and the tool's description and its import errors name what is there.
STANDARD_MODULES = (
    "abc argparse array base64 binascii bisect calendar cmath collections "
    "collections.abc colorsys configparser contextlib copy csv dataclasses "
    "datetime decimal difflib doctest email enum fnmatch fractions functools "
    "glob graphlib gzip hashlib heapq hmac html html.parser io ipaddress "
    "itertools json keyword math numbers operator os os.path pathlib pickle "
    "pprint queue random re secrets shlex shutil statistics string struct "
    "tempfile textwrap time timeit tomllib types typing unicodedata unittest "
    "urllib.parse uuid warnings xml.dom.minidom xml.etree.ElementTree zipfile "
    "zlib"
).split()


def import_standard_modules():
    """Imports STANDARD_MODULES; returns the names that imported."""
    import importlib

    present = []
    for name in STANDARD_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module this build lacks is left out
            continue
        present.append(name)
    return present


AVAILABLE = import_standard_modules()
# The top-level names, as a model would write them in `import ...`.
AVAILABLE_TOP = sorted({name.split(".")[0] for name in AVAILABLE})

WORKSPACE = "/workspace"
# Characters of output kept from the start and from the end of a long run.
HEAD_CHARS = 48 * 1024
TAIL_CHARS = 16 * 1024

SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "code": {
                "type": "string",
                "minLength": 1,
                "description": "Python 3 source to run; print what you want to see. "
                "The working directory is the workspace.",
            }
        },
        "required": ["code"],
        "additionalProperties": False,
    }
)


class CappedOutput:
    """A text stream that keeps the first HEAD_CHARS and the last TAIL_CHARS."""

    def __init__(self):
        self.head = []
        self.head_len = 0
        self.tail = ""
        self.dropped = 0

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        n = len(text)
        room = HEAD_CHARS - self.head_len
        if room > 0:
            self.head.append(text[:room])
            self.head_len += min(room, n)
            text = text[room:]
        if text:
            self.tail += text
            if len(self.tail) > TAIL_CHARS:
                cut = len(self.tail) - TAIL_CHARS
                self.dropped += cut
                self.tail = self.tail[cut:]
        return n

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    @property
    def encoding(self):
        return "utf-8"

    def getvalue(self):
        text = "".join(self.head)
        if self.dropped:
            text += f"\n[... {self.dropped} characters of output cut ...]\n"
        return text + self.tail


# Modules the model's code may use without importing them: small models
# forget `import json` as often as not, and a NameError costs them a step.
PRELUDE = ("csv", "json", "math", "os", "re", "statistics")


def run(code):
    """Runs `code`; returns (output, error text or None)."""
    if os.path.isdir(WORKSPACE):
        os.chdir(WORKSPACE)
        # As `python -c` has the current directory: the workspace's own
        # modules (`import stats` for stats.py) import.
        if WORKSPACE not in sys.path:
            sys.path.insert(0, WORKSPACE)
    out = CappedOutput()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = out
    error = None
    # Lets tracebacks quote the lines of the model's code, not just their numbers.
    linecache.cache["<code>"] = (len(code), None, code.splitlines(True), "<code>")
    try:
        tree = ast.parse(code, filename="<code>", mode="exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        scope = {"__name__": "__main__", "__builtins__": builtins}
        for name in PRELUDE:
            if name in sys.modules:
                scope[name] = sys.modules[name]
        exec(compile(tree, "<code>", "exec"), scope)
        if last is not None:
            value = eval(compile(last, "<code>", "eval"), scope)
            if value is not None:
                print(repr(value))
    except SystemExit as e:
        if e.code not in (None, 0):
            error = f"exited with status {e.code}"
    except BaseException as e:  # noqa: BLE001 - everything the code raises is reported
        error = format_exception(e) + advice(e, code)
    finally:
        sys.stdout, sys.stderr = saved
    return out.getvalue(), error


# A compound statement after `;` (`import csv; with open(...) as f: ...`),
# which small models write to keep code on one line.
COMPOUND_AFTER_SEMICOLON = re.compile(r";\s*(with|for|if|while|def|try|class)\b")


def advice(e, code):
    """A line that tells a model what to do instead, for the errors that
    come from the sandbox rather than from the code."""
    if isinstance(e, ImportError):
        return (
            "\nThis sandbox has no pip and no third-party packages (no pandas, no numpy); "
            "use the standard library. Modules you can import: " + ", ".join(AVAILABLE_TOP) + "."
        )
    if isinstance(e, NameError) and not isinstance(e, UnboundLocalError):
        # Seen: `sum(... for order in orders)` after read_file showed
        # orders.json, as if that had defined `orders`.
        return (
            "\nEach run_python call starts afresh: nothing from an earlier call, and nothing "
            "read_file showed, is defined here. Read the data in this code (for example "
            "json.load(open('data.json')) or csv.DictReader(open('table.csv')))."
        )
    if not isinstance(e, SyntaxError):
        return ""
    if any(line.lstrip().startswith(("!", "%", "$ ")) for line in code.splitlines()):
        return "\nThis runs Python only: shell and notebook commands (!pip, %run) do not work here."
    if COMPOUND_AFTER_SEMICOLON.search(code):
        return (
            "\n`with`, `for`, `if`, `while`, `def` and `try` cannot follow `;`: "
            "write one statement per line (a newline is \\n in the JSON string) and indent the block."
        )
    return ""


def format_exception(e):
    """The traceback of `e`, starting at the user's code (our own frames dropped)."""
    if isinstance(e, SyntaxError):
        return "".join(traceback.format_exception_only(type(e), e)).rstrip()
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(e), e, tb)).rstrip()
    if len(text) > TAIL_CHARS:
        text = text[: TAIL_CHARS // 4] + "\n[... traceback cut ...]\n" + text[-TAIL_CHARS // 2 :]
    return text


class Tools(exports.Tools):
    def describe(self):
        return [
            ToolInfo(
                name="run_python",
                description="Run Python 3 code in a sandbox (no network; the workspace is the "
                "working directory). Returns what it prints, the value of a final expression, "
                "or the traceback of an error. Use it for arithmetic, counting, sorting, filtering "
                "and parsing data (CSV, JSON): compute, do not guess. The standard library is "
                "there (csv, json, re, math, statistics, datetime, collections, ...; csv, json, "
                "math, os, re and statistics are already imported); pip and third-party packages "
                "such as pandas are not. The workspace's own modules import.",
                args_schema=SCHEMA,
            )
        ]

    def invoke(self, tool, args_json):
        if tool != "run_python":
            raise Err(f"unknown tool `{tool}`; this plugin offers run_python")
        try:
            args = json.loads(args_json or "{}")
        except ValueError as e:
            raise Err(f"invalid arguments for run_python: {e}")
        if not isinstance(args, dict) or set(args) - {"code"}:
            raise Err("invalid arguments for run_python: expected {\"code\": \"...\"}")
        code = args.get("code")
        if not isinstance(code, str) or not code.strip():
            raise Err("run_python needs `code`: the Python source to run")
        output, error = run(code)
        if error is not None:
            raise Err(f"{output}{'' if not output or output.endswith(chr(10)) else chr(10)}{error}")
        return output if output else "(no output)"

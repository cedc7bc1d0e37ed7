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
    "zlib "
    # Imported lazily by the modules above, so they must be in the snapshot
    # too: datetime.strptime and time.strptime need _strptime (measured: the
    # 1.5B model's strptime call failed with "No module named '_strptime'").
    "_strptime locale"
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
AVAILABLE_TOP = sorted({name.split(".")[0] for name in AVAILABLE if not name.startswith("_")})

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


def escape_broken_strings(code):
    """`code` with each line break inside a one-line string literal written
    as the escape `\\n`, or None when there is none.

    A model writes code inside a JSON string, where `\\n` is a line break:
    its `'\\n'.join(names)` arrives as a quote, a real line break and a
    quote, which Python rejects ("unterminated string literal"; measured
    with the 1.5B model on OlderPeople). A line break can never stand inside
    a one-line literal, so the escape is the only thing it can have meant.
    """
    out = []
    i, n = 0, len(code)
    quote = None
    changed = False
    while i < n:
        c = code[i]
        if quote is None:
            if c == "#":
                end = code.find("\n", i)
                end = n if end < 0 else end
                out.append(code[i:end])
                i = end
            elif c in "'\"":
                quote = code[i : i + 3] if code[i : i + 3] in ("'''", '"""') else c
                out.append(quote)
                i += len(quote)
            else:
                out.append(c)
                i += 1
        elif c == "\\":
            out.append(code[i : i + 2])
            i += 2
        elif code.startswith(quote, i):
            out.append(quote)
            i += len(quote)
            quote = None
        elif c == "\n" and len(quote) == 1:
            out.append("\\n")
            i += 1
            changed = True
        else:
            out.append(c)
            i += 1
    return "".join(out) if changed else None


# Said after the output of code that escape_broken_strings repaired.
REPAIRED = "(A line break inside a quoted string was run as \\n.)"

# Said after the output of code that split_one_line_blocks repaired.
SPLIT = "(Statements written on one line with `;` and `:` were run one per line, as blocks.)"

# The words that open a block, and so end a line's header at their `:`.
BLOCK_WORDS = {"for", "if", "while", "with", "def", "class", "try", "else", "elif",
               "except", "finally", "async"}


def _marks(s):
    """The top-level `;` and block `:` of one line of code, as (index, mark),
    or None where the line cannot be read alone (an open bracket or string,
    a triple quote). A lambda's `:` and a walrus's are not block marks."""
    out = []
    depth, quote, lambdas, i = 0, None, 0, 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            if s[i:i + 3] in ("'''", '"""'):
                return None
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif c == "#":
            break
        elif depth == 0:
            word = s.startswith("lambda", i) and (i == 0 or not (s[i - 1].isalnum() or s[i - 1] == "_"))
            if word and not (s[i + 6:i + 7].isalnum() or s[i + 6:i + 7] == "_"):
                lambdas += 1
                i += 6
                continue
            if c == ";":
                out.append((i, ";"))
            elif c == ":" and s[i + 1:i + 2] != "=":
                if lambdas:
                    lambdas -= 1
                else:
                    out.append((i, ":"))
        i += 1
    return None if quote or depth else out


def _split(s, indent):
    """One line of code as lines of one statement each, blocks indented
    (`a; for x in y: if x: print(x)`), or None where it cannot be."""
    s = s.strip()
    marks = _marks(s)
    if marks is None:
        return None
    lines, start = [], 0
    for i, mark in marks:
        if mark == ";":
            if s[start:i].strip():
                lines.append(" " * indent + s[start:i].strip())
            start = i + 1
            continue
        head = s[start:i].strip()
        if head.split(" ")[0] not in BLOCK_WORDS:
            return None
        body = _split(s[i + 1:], indent + 4)
        if not body:
            return None
        return lines + [" " * indent + head + ":"] + body
    if s[start:].strip():
        lines.append(" " * indent + s[start:].strip())
    return lines


def split_one_line_blocks(code):
    """`code` with each line that joins statements and blocks on one line
    (`import os; for f in files: if 'ERROR' in f: print(f)`) written one
    statement per line, or None when no line does. Python rejects a block
    after `;` and a block inside a one-line block; a small model writes
    both (measured with the 1.5B model on FindErrorLog: it read the advice
    and gave up instead)."""
    out, changed = [], False
    for line in code.split("\n"):
        indent = len(line) - len(line.lstrip(" "))
        lines = _split(line, indent) if line.strip() else None
        if lines and len(lines) > 1:
            out.extend(lines)
            changed = True
        else:
            out.append(line)
    return "\n".join(out) if changed else None


def parse(code):
    """(tree, code it is of, what was repaired or None): `code` parsed, or
    where it does not parse and escape_broken_strings, split_one_line_blocks
    or both make it parse, the repaired code and the note that says so. A
    SyntaxError of `code` itself is raised when none parses."""
    try:
        return ast.parse(code, filename="<code>", mode="exec"), code, None
    except SyntaxError:
        escaped = escape_broken_strings(code)
        base = code if escaped is None else escaped
        split = split_one_line_blocks(base)
        tries = [(escaped, REPAIRED), (split, SPLIT if escaped is None else REPAIRED + " " + SPLIT)]
        for fixed, note in tries:
            if fixed is None:
                continue
            try:
                return ast.parse(fixed, filename="<code>", mode="exec"), fixed, note
            except SyntaxError:
                pass
        raise


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
    try:
        tree, ran, repaired = parse(code)
        # Lets tracebacks quote the lines of the code, not just their numbers.
        linecache.cache["<code>"] = (len(ran), None, ran.splitlines(True), "<code>")
        if repaired:
            # Before the code's own output, so it stays said whatever the
            # code prints or raises.
            print(repaired)
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


# What a run that printed nothing returns.
NO_OUTPUT = (
    "(no output: the code ran and printed nothing. Print what you want to see; "
    "nothing it defined is kept for the next call.)"
)

# A compound statement after `;` (`import csv; with open(...) as f: ...`),
# which small models write to keep code on one line.
COMPOUND_AFTER_SEMICOLON = re.compile(r";\s*(with|for|if|while|def|try|class)\b")


NOT_A_NUMBER = re.compile(
    r"(invalid literal for int\(\) with base 10|could not convert string to float): "
    r"'([A-Za-z_][A-Za-z0-9_ ]*?)(?:\\[nrt])*'"
)


def dict_holding_a_list(e):
    """(name, its keys as text, key) for a dict among the variables of the
    code that raised `e` which holds a list under `key`; None if none does."""
    tb = e.__traceback__
    dicts = {}
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == "<code>":
            for scope in (frame.f_locals, frame.f_globals):
                for name, value in scope.items():
                    if isinstance(value, dict) and not name.startswith("__"):
                        dicts.setdefault(name, value)
        tb = tb.tb_next
    for name, value in dicts.items():
        for key, inner in value.items():
            if isinstance(inner, list):
                keys = ", ".join(repr(k) for k in list(value)[:5])
                return name, keys, key
    return None


def advice(e, code):
    """A line that tells a model what to do instead: for the errors that
    come from the sandbox rather than from the code, and for the mistakes
    small models make again and again (a variable from an earlier call, a
    dict looped over as a list, a header row read as data)."""
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
    if isinstance(e, TypeError) and "indices must be integers" in str(e):
        # Seen: `orders = json.load(open('orders.json'))` and a loop over
        # `orders`, whose top level is {"orders": [...]}, written again and
        # again until the guard stopped the run, even after printing it.
        found = dict_holding_a_list(e)
        if found is not None:
            name, keys, key = found
            return (
                f"\n`{name}` is a dict (keys: {keys}), so looping over it gives its keys, "
                f"which are strings; the list is {name}[{key!r}]: loop over that."
            )
        return (
            "\nThe data is not shaped as this code assumed: a string or a list was indexed "
            "by a key (looping over a dict gives its keys; a JSON file may hold an object "
            "around its list). Print its shape first (print(type(data), str(data)[:300])) "
            "or read the file with read_file, then index it as it is."
        )
    if isinstance(e, json.JSONDecodeError):
        # Seen: json.load(open('contacts.txt')) on a letter of prose, and
        # then the letter overwritten with made-up JSON to make it load.
        return (
            "\nWhat was loaded is not JSON. Do not rewrite the file to make it JSON: look at it "
            "with read_file and parse it as what it is (text: open(name).read() with str "
            "methods or re; CSV: csv.DictReader)."
        )
    if isinstance(e, ValueError):
        # Seen: int('population'), the header row of a CSV split by hand.
        m = NOT_A_NUMBER.search(str(e))
        if m is not None:
            return (
                f"\n{m.group(2)!r} is a word, not a number: convert only the values that hold "
                "numbers; if it is a column name, the code read the header row as data (use "
                "csv.DictReader, each row a dict by column name with the header skipped, or "
                "skip the first line)."
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
        # Measured: `orders = json.load(...)` printed nothing, and the model
        # went looking for an error; it also expected `orders` next call.
        return output if output else NO_OUTPUT

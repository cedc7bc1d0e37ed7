# Grading script for OlderPeople: copied into the workspace after the run and run there.
# Prints "all tests passed" only when every check holds.
import sys


def fail(message):
    # A failed check goes to stderr with a non-zero exit: the grader then
    # sees "Error: ..." and never "all tests passed".
    sys.stderr.write("FAILED: " + message + "\n")
    sys.exit(1)


def read(name):
    try:
        with open(name, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as e:
        fail("cannot read %s (%s)" % (name, e.__class__.__name__))


def short(text):
    text = repr(text)
    return text if len(text) <= 80 else text[:77] + "..."


EXPECTED = ['Ava', 'Ben', 'Lucas', 'Maya', 'Olivia', 'Zoe']

names = [line.strip() for line in read("older.txt").splitlines() if line.strip()]
if names != EXPECTED:
    fail("older.txt lists %s, expected %s (older than 30, sorted, one a line)" % (short(names), EXPECTED))

print("all tests passed")

# Grading script for FixBug: copied into the workspace after the run and run there.
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


try:
    from stats import average
except Exception as e:
    fail("cannot import average from stats.py (%s: %s)" % (e.__class__.__name__, e))

for numbers, expected in [([2, 4, 6], 4), ([1, 2], 1.5), ([5], 5), ([-3, 3, 9], 3), ([0.5, 0.25], 0.375), ([10, 0, 0, 7], 4.25)]:
    try:
        got = average(list(numbers))
    except Exception as e:
        fail("average(%r) raised %s" % (numbers, e.__class__.__name__))
    if isinstance(got, bool) or not isinstance(got, (int, float)) or abs(got - expected) > 1e-9:
        fail("average(%r) gave %s, expected %s" % (numbers, short(got), expected))

print("all tests passed")

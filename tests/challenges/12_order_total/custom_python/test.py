# Grading script for OrderTotal: copied into the workspace after the run and run there.
# Prints "all tests passed" only when every check holds.
import re
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


def numbers_in(text):
    """Every number in text, with thousands separators allowed (27,413)."""
    found = re.findall(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?", text)
    return [float(n.replace(",", "")) for n in found]


def the_number(name):
    """The one number a file holds ("27413", "Total: 27,413.0"), or fail."""
    text = read(name)
    found = numbers_in(text)
    if len(found) != 1:
        fail("%s should hold just one number, found %d in %s" % (name, len(found), short(text)))
    return found[0]


EXPECTED = 649.99

total = the_number("total.txt")
if abs(total - EXPECTED) > 0.005:
    fail("total.txt holds %s, which is not the total value of the orders" % total)

print("all tests passed")

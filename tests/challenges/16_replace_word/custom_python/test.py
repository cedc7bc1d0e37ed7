# Grading script for ReplaceWord: copied into the workspace after the run and run there.
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


EXPECTED = 'Dear Ms. Novak,\n\nThank you for your order. Your delivery is planned for Thursday between 9:00 and 12:00.\nIf Thursday does not suit you, please call us before Monday evening.\nOur driver will ring twice. On Thursday the warehouse closes at 18:00.\n\nKind regards,\nHarbour Furniture\n'


def lines(text):
    return [line.rstrip() for line in text.strip().splitlines()]


got = lines(read("letter_new.txt"))
want = lines(EXPECTED)
if got != want:
    wrong = [i + 1 for i in range(max(len(got), len(want)))
             if i >= len(got) or i >= len(want) or got[i] != want[i]]
    fail("letter_new.txt differs from the letter with every Tuesday made Thursday (lines %s)" % wrong[:5])

print("all tests passed")

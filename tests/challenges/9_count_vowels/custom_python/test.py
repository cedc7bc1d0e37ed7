# Grading script for CountVowels: copied into the workspace after the run and run there.
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
    from vowels import count_vowels
except Exception as e:
    fail("cannot import count_vowels from vowels.py (%s: %s)" % (e.__class__.__name__, e))

for text, expected in [('hello', 2), ('AEIOU xyz', 5), ('', 0), ('Rhythm', 0), ('Programming is fun', 5), ('Queue', 4)]:
    got = count_vowels(text)
    if got != expected:
        fail("count_vowels(%r) gave %s, expected %d" % (text, short(got), expected))

print("all tests passed")

# Grading script for ExtractEmails: copied into the workspace after the run and run there.
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


EXPECTED = ['maria.lopez@eventhall.com', 'frontdesk@eventhall.com', 'chef_ben@tastybites.org', 'sam.photo@lensmail.net', 'jo@ourcompany.co']

lines = [line.strip() for line in read("emails.txt").splitlines() if line.strip()]
found = sorted(set(line.lower() for line in lines))
if found != sorted(EXPECTED):
    missing = sorted(set(EXPECTED) - set(found))
    extra = sorted(set(found) - set(EXPECTED))
    fail("emails.txt is not the %d addresses, one a line: missing %s, not addresses of contacts.txt %s"
         % (len(EXPECTED), missing, short(extra)))

print("all tests passed")

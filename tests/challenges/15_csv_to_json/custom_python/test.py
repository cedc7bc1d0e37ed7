# Grading script for CsvToJson: copied into the workspace after the run and run there.
# Prints "all tests passed" only when every check holds.
import json
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


EXPECTED = [{'name': 'pencil', 'price': 0.5, 'stock': 120}, {'name': 'notebook', 'price': 2.75, 'stock': 40}, {'name': 'stapler', 'price': 7.2, 'stock': 8}, {'name': 'eraser', 'price': 0.35, 'stock': 200}]

try:
    rows = json.loads(read("products.json"))
except ValueError as e:
    fail("products.json is not valid JSON (%s)" % e)
if not isinstance(rows, list):
    fail("products.json should hold a list, not a %s" % type(rows).__name__)
if len(rows) != len(EXPECTED):
    fail("products.json has %d rows, products.csv has %d" % (len(rows), len(EXPECTED)))
for row in rows:
    if not isinstance(row, dict) or sorted(row) != ["name", "price", "stock"]:
        fail("every row should be an object with the keys name, price and stock, not %s" % short(row))
    for key in ("price", "stock"):
        if isinstance(row[key], bool) or not isinstance(row[key], (int, float)):
            fail("%s should be a number, not %s" % (key, short(row[key])))
got = sorted((row["name"], row["price"], row["stock"]) for row in rows)
want = sorted((row["name"], row["price"], row["stock"]) for row in EXPECTED)
for (name, price, stock), (w_name, w_price, w_stock) in zip(got, want):
    if name != w_name or abs(price - w_price) > 1e-9 or stock != w_stock:
        fail("the row %s does not match products.csv" % short([name, price, stock]))

print("all tests passed")

# Grading script: copied into the workspace after the run and run there.
from sample_code import multiply_int

for num, multiplier, expected in [(4, 2, 8), (-3, 7, -21), (0, 5, 0)]:
    result = multiply_int(num, multiplier)
    assert result == expected, f"multiply_int({num}, {multiplier}) gave {result}, expected {expected}"
print("all tests passed")

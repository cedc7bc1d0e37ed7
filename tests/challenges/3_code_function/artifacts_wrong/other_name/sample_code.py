def multiply(num, multiplier):
    return num * multiplier

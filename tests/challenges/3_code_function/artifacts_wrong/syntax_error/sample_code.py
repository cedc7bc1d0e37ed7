def multiply_int(num, multiplier)
    return num * multiplier

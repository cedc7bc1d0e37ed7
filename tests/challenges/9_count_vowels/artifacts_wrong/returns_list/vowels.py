def count_vowels(text):
    return [c for c in text if c.lower() in "aeiou"]

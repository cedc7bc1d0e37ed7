def count_vowels(text):
    count = 0
    for i in range(1, len(text)):
        if text[i].lower() in "aeiou":
            count += 1
    return count

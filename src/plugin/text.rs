//! Text that comes out of a plugin: capped in size and made safe to show.
//!
//! Decisions:
//! - Caps keep the head and the tail (where errors and conclusions usually are)
//!   and say how much was cut, so the model knows the text is incomplete.
//! - Terminal control characters are not removed silently but replaced by
//!   visible stand-ins (ESC becomes `␛`), so a page or file that tries to
//!   rewrite the terminal (ANSI CSI, OSC title or hyperlink sequences, carriage
//!   returns that overwrite a line) or to reorder text (bidi overrides) shows
//!   what it tried instead of doing it.

/// Cut `text` to at most about `max` bytes, keeping head (2/3) and tail (1/3)
/// on character boundaries, with a note in the middle saying what was cut.
pub fn cap_middle(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let head_len = floor_boundary(text, max * 2 / 3);
    let tail_start = ceil_boundary(
        text,
        text.len() - (max - head_len).min(text.len() - head_len),
    );
    let cut = tail_start - head_len;
    let cut_lines = text[head_len..tail_start].matches('\n').count();
    format!(
        "{}\n[... {cut} bytes ({cut_lines} lines) cut from the middle of {} bytes ...]\n{}",
        &text[..head_len],
        text.len(),
        &text[tail_start..]
    )
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Replace terminal control characters with visible stand-ins; keeps `\n` and `\t`.
pub fn neutralize_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            // C0 controls (ESC, BEL, CR, BS ...) become their Control Pictures.
            '\u{0}'..='\u{1f}' => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
            '\u{7f}' => out.push('\u{2421}'),
            // C1 controls (8-bit CSI, OSC, ...) and bidi overrides/isolates.
            '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push('\u{fffd}')
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(cap_middle("hello", 10), "hello");
    }

    #[test]
    fn long_text_keeps_head_and_tail_and_says_what_was_cut() {
        let text = format!("HEAD{}TAIL", "x\n".repeat(5000));
        let capped = cap_middle(&text, 300);
        assert!(
            capped.starts_with("HEAD") && capped.ends_with("TAIL"),
            "{capped}"
        );
        assert!(capped.len() < 400);
        assert!(
            capped.contains("cut from the middle of 10008 bytes"),
            "{capped}"
        );
    }

    #[test]
    fn cuts_respect_character_boundaries() {
        let text = "é".repeat(1000);
        let capped = cap_middle(&text, 101);
        assert!(capped.starts_with('é') && capped.ends_with('é'));
    }

    #[test]
    fn escape_sequences_are_shown_not_executed() {
        let evil = "ok\x1b]0;pwned\x07\x1b[2J\rline\u{202e}txt.exe\u{9b}31m\ttab\n";
        let safe = neutralize_controls(evil);
        assert!(
            !safe
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{safe:?}"
        );
        assert!(!safe.contains('\u{202e}'));
        assert!(safe.contains("␛]0;pwned␇␛[2J␍line"), "{safe}");
        assert!(safe.ends_with("\ttab\n"));
    }
}

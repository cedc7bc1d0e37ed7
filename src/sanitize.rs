//! Making untrusted text safe to show and small enough to keep: terminal
//! escape sequences removed, and long text cut to its head and tail with a
//! note of what was cut.
//!
//! Tool output, web pages and model text can carry ANSI/OSC sequences that
//! would rewrite the user's terminal (retitle it, hide text, spoof an approval
//! prompt). Everything shown to the user or the model goes through
//! [`strip_terminal_escapes`] first. The stripping is a small state machine
//! over ECMA-48: CSI (`ESC [ ... final`), OSC/DCS/SOS/PM/APC strings (ended by
//! BEL or `ESC \`), two-byte escapes, and the 8-bit C1 forms of each; other
//! control characters except newline and tab are dropped.

/// Remove terminal control sequences and control characters.
pub fn strip_terminal_escapes(text: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Text,
        Esc,
        Csi,
        Str,
        StrEsc,
    }
    let mut out = String::with_capacity(text.len());
    let mut state = State::Text;
    for c in text.chars() {
        state = match state {
            State::Text => match c {
                '\x1b' => State::Esc,
                '\u{9b}' => State::Csi,
                '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => State::Str,
                '\n' | '\t' => {
                    out.push(c);
                    State::Text
                }
                '\r' => State::Text,
                c if c.is_control() => State::Text,
                c => {
                    out.push(c);
                    State::Text
                }
            },
            State::Esc => match c {
                '[' => State::Csi,
                ']' | 'P' | 'X' | '^' | '_' => State::Str,
                // Intermediate bytes of a longer escape: keep consuming.
                '\x20'..='\x2f' => State::Esc,
                _ => State::Text,
            },
            State::Csi => match c {
                '\x40'..='\x7e' => State::Text,
                '\x1b' => State::Esc,
                _ => State::Csi,
            },
            State::Str => match c {
                '\x07' | '\u{9c}' => State::Text,
                '\x1b' => State::StrEsc,
                _ => State::Str,
            },
            State::StrEsc => match c {
                '\\' => State::Text,
                '\x1b' => State::StrEsc,
                _ => State::Str,
            },
        };
    }
    out
}

/// Cut `text` to at most `max_chars` characters, keeping the head and the
/// tail and saying how much was cut in between.
pub fn cap_head_tail(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    let keep = max_chars.saturating_sub(80).max(2);
    let head_n = keep * 2 / 3;
    let tail_n = keep - head_n;
    let head: String = text.chars().take(head_n).collect();
    let tail: String = text.chars().skip(total - tail_n).collect();
    let cut = total - head_n - tail_n;
    format!(
        "{head}\n[... {cut} characters cut; showing the first {head_n} and the last {tail_n} of {total} ...]\n{tail}"
    )
}

/// Strip escapes, then cap: the form every observation takes.
pub fn observation(text: &str, max_chars: usize) -> String {
    cap_head_tail(&strip_terminal_escapes(text), max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_csi_osc_and_c1_sequences() {
        let evil = "ok\x1b[31mred\x1b[0m \x1b]0;pwned title\x07done\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \u{9b}2Jz\x1b(B";
        assert_eq!(strip_terminal_escapes(evil), "okred donelink z");
    }

    #[test]
    fn keeps_newlines_tabs_and_unicode_drops_carriage_returns() {
        assert_eq!(strip_terminal_escapes("a\tb\r\nc é 中\x08"), "a\tb\nc é 中");
    }

    #[test]
    fn fake_approval_prompt_cannot_hide_text() {
        // Cursor-up + erase-line would let output overwrite what the user sees.
        let s = strip_terminal_escapes("rm -rf ~\x1b[1A\x1b[2K\rApprove read_file? [y/N]");
        assert!(s.contains("rm -rf ~") && !s.contains('\x1b'));
    }

    #[test]
    fn caps_with_head_tail_and_a_note() {
        let text: String = (0..10_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let capped = cap_head_tail(&text, 1000);
        assert!(capped.chars().count() <= 1000);
        assert!(capped.starts_with("abc"));
        assert!(capped.ends_with(&text[text.len() - 100..]));
        assert!(capped.contains("characters cut"));
        assert_eq!(cap_head_tail("short", 1000), "short");
    }
}

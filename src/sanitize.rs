//! Making untrusted text safe to show and small enough to keep: terminal
//! escape sequences removed (or made visible), and long text cut to its head
//! and tail with a note of what was cut. Every module that shows or keeps text
//! from a model, a tool, a plugin or a web page uses these functions.
//!
//! Tool output, web pages and model text can carry ANSI/OSC sequences that
//! would rewrite the user's terminal (retitle it, hide text, spoof an approval
//! prompt) and bidi controls that reorder what is shown. Two policies:
//! - [`strip_terminal_escapes`] removes them: what the agent shows and keeps
//!   (transcript, journal, observations). It is a small state machine over
//!   ECMA-48: CSI (`ESC [ ... final`), OSC/DCS/SOS/PM/APC strings (ended by
//!   BEL or `ESC \`), two-byte escapes, and the 8-bit C1 forms of each; other
//!   control characters except newline and tab, and bidi controls, are dropped.
//! - [`neutralize_controls`] replaces each control character by a visible
//!   stand-in (ESC becomes `␛`): plugin results, messages and manifests, so a
//!   page or file that tries to drive the terminal shows what it tried.
//!
//! Shortening is here too, one function per job (see the section below):
//! one line for a list cell or a summary ([`one_line`]), the first lines for
//! a transcript ([`first_lines`]), and head plus tail with a note for what
//! the model reads ([`cap_head_tail`], [`observation`]).

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
                c if c.is_control() || reorders(c) => State::Text,
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

/// Bidi embedding, override and isolate controls: they reorder what a
/// terminal shows (`exe.txt` displayed for `txt.exe`).
fn reorders(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
            '\u{80}'..='\u{9f}' => out.push('\u{fffd}'),
            c if reorders(c) => out.push('\u{fffd}'),
            _ => out.push(c),
        }
    }
    out
}

// ---- Shortening -------------------------------------------------------
//
// One function per job, all here:
// - a cell or a line for a person (`agent runs list`, "What was done", error
//   messages): [`one_line`] keeps the start, [`one_line_end`] the end;
// - a few lines of an observation in the transcript: [`first_lines`];
// - text the model reads, or a person must see both ends of (observations,
//   recalled memories, approval questions): [`cap_head_tail`], which keeps
//   the head and the tail and says what was cut; [`cap_head_tail_bytes`] is
//   the same for limits given in bytes (plugin results).

/// One line for a list cell, a table column or a summary: escapes stripped,
/// every run of whitespace (line breaks included) made one space, and the
/// start kept, cut with `…` so that the result is at most `max_chars`
/// characters.
pub fn one_line(text: &str, max_chars: usize) -> String {
    keep_start(&flatten(text), max_chars)
}

/// Like [`one_line`], keeping the end instead (`…` in front when cut): the
/// part of a line still being written that fits, e.g. a streaming thought.
pub fn one_line_end(text: &str, max_chars: usize) -> String {
    let flat = flatten(text);
    let n = flat.chars().count();
    if n <= max_chars {
        return flat;
    }
    if max_chars == 0 {
        return String::new();
    }
    let kept: String = flat.chars().skip(n - (max_chars - 1)).collect();
    format!("…{kept}")
}

/// The first `max_chars` characters of `text`, the last of them `…` when cut.
fn keep_start(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    if max_chars > 0 {
        out.push('…');
    }
    out
}

fn flatten(text: &str) -> String {
    strip_terminal_escapes(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text stored by or for the agent (a memory, a source label) shown as
/// data: escapes stripped and the rest as one JSON string literal, quotes
/// included, so that its newlines, list markers and brackets cannot look
/// like the structure around it (security case 43).
pub fn quoted(text: &str) -> String {
    let clean = strip_terminal_escapes(text);
    serde_json::to_string(&clean).unwrap_or_else(|_| format!("\"{}\"", flatten(&clean)))
}

/// The first `max_lines` lines of `text` for a person, escapes stripped,
/// each line cut to `max_chars` characters with `…` (indentation kept), and
/// a last line saying how many more lines there are.
pub fn first_lines(text: &str, max_lines: usize, max_chars: usize) -> String {
    let text = strip_terminal_escapes(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<String> = lines
        .iter()
        .take(max_lines)
        .map(|l| keep_start(l, max_chars))
        .collect();
    if lines.len() > max_lines {
        shown.push(format!("… ({} more lines)", lines.len() - max_lines));
    }
    shown.join("\n")
}

/// Cut `text` to at most `max_chars` characters, keeping the head (2/3) and
/// the tail (1/3) and saying in between how much was cut. A cap too small
/// for the note keeps only the head, cut with `…`.
pub fn cap_head_tail(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    // The note with the largest numbers it can hold, and its two line breaks.
    let reserve = cut_note(total, total, Unit::Chars, total).chars().count() + 2;
    let keep = max_chars.saturating_sub(reserve);
    if keep < MIN_KEPT {
        return keep_start(text, max_chars);
    }
    let head_n = keep * 2 / 3;
    let tail_n = keep - head_n;
    let byte_at = |n: usize| text.char_indices().nth(n).map_or(text.len(), |(i, _)| i);
    cut_middle(
        text,
        byte_at(head_n),
        byte_at(total - tail_n),
        Unit::Chars,
        total,
    )
}

/// Fewest characters [`cap_head_tail`] keeps around its note; below this the
/// note would be most of what is shown.
const MIN_KEPT: usize = 40;

/// Strip escapes, then cap: the form every observation takes.
pub fn observation(text: &str, max_chars: usize) -> String {
    cap_head_tail(&strip_terminal_escapes(text), max_chars)
}

/// Cut `text` to at most about `max_bytes` bytes (the note comes on top),
/// keeping head (2/3) and tail (1/3) on character boundaries, with a note in
/// the middle saying what was cut: plugin results, whose limit is in bytes.
pub fn cap_head_tail_bytes(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let head_end = text.floor_char_boundary(max_bytes * 2 / 3);
    let tail_start =
        text.ceil_char_boundary(text.len() - (max_bytes - head_end).min(text.len() - head_end));
    cut_middle(text, head_end, tail_start, Unit::Bytes, text.len())
}

/// What a cap counts.
#[derive(Clone, Copy)]
enum Unit {
    Chars,
    Bytes,
}

/// `text[..head_end]`, a note on the part cut, `text[tail_start..]`.
fn cut_middle(text: &str, head_end: usize, tail_start: usize, unit: Unit, total: usize) -> String {
    let middle = &text[head_end..tail_start];
    let cut = match unit {
        Unit::Chars => middle.chars().count(),
        Unit::Bytes => middle.len(),
    };
    let lines = middle.matches('\n').count();
    format!(
        "{}\n{}\n{}",
        &text[..head_end],
        cut_note(cut, total, unit, lines),
        &text[tail_start..]
    )
}

fn cut_note(cut: usize, total: usize, unit: Unit, lines: usize) -> String {
    let unit = match unit {
        Unit::Chars => "characters",
        Unit::Bytes => "bytes",
    };
    format!(
        "[... {cut} {unit} cut from the middle of {total} {unit}; the cut held {lines} lines ...]"
    )
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

    #[test]
    fn byte_caps_keep_head_and_tail_and_say_what_was_cut() {
        assert_eq!(cap_head_tail_bytes("hello", 10), "hello");
        let text = format!("HEAD{}TAIL", "x\n".repeat(5000));
        let capped = cap_head_tail_bytes(&text, 300);
        assert!(
            capped.starts_with("HEAD") && capped.ends_with("TAIL"),
            "{capped}"
        );
        assert!(capped.len() < 400);
        assert!(
            capped.contains("cut from the middle of 10008 bytes"),
            "{capped}"
        );
        // Cuts respect character boundaries.
        let capped = cap_head_tail_bytes(&"é".repeat(1000), 101);
        assert!(capped.starts_with('é') && capped.ends_with('é'));
    }

    #[test]
    fn neutralized_escape_sequences_are_shown_not_executed() {
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

    #[test]
    fn stripping_drops_bidi_controls_too() {
        assert_eq!(
            strip_terminal_escapes("a\u{202e}exe.txt\u{2066}b\u{2069}"),
            "aexe.txtb"
        );
    }

    #[test]
    fn one_line_keeps_the_start_and_fits_the_width() {
        let goal = format!("Rename the helpers\n\tin {}", "x".repeat(200));
        let cell = one_line(&goal, 30);
        assert_eq!(cell.chars().count(), 30);
        assert!(cell.starts_with("Rename the helpers in xxx") && cell.ends_with('…'));
        assert_eq!(one_line("a \x1b[31mb\x1b[0m\n c", 10), "a b c");
        assert_eq!(one_line("abcdef", 1), "…");
        assert_eq!(one_line("abcdef", 0), "");
    }

    #[test]
    fn one_line_end_keeps_the_end() {
        assert_eq!(one_line_end("abcdef", 4), "…def");
        assert_eq!(one_line_end("abc", 4), "abc");
        assert_eq!(one_line_end("abc", 0), "");
        assert_eq!(one_line_end("ab\ncd\nef", 5), "…d ef");
    }

    #[test]
    fn first_lines_cut_each_line_and_count_the_rest() {
        let text = format!("  indented\n{}\nc\nd", "y".repeat(50));
        assert_eq!(
            first_lines(&text, 2, 10),
            "  indented\nyyyyyyyyy…\n… (2 more lines)"
        );
        assert_eq!(first_lines("one\x1b[2K", 6, 10), "one");
    }

    #[test]
    fn small_caps_keep_their_limit_and_no_note() {
        let text = "z".repeat(500);
        let capped = cap_head_tail(&text, 60);
        assert_eq!(capped.chars().count(), 60);
        assert!(!capped.contains('\n') && capped.ends_with('…'));
        // The note counts against the cap, whatever the size of its numbers.
        let big = "w".repeat(2_000_000);
        assert!(cap_head_tail(&big, 200).chars().count() <= 200);
        assert!(cap_head_tail(&big, 200).contains("cut from the middle"));
    }
}

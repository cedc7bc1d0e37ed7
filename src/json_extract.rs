//! Finding the JSON object in what a model wrote.
//!
//! A backend that constrains decoding returns exactly one object; one that
//! does not wraps it in code fences, prose ("Sure! Here is ..."), or writes
//! several candidates. This module owns reading such text tolerantly, for
//! every caller that expects an object from a model (actions, plans, replan
//! decisions): the whole text first, then each balanced `{...}` span in turn.
//!
//! The scan is linear per candidate and the number of candidates it starts is
//! bounded ([`MAX_SCANS`]), so a model that loops on `{{{{` costs a bounded
//! amount of work, not time quadratic in the length of its output.

use serde::de::DeserializeOwned;

/// Most spans the scan starts before it gives up on the rest of the text.
pub const MAX_SCANS: usize = 64;

/// Balanced `{...}` spans of `text` (braces inside JSON strings do not
/// count), outermost first, in the order they appear.
///
/// A span that is balanced is returned whole and the scan continues after
/// it; an opening brace that is never closed is skipped and the scan tries
/// the next one.
pub fn objects(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for _ in 0..MAX_SCANS {
        let Some(offset) = text[start..].find('{') else {
            break;
        };
        let open = start + offset;
        match span_end(bytes, open) {
            Some(end) => {
                out.push(&text[open..=end]);
                start = end + 1;
            }
            None => start = open + 1,
        }
    }
    out
}

/// Index of the `}` that closes the `{` at `open`, if any.
fn span_end(bytes: &[u8], open: usize) -> Option<usize> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first reading of `text` as a `T`: the whole (trimmed) text, or else
/// the first balanced `{...}` span that deserialises as one.
///
/// The error says why the text is not a `T`: the reason the first span that
/// is a JSON object was refused (a missing field is more useful to the model
/// than "expected value"), or else why the whole text is not JSON.
pub fn first<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    let text = text.trim();
    let whole = match serde_json::from_str(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut refused = None;
    for candidate in objects(text) {
        match serde_json::from_str::<T>(candidate) {
            Ok(v) => return Ok(v),
            Err(e) if refused.is_none() && e.is_data() => refused = Some(e),
            Err(_) => {}
        }
    }
    Err(refused.unwrap_or(whole))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Plan {
        steps: Vec<String>,
    }

    #[test]
    fn spans_skip_braces_in_strings_and_unclosed_openers() {
        let text = "a { b {\"x\": \"}{\"} c ```json\n{\"y\": {\"z\": 1}}\n```";
        assert_eq!(objects(text), vec![r#"{"x": "}{"}"#, r#"{"y": {"z": 1}}"#]);
        assert!(objects("no braces").is_empty());
    }

    #[test]
    fn the_whole_text_then_the_first_span_that_fits() {
        let p: Plan = first(r#"  {"steps": ["a"]}  "#).unwrap();
        assert_eq!(p.steps, ["a"]);
        let p: Plan = first(r#"Use {braces} like {"other": 1} or {"steps": ["b"]} ok"#).unwrap();
        assert_eq!(p.steps, ["b"]);
    }

    #[test]
    fn errors_name_the_missing_field_when_an_object_was_there() {
        let e = first::<Plan>(r#"Sure: {"thought": "t"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `steps`"), "{e}");
        assert!(first::<Plan>("no json here").is_err());
    }

    #[test]
    fn a_run_of_unclosed_braces_is_bounded_work() {
        let text = "{".repeat(256 * 1024);
        let started = std::time::Instant::now();
        assert!(objects(&text).is_empty());
        assert!(first::<Plan>(&text).is_err());
        assert!(started.elapsed().as_secs() < 5);
    }
}

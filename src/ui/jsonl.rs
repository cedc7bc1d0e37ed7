//! `--json`: one JSON object per line on stdout, each with a `type`
//! (`run_started`, `thinking`, `step`, `invalid_output`, `observation`,
//! `notice`, `run_finished`). Streamed tokens are left out: the `step` event
//! carries the parsed action and the journal keeps the raw text.

use std::io::Write;

use super::Renderer;
use crate::agent::Event;

/// Writes events as JSON lines.
pub struct JsonLines<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> JsonLines<W> {
    /// Write to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write + Send> Renderer for JsonLines<W> {
    fn event(&mut self, event: &Event) {
        if matches!(event, Event::Token { .. }) {
            return;
        }
        if let Ok(line) = serde_json::to_string(event) {
            // A closed pipe is the reader's choice; keep running.
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_typed_object_per_line_without_tokens() {
        let mut buf = Vec::new();
        {
            let mut r = JsonLines::new(&mut buf);
            r.event(&Event::Thinking { step: 1 });
            r.event(&Event::Token {
                step: 1,
                text: "x".into(),
            });
            r.event(&Event::Notice {
                step: 1,
                message: "m".into(),
            });
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "thinking");
        assert_eq!(lines[1]["type"], "notice");
    }
}

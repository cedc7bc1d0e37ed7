//! The splitter: sections of paragraphs → chunks of about `max_tokens`
//! tokens that never straddle a heading, break between paragraphs where
//! they can, and repeat the last `overlap` tokens of the previous chunk so a
//! fact cut at a boundary is still whole in one chunk. A paragraph longer
//! than a chunk is cut into overlapping word windows.
//!
//! Tokens are estimated (about four characters each, a CJK character each):
//! the knowledge base is shared by every model, so no one tokenizer is right.

use super::load::{Paragraph, Section};
use crate::memory::index::estimate_tokens;

/// One chunk before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The heading path it sits under.
    pub heading: String,
    /// Its text.
    pub text: String,
    /// First line (or block number for HTML).
    pub line: usize,
    /// Last line.
    pub end_line: usize,
}

/// Chunk sizes.
#[derive(Debug, Clone, Copy)]
pub struct SplitOptions {
    /// Target size of a chunk, in tokens.
    pub max_tokens: usize,
    /// Tokens repeated from the previous chunk of the same section.
    pub overlap: usize,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            overlap: 32,
        }
    }
}

/// The last words of `text` worth about `tokens` tokens.
fn tail(text: &str, tokens: usize) -> String {
    if tokens == 0 {
        return String::new();
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut used = 0;
    let mut start = words.len();
    while start > 0 {
        let t = estimate_tokens(words[start - 1]) + 1;
        if used + t > tokens {
            break;
        }
        used += t;
        start -= 1;
    }
    words[start..].join(" ")
}

/// Cut an oversized paragraph into overlapping windows of words.
fn windows(p: &Paragraph, opts: SplitOptions) -> Vec<Paragraph> {
    let words: Vec<&str> = p.text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let mut end = start;
        let mut used = 0;
        while end < words.len() {
            let t = estimate_tokens(words[end]) + 1;
            if used + t > opts.max_tokens && end > start {
                break;
            }
            used += t;
            end += 1;
        }
        out.push(Paragraph {
            text: words[start..end].join(" "),
            line: p.line,
            end_line: p.end_line,
        });
        if end >= words.len() {
            break;
        }
        // Step back by about `overlap` tokens, but always move forward.
        let mut back = end;
        let mut o = 0;
        while back > start + 1 && o < opts.overlap {
            back -= 1;
            o += estimate_tokens(words[back]) + 1;
        }
        start = back.max(start + 1);
    }
    out
}

/// Split sections into chunks.
pub fn split(sections: &[Section], opts: SplitOptions) -> Vec<Draft> {
    let opts = SplitOptions {
        max_tokens: opts.max_tokens.max(16),
        overlap: opts.overlap.min(opts.max_tokens / 2),
    };
    let mut out = Vec::new();
    for s in sections {
        let mut cur: Option<Draft> = None;
        let mut cur_tokens = 0;
        let paragraphs: Vec<Paragraph> = s
            .paragraphs
            .iter()
            .flat_map(|p| {
                if estimate_tokens(&p.text) > opts.max_tokens {
                    windows(p, opts)
                } else {
                    vec![p.clone()]
                }
            })
            .collect();
        for p in paragraphs {
            let t = estimate_tokens(&p.text);
            if let Some(d) = cur.as_mut()
                && cur_tokens + t < opts.max_tokens
            {
                d.text.push_str("\n\n");
                d.text.push_str(&p.text);
                d.end_line = p.end_line;
                cur_tokens += t + 1;
                continue;
            }
            let carried = match cur.take() {
                Some(done) => {
                    let carry = tail(&done.text, opts.overlap);
                    out.push(done);
                    // Carry only when it fits with the new paragraph.
                    if !carry.is_empty() && estimate_tokens(&carry) + t < opts.max_tokens {
                        Some(carry)
                    } else {
                        None
                    }
                }
                None => None,
            };
            let text = match &carried {
                Some(c) => format!("{c}\n\n{}", p.text),
                None => p.text.clone(),
            };
            cur_tokens = estimate_tokens(&text);
            cur = Some(Draft {
                heading: s.heading.clone(),
                text,
                line: p.line,
                end_line: p.end_line,
            });
        }
        out.extend(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn para(text: &str, line: usize) -> Paragraph {
        Paragraph {
            text: text.into(),
            line,
            end_line: line,
        }
    }

    #[test]
    fn chunks_stay_under_the_size_keep_sections_apart_and_overlap() {
        let words = |n: usize, w: &str| vec![w; n].join(" ");
        let sections = vec![
            Section {
                heading: "A".into(),
                paragraphs: (1..=10)
                    .map(|i| para(&words(30, &format!("a{i}")), i))
                    .collect(),
            },
            Section {
                heading: "B".into(),
                paragraphs: vec![para("short b", 20)],
            },
        ];
        let opts = SplitOptions {
            max_tokens: 64,
            overlap: 8,
        };
        let chunks = split(&sections, opts);
        assert!(chunks.len() > 3);
        for c in &chunks {
            assert!(estimate_tokens(&c.text) <= 64 + 8, "{}", c.text.len());
        }
        // A section's last chunk never runs into the next heading.
        let b: Vec<_> = chunks.iter().filter(|c| c.heading == "B").collect();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].text, "short b");
        // Consecutive chunks of A share words.
        let a: Vec<_> = chunks.iter().filter(|c| c.heading == "A").collect();
        let last_word = a[0].text.split_whitespace().last().unwrap();
        assert!(a[1].text.starts_with(last_word) || a[1].text.contains(last_word));
    }

    #[test]
    fn a_huge_paragraph_is_cut_into_overlapping_windows() {
        let text = (0..2000)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let sections = vec![Section {
            heading: String::new(),
            paragraphs: vec![para(&text, 1)],
        }];
        let chunks = split(&sections, SplitOptions::default());
        assert!(chunks.len() >= 8, "{}", chunks.len());
        // Every word appears in some chunk.
        let all: String = chunks
            .iter()
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(all.contains("w0 ") && all.contains("w1999") && all.contains("w1000 "));
    }
}

//! A fetched page as readable text: title, headings, paragraphs, list items,
//! and a numbered list of links, without scripts, styles and navigation.
//!
//! The document is walked with `ego_tree`'s iterative traversal rather than by
//! recursion: a hostile page can nest elements a hundred thousand deep, and
//! recursion would overflow the sandbox's stack on it. Long pages are cut at a
//! paragraph boundary, and the output says where and how to read on.

use scraper::{Html, Node, Selector};
use std::collections::HashMap;
use url::Url;

use crate::search::squash;

/// What the body is, judged from its content type (or its first bytes when none is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Html,
    Text,
}

impl Kind {
    /// Classifies a response; `None` for content we do not read (images, PDFs, archives).
    pub fn from_content_type(content_type: &str, body: &str) -> Option<Kind> {
        let ct = content_type.trim();
        if ct.contains("html") {
            return Some(Kind::Html);
        }
        if ct.is_empty() {
            let head: String = body
                .trim_start()
                .chars()
                .take(256)
                .collect::<String>()
                .to_ascii_lowercase();
            if head.starts_with("<!doctype html")
                || head.starts_with("<html")
                || head.contains("<body")
            {
                return Some(Kind::Html);
            }
            return (!body.contains('\0')).then_some(Kind::Text);
        }
        let textual = ct.starts_with("text/")
            || [
                "json",
                "xml",
                "javascript",
                "yaml",
                "csv",
                "markdown",
                "toml",
            ]
            .iter()
            .any(|t| ct.contains(t));
        textual.then_some(Kind::Text)
    }
}

/// One link of the page, numbered in order of first appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub text: String,
    pub url: String,
}

/// The readable form of a page.
#[derive(Debug)]
pub struct Readable {
    pub title: Option<String>,
    pub url: String,
    /// Paragraphs, headings (`## ...`), list items (`- ...`) and preformatted blocks.
    pub blocks: Vec<String>,
    pub links: Vec<Link>,
}

/// Elements whose whole subtree is noise for a reader.
const SKIP: &[&str] = &[
    "head", "script", "style", "noscript", "template", "svg", "math", "nav", "footer", "aside",
    "form", "iframe", "button", "select", "input", "textarea", "canvas", "object", "embed",
    "dialog", "menu",
];

/// Elements that start and end a paragraph of their own.
const BLOCK: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "blockquote",
    "figure",
    "figcaption",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "address",
    "details",
    "summary",
    "hr",
    "body",
    "caption",
    "center",
    "hgroup",
];

/// Text blocks shorter than this in `<main>`/`<article>` send us back to the whole body.
const MAIN_MIN_CHARS: usize = 200;
/// Most links listed after the text.
const LINKS_MAX: usize = 100;

impl Readable {
    /// Extracts the readable text of `body`, resolving links against `url`.
    pub fn extract(kind: Kind, body: &str, url: &str) -> Readable {
        match kind {
            Kind::Text => Readable {
                title: None,
                url: url.to_string(),
                blocks: vec![body.trim().to_string()],
                links: Vec::new(),
            },
            Kind::Html => extract_html(body, url),
        }
    }

    /// The page text joined into one string (list items on consecutive lines).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut previous_item = false;
        for block in &self.blocks {
            let item = block.starts_with("- ");
            if !out.is_empty() {
                out.push_str(if item && previous_item { "\n" } else { "\n\n" });
            }
            out.push_str(block);
            previous_item = item;
        }
        out
    }

    /// What the model reads: header, at most `max_chars` of text from `offset`, links shown in it.
    pub fn render(
        &self,
        offset: usize,
        max_chars: usize,
        body_truncated: bool,
    ) -> Result<String, String> {
        let text = self.text();
        let total = text.chars().count();
        if offset > 0 && offset >= total {
            return Err(format!(
                "offset {offset} is past the end of the page text ({total} characters)"
            ));
        }
        let start = byte_at(&text, offset);
        let mut end = byte_at(&text, offset.saturating_add(max_chars));
        if end < text.len() {
            // Cut at the last paragraph (or line) break in the second half of the window.
            let window = &text[start..end];
            let half = window.len() / 2;
            if let Some(i) = window.rfind("\n\n").filter(|&i| i > half) {
                end = start + i;
            } else if let Some(i) = window.rfind('\n').filter(|&i| i > half) {
                end = start + i;
            }
        }
        let shown = &text[start..end];

        let mut out = String::new();
        if let Some(title) = &self.title {
            out.push_str(&format!("Title: {title}\n"));
        }
        out.push_str(&format!("URL: {}\n\n", self.url));
        out.push_str(if shown.trim().is_empty() {
            "(no readable text on this page)"
        } else {
            shown
        });
        out.push('\n');
        if end < text.len() {
            let shown_end = offset + shown.chars().count();
            out.push_str(&format!(
                "\n[... page cut: showed characters {offset}-{shown_end} of {total}; call fetch_page with offset={shown_end} to read on]\n"
            ));
        }
        if body_truncated {
            out.push_str(
                "\n[the page was larger than the host's download limit; its end is missing]\n",
            );
        }

        let referenced = markers(shown, self.links.len());
        if !referenced.is_empty() {
            out.push_str("\nLinks:\n");
            for &n in referenced.iter().take(LINKS_MAX) {
                let link = &self.links[n - 1];
                if link.text.is_empty() {
                    out.push_str(&format!("[{n}] {}\n", link.url));
                } else {
                    out.push_str(&format!(
                        "[{n}] {}: {}\n",
                        crate::search::clip(&link.text, 80),
                        link.url
                    ));
                }
            }
            if referenced.len() > LINKS_MAX {
                out.push_str(&format!(
                    "[... {} more links not listed]\n",
                    referenced.len() - LINKS_MAX
                ));
            }
        }
        Ok(out)
    }
}

/// Byte index of the `chars`-th character of `text` (its length if past the end).
fn byte_at(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

/// The link numbers `[n]` (1..=count) that appear in `text`, in order, without repeats.
fn markers(text: &str, count: usize) -> Vec<usize> {
    let mut seen = vec![false; count + 1];
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let digits: &str = &rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())];
        if !digits.is_empty()
            && rest[digits.len()..].starts_with(']')
            && let Ok(n) = digits.parse::<usize>()
            && (1..=count).contains(&n)
            && !seen[n]
        {
            seen[n] = true;
            found.push(n);
        }
    }
    found
}

/// Builds paragraphs from the tree, one element event at a time.
struct Walker {
    base: Option<Url>,
    blocks: Vec<String>,
    cur: String,
    pre_depth: usize,
    /// Open anchors: (node, where its text starts in `cur`).
    anchors: Vec<(ego_tree::NodeId, usize)>,
    links: Vec<Link>,
    link_numbers: HashMap<String, usize>,
}

impl Walker {
    fn flush(&mut self) {
        let text = if self.pre_depth > 0 {
            self.cur.trim_end().to_string()
        } else {
            self.cur
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        };
        if !text.trim().is_empty() {
            self.blocks.push(text);
        }
        self.cur.clear();
    }

    fn push_text(&mut self, text: &str) {
        if self.pre_depth > 0 {
            self.cur.push_str(text);
            return;
        }
        if text.starts_with(char::is_whitespace)
            && !self.cur.is_empty()
            && !self.cur.ends_with([' ', '\n'])
        {
            self.cur.push(' ');
        }
        let words = squash(text);
        if !words.is_empty() {
            self.cur.push_str(&words);
            if text.ends_with(char::is_whitespace) {
                self.cur.push(' ');
            }
        }
    }

    /// Numbers a link (the same URL keeps its number) and returns the number.
    fn link(&mut self, href: &str, text: String) -> Option<usize> {
        let href = href.trim();
        let lower = href.to_ascii_lowercase();
        if href.is_empty()
            || href.starts_with('#')
            || ["javascript:", "mailto:", "tel:", "data:"]
                .iter()
                .any(|s| lower.starts_with(s))
        {
            return None;
        }
        let url = match &self.base {
            Some(base) => base.join(href).ok()?,
            None => Url::parse(href).ok()?,
        };
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        let url: String = url.into();
        if let Some(&n) = self.link_numbers.get(&url) {
            return Some(n);
        }
        self.links.push(Link {
            text,
            url: url.clone(),
        });
        let n = self.links.len();
        self.link_numbers.insert(url, n);
        Some(n)
    }
}

fn selector(css: &str) -> Option<Selector> {
    Selector::parse(css).ok()
}

fn extract_html(body: &str, url: &str) -> Readable {
    let doc = Html::parse_document(body);
    let title = selector("title")
        .and_then(|s| {
            doc.select(&s)
                .next()
                .map(|t| squash(&t.text().collect::<String>()))
        })
        .filter(|t| !t.is_empty())
        .or_else(|| {
            selector("h1").and_then(|s| {
                doc.select(&s)
                    .next()
                    .map(|t| squash(&t.text().collect::<String>()))
            })
        })
        .filter(|t| !t.is_empty());

    let base = Url::parse(url).ok();
    let candidates = ["main", "[role=main]", "article", "body"];
    let mut best = None;
    for css in candidates {
        let Some(sel) = selector(css) else { continue };
        let Some(root) = doc.select(&sel).next() else {
            continue;
        };
        let walked = walk(root, base.clone());
        let chars: usize = walked.0.iter().map(|b| b.len()).sum();
        if css == "body" || chars >= MAIN_MIN_CHARS {
            best = Some(walked);
            break;
        }
        if best.is_none() {
            best = Some(walked);
        }
    }
    let (blocks, links) = best.unwrap_or_else(|| walk(doc.root_element(), base));
    Readable {
        title,
        url: url.to_string(),
        blocks,
        links,
    }
}

/// Walks the subtree under `root` without recursion.
fn walk(root: scraper::ElementRef<'_>, base: Option<Url>) -> (Vec<String>, Vec<Link>) {
    use ego_tree::iter::Edge;
    let mut w = Walker {
        base,
        blocks: Vec::new(),
        cur: String::new(),
        pre_depth: 0,
        anchors: Vec::new(),
        links: Vec::new(),
        link_numbers: HashMap::new(),
    };
    let mut skipping: Option<ego_tree::NodeId> = None;
    for edge in root.traverse() {
        match edge {
            Edge::Open(node) => {
                if skipping.is_some() {
                    continue;
                }
                match node.value() {
                    Node::Text(text) => w.push_text(text),
                    Node::Element(el) => {
                        let name = el.name();
                        let hidden = el.attr("hidden").is_some()
                            || el.attr("aria-hidden") == Some("true")
                            || el.attr("role") == Some("navigation")
                            || el.attr("style").is_some_and(|s| {
                                s.replace(' ', "")
                                    .to_ascii_lowercase()
                                    .contains("display:none")
                            });
                        if SKIP.contains(&name) || hidden {
                            skipping = Some(node.id());
                            continue;
                        }
                        match name {
                            "br" => w.cur.push('\n'),
                            "pre" => {
                                w.flush();
                                w.pre_depth += 1;
                            }
                            "a" => {
                                let start = w.cur.len();
                                w.anchors.push((node.id(), start));
                            }
                            // Cells of a row on one line: `a | b`.
                            "td" | "th" if !w.cur.trim().is_empty() && !w.cur.ends_with('\n') => {
                                let end = w.cur.trim_end().len();
                                w.cur.truncate(end);
                                w.cur.push_str(" | ");
                            }
                            "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => w.flush(),
                            _ if BLOCK.contains(&name) => w.flush(),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            Edge::Close(node) => {
                if let Some(id) = skipping {
                    if id == node.id() {
                        skipping = None;
                    }
                    continue;
                }
                let Node::Element(el) = node.value() else {
                    continue;
                };
                let name = el.name();
                match name {
                    "pre" => {
                        w.flush();
                        w.pre_depth = w.pre_depth.saturating_sub(1);
                    }
                    "a" => {
                        let Some(pos) = w.anchors.iter().rposition(|(id, _)| *id == node.id())
                        else {
                            continue;
                        };
                        let (_, start) = w.anchors.remove(pos);
                        let text = w.cur.get(start..).map(squash).unwrap_or_default();
                        let text = if text.is_empty() {
                            el.attr("title").map(squash).unwrap_or_default()
                        } else {
                            text
                        };
                        if let Some(href) = el.attr("href")
                            && let Some(n) = w.link(href, text)
                        {
                            let trimmed = w.cur.trim_end().len();
                            w.cur.truncate(trimmed);
                            w.cur.push_str(&format!(" [{n}]"));
                        }
                    }
                    "li" => {
                        let text = w.cur.trim().to_string();
                        w.cur.clear();
                        if !text.is_empty() {
                            w.blocks.push(format!("- {}", text.replace('\n', " ")));
                        }
                    }
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                        let level = name[1..].parse::<usize>().unwrap_or(1);
                        let text = squash(&w.cur);
                        w.cur.clear();
                        if !text.is_empty() {
                            w.blocks.push(format!("{} {text}", "#".repeat(level)));
                        }
                    }
                    _ if BLOCK.contains(&name) => w.flush(),
                    _ => {}
                }
            }
        }
    }
    w.flush();
    (w.blocks, w.links)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!doctype html><html><head><title> The  Page </title>
      <style>body { color: red }</style><script>var secret = "do not show";</script></head>
      <body>
        <nav><a href="/home">Home</a> <a href="/about">About</a></nav>
        <h1>Main heading</h1>
        <p>First   paragraph with a <a href="/docs/intro">relative link</a> and
           <a href="https://other.example/x">another</a>.</p>
        <div hidden>hidden text</div>
        <h2>Section</h2>
        <ul><li>one</li><li>two <a href="/docs/intro">again</a></li></ul>
        <pre>fn main() {
    println!("hi");
}</pre>
        <table><tr><td>a </td><td> b</td></tr></table>
        <a href="javascript:alert(1)">js</a> <a href="mailto:x@y">mail</a>
        <footer>Copyright noise</footer>
      </body></html>"#;

    #[test]
    fn html_becomes_readable_text_with_numbered_links() {
        let page = Readable::extract(Kind::Html, PAGE, "https://site.example/a/b.html");
        let out = page.render(0, 20_000, false).unwrap();
        assert!(
            out.starts_with("Title: The Page\nURL: https://site.example/a/b.html\n"),
            "{out}"
        );
        assert!(out.contains("# Main heading"), "{out}");
        assert!(out.contains("## Section"), "{out}");
        assert!(
            out.contains("First paragraph with a relative link [1] and another [2]."),
            "{out}"
        );
        assert!(out.contains("- one\n- two again [1]"), "{out}");
        assert!(
            out.contains("fn main() {\n    println!(\"hi\");\n}"),
            "{out}"
        );
        assert!(out.contains("a | b"), "{out}");
        assert!(
            out.contains("[1] relative link: https://site.example/docs/intro"),
            "{out}"
        );
        assert!(
            out.contains("[2] another: https://other.example/x"),
            "{out}"
        );
        for noise in [
            "secret",
            "color: red",
            "Home",
            "hidden text",
            "Copyright",
            "javascript",
            "mailto",
        ] {
            assert!(!out.contains(noise), "{noise} leaked into {out}");
        }
    }

    #[test]
    fn long_pages_are_cut_at_a_paragraph_and_say_how_to_continue() {
        let body: String = (0..400)
            .map(|i| format!("<p>Paragraph number {i} with some words in it.</p>"))
            .collect();
        let page = Readable::extract(
            Kind::Html,
            &format!("<html><body>{body}</body></html>"),
            "https://x.example/",
        );
        let first = page.render(0, 1_000, false).unwrap();
        assert!(first.contains("Paragraph number 0 "));
        assert!(!first.contains("Paragraph number 100 "));
        let note = first
            .lines()
            .find(|l| l.starts_with("[... page cut"))
            .expect("a cut note");
        let next: usize = note
            .rsplit("offset=")
            .next()
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .expect("an offset in the note");
        let second = page.render(next, 1_000, false).unwrap();
        let last_shown = first
            .lines()
            .rev()
            .find(|l| l.starts_with("Paragraph"))
            .unwrap();
        let first_next = second.lines().find(|l| l.starts_with("Paragraph")).unwrap();
        assert_ne!(last_shown, first_next, "the second part repeats the first");
        assert!(page.render(10_000_000, 1_000, false).is_err());
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 10_000;
        let html = format!(
            "<html><body>{}deep{}</body></html>",
            "<div>".repeat(depth),
            "</div>".repeat(depth)
        );
        let page = Readable::extract(Kind::Html, &html, "https://x.example/");
        assert!(page.text().contains("deep"));
    }

    #[test]
    fn main_element_is_preferred_when_it_has_the_content() {
        let filler = "Real content sentence. ".repeat(20);
        let html =
            format!("<html><body><div>Site chrome</div><main><p>{filler}</p></main></body></html>");
        let page = Readable::extract(Kind::Html, &html, "https://x.example/");
        assert!(!page.text().contains("Site chrome"));
        assert!(page.text().contains("Real content"));
    }

    #[test]
    fn content_types_are_classified() {
        assert_eq!(
            Kind::from_content_type("text/html; charset=utf-8", ""),
            Some(Kind::Html)
        );
        assert_eq!(
            Kind::from_content_type("application/json", "{}"),
            Some(Kind::Text)
        );
        assert_eq!(
            Kind::from_content_type("", "<!DOCTYPE html><html>"),
            Some(Kind::Html)
        );
        assert_eq!(Kind::from_content_type("image/png", "\u{0}PNG"), None);
        assert_eq!(Kind::from_content_type("application/pdf", "%PDF"), None);
    }
}

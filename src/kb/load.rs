//! Loaders: turn a file or a fetched page into sections of paragraphs, each
//! knowing its heading path and line numbers, for the splitter.
//!
//! Plain text and source code split on blank lines; Markdown also on
//! headings (code fences stay whole); HTML is reduced with scraper to its
//! headings and block elements. PDF text is extracted page by page with
//! `pdf-extract` (pure Rust, on lopdf), each page a section headed
//! `page N`. That parser panics on some malformed files, so it runs on a
//! thread of its own whose panics are caught, kept off the terminal, and
//! reported as an unreadable PDF with the way round it (`pdftotext`).

use std::path::Path;

use scraper::{ElementRef, Html, Selector};

/// What a document was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// Plain text.
    Text,
    /// Markdown.
    Markdown,
    /// An HTML page.
    Html,
    /// Source code.
    Code,
    /// A PDF document (text extracted page by page).
    Pdf,
}

/// A paragraph and the line it starts on (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Paragraph {
    /// Its text.
    pub text: String,
    /// First line.
    pub line: usize,
    /// Last line.
    pub end_line: usize,
}

/// A run of paragraphs under one heading path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// `Title > Subtitle`, or empty.
    pub heading: String,
    /// Its paragraphs in order.
    pub paragraphs: Vec<Paragraph>,
}

/// Why a document cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the PDF cannot be read ({0}); if it is a scan, encrypted or damaged, convert it to text first (`pdftotext FILE.pdf`) and add the .txt"
    )]
    Pdf(String),
    #[error("it looks binary (not UTF-8 text)")]
    Binary,
}

const CODE_EXT: &[&str] = &[
    "rs", "py", "js", "ts", "tsx", "jsx", "go", "java", "kt", "c", "h", "cc", "cpp", "hpp", "cs",
    "rb", "php", "swift", "scala", "sh", "bash", "zsh", "sql", "lua", "pl", "r", "toml", "yaml",
    "yml", "json", "ini", "cfg", "css", "scss", "vue", "svelte", "zig", "hs", "ml", "ex", "exs",
];

/// The kind for a file name (or a URL's content type when `content_type` is set).
pub fn kind_for(path: &str, content_type: Option<&str>) -> DocKind {
    if let Some(ct) = content_type {
        if ct.contains("html") {
            return DocKind::Html;
        }
        if ct.contains("markdown") {
            return DocKind::Markdown;
        }
        if ct.contains("pdf") {
            return DocKind::Pdf;
        }
    }
    let ext = Path::new(path.split(['?', '#']).next().unwrap_or(path))
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "md" | "markdown" | "mdx" => DocKind::Markdown,
        "html" | "htm" | "xhtml" => DocKind::Html,
        "pdf" => DocKind::Pdf,
        e if CODE_EXT.contains(&e) => DocKind::Code,
        _ => DocKind::Text,
    }
}

/// Decode `bytes` and load them as `kind`.
pub fn load(name: &str, bytes: &[u8], kind: DocKind) -> Result<Vec<Section>, LoadError> {
    if bytes.starts_with(b"%PDF")
        || kind == DocKind::Pdf
        || name.to_ascii_lowercase().ends_with(".pdf")
    {
        return pdf(bytes);
    }
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return Err(LoadError::Binary);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| LoadError::Binary)?;
    Ok(match kind {
        DocKind::Text | DocKind::Code => plain(text),
        DocKind::Markdown => markdown(text),
        DocKind::Html => html(text),
        // Handled above; a PDF's bytes never reach here.
        DocKind::Pdf => plain(text),
    })
}

/// Name of the threads that run the PDF parser (their panics stay quiet).
const PDF_THREAD: &str = "kb-pdf-extract";

/// Each page's text as a section headed `page N` (paragraphs and line
/// numbers within the page).
fn pdf(bytes: &[u8]) -> Result<Vec<Section>, LoadError> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(PDF_THREAD) {
                previous(info);
            }
        }));
    });
    let owned = bytes.to_vec();
    let pages = std::thread::Builder::new()
        .name(PDF_THREAD.into())
        .spawn(move || pdf_extract::extract_text_from_mem_by_pages(&owned))
        .map_err(|e| LoadError::Pdf(format!("cannot start the reader: {e}")))?
        .join()
        .map_err(|_| LoadError::Pdf("the PDF parser failed on it".into()))?
        .map_err(|e| LoadError::Pdf(e.to_string()))?;
    let sections: Vec<Section> = pages
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut page = plain(text).into_iter().next().unwrap_or_default();
            page.heading = format!("page {}", i + 1);
            page
        })
        .filter(|s| !s.paragraphs.is_empty())
        .collect();
    if sections.is_empty() {
        return Err(LoadError::Pdf(
            "it has no extractable text; a scanned PDF needs OCR".into(),
        ));
    }
    Ok(sections)
}

fn push_para(section: &mut Section, lines: &mut Vec<&str>, start: usize) {
    let text = lines.join("\n").trim().to_string();
    if !text.is_empty() {
        section.paragraphs.push(Paragraph {
            text,
            line: start,
            end_line: start + lines.len().saturating_sub(1),
        });
    }
    lines.clear();
}

fn plain(text: &str) -> Vec<Section> {
    let mut section = Section::default();
    let mut lines = Vec::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            push_para(&mut section, &mut lines, start);
        } else {
            if lines.is_empty() {
                start = i + 1;
            }
            lines.push(line);
        }
    }
    push_para(&mut section, &mut lines, start);
    vec![section]
}

fn markdown(text: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut section = Section::default();
    let mut lines = Vec::new();
    let mut start = 1;
    let mut fence = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            if lines.is_empty() {
                start = i + 1;
            }
            lines.push(line);
            fence = !fence;
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        let is_heading = !fence
            && (1..=6).contains(&level)
            && trimmed[level..].starts_with(' ')
            && line.len() - trimmed.len() < 4;
        if is_heading {
            push_para(&mut section, &mut lines, start);
            if !section.paragraphs.is_empty() {
                sections.push(std::mem::take(&mut section));
            }
            headings.retain(|(l, _)| *l < level);
            headings.push((
                level,
                trimmed[level..].trim().trim_end_matches('#').trim().into(),
            ));
            section.heading = headings
                .iter()
                .map(|(_, h)| h.as_str())
                .collect::<Vec<_>>()
                .join(" > ");
        } else if !fence && line.trim().is_empty() {
            push_para(&mut section, &mut lines, start);
        } else {
            if lines.is_empty() {
                start = i + 1;
            }
            lines.push(line);
        }
    }
    push_para(&mut section, &mut lines, start);
    if !section.paragraphs.is_empty() {
        sections.push(section);
    }
    sections
}

const BLOCKS: &str = "h1,h2,h3,h4,h5,h6,p,li,pre,blockquote,td,th,dt,dd,figcaption";

fn html(text: &str) -> Vec<Section> {
    let doc = Html::parse_document(text);
    let Ok(blocks) = Selector::parse(BLOCKS) else {
        return Vec::new();
    };
    let block_names = [
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "p",
        "li",
        "pre",
        "blockquote",
        "td",
        "th",
        "dt",
        "dd",
        "figcaption",
    ];
    let mut sections = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut section = Section::default();
    if let Ok(title) = Selector::parse("title")
        && let Some(t) = doc.select(&title).next()
    {
        section.heading = collapse(&t.text().collect::<String>());
    }
    let mut n = 0;
    for el in doc.select(&blocks) {
        // Text of nested blocks (a <p> inside an <li>) is taken with the outer one.
        let nested = el
            .ancestors()
            .filter_map(ElementRef::wrap)
            .any(|a| block_names.contains(&a.value().name()));
        if nested {
            continue;
        }
        let name = el.value().name();
        let body = if name == "pre" {
            el.text().collect::<String>().trim().to_string()
        } else {
            collapse(&el.text().collect::<String>())
        };
        if body.is_empty() {
            continue;
        }
        if let Some(level) = name.strip_prefix('h').and_then(|l| l.parse::<usize>().ok()) {
            if !section.paragraphs.is_empty() {
                sections.push(std::mem::take(&mut section));
            }
            headings.retain(|(l, _)| *l < level);
            headings.push((level, body));
            section.heading = headings
                .iter()
                .map(|(_, h)| h.as_str())
                .collect::<Vec<_>>()
                .join(" > ");
            continue;
        }
        n += 1;
        let text = if name == "li" {
            format!("- {body}")
        } else {
            body
        };
        section.paragraphs.push(Paragraph {
            text,
            line: 0,
            end_line: n,
        });
    }
    if !section.paragraphs.is_empty() {
        sections.push(section);
    }
    sections
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_sections_carry_heading_paths_and_keep_fences_whole() {
        let md = "# Guide\n\nIntro text.\n\n## Install\n\nRun this:\n\n```sh\ncargo build\n\ncargo test\n```\n\n# Other\nx\n";
        let s = load("a.md", md.as_bytes(), DocKind::Markdown).unwrap();
        assert_eq!(s[0].heading, "Guide");
        assert_eq!(s[1].heading, "Guide > Install");
        assert_eq!(s[1].paragraphs[0].line, 7);
        assert!(
            s[1].paragraphs[1]
                .text
                .contains("cargo build\n\ncargo test")
        );
        assert_eq!(s[2].heading, "Other");
    }

    #[test]
    fn html_keeps_headings_and_blocks_but_not_scripts() {
        let page = "<html><head><title>T</title><script>var x=1;</script></head><body><h1>Main</h1><p>Hello <b>world</b>.</p><ul><li><p>one</p></li></ul><h2>Sub</h2><p>deep</p></body></html>";
        let s = load("p.html", page.as_bytes(), DocKind::Html).unwrap();
        assert_eq!(s[0].heading, "Main");
        assert_eq!(s[0].paragraphs[0].text, "Hello world.");
        assert_eq!(s[0].paragraphs[1].text, "- one");
        assert_eq!(s[1].heading, "Main > Sub");
        assert!(!format!("{s:?}").contains("var x"));
    }

    #[test]
    fn binary_files_and_unreadable_pdfs_are_refused_with_a_reason() {
        assert!(matches!(
            load("x.bin", b"ab\0cd", DocKind::Text),
            Err(LoadError::Binary)
        ));
        let e = load("x.pdf", b"%PDF-1.7", DocKind::Text).unwrap_err();
        assert!(e.to_string().contains("pdftotext"), "{e}");
        // Garbage after the header: an error, not a crash.
        let mut junk = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\n".to_vec();
        junk.extend(std::iter::repeat_n(b'x', 500));
        assert!(matches!(
            load("y.pdf", &junk, DocKind::Pdf),
            Err(LoadError::Pdf(_))
        ));
    }

    #[test]
    fn a_pdf_becomes_one_section_per_page_with_its_text() {
        let bytes = include_bytes!("../../tests/fixtures/kb/report.pdf");
        assert_eq!(kind_for("q3/report.PDF", None), DocKind::Pdf);
        assert_eq!(kind_for("x", Some("application/pdf")), DocKind::Pdf);
        let sections = load("report.pdf", bytes, DocKind::Pdf).unwrap();
        assert_eq!(sections.len(), 2, "{sections:?}");
        assert_eq!(sections[0].heading, "page 1");
        assert_eq!(sections[1].heading, "page 2");
        let page2: String = sections[1]
            .paragraphs
            .iter()
            .map(|p| p.text.as_str())
            .collect();
        assert!(
            page2.contains("backup tapes are stored in the Lisbon"),
            "{page2}"
        );
        assert_eq!(kind_for("src/main.rs", None), DocKind::Code);
        assert_eq!(
            kind_for("http://h/x", Some("text/html; charset=utf-8")),
            DocKind::Html
        );
    }
}

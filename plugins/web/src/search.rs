//! Search engines: building their URLs and reading their answers.
//!
//! Kept free of host calls so the parsers can be tested with `cargo test` on
//! the build machine, against saved pages.

use scraper::{ElementRef, Html, Selector};
use serde::Deserialize;
use url::Url;

/// One search result as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub title: String,
    pub url: String,
    pub snippet: String,
}

/// `{base}/search?q=..&format=json` for a SearXNG instance.
pub fn searxng_url(base: &str, query: &str) -> Result<String, String> {
    let base = base.trim().trim_end_matches('/');
    let mut url = Url::parse(&format!("{base}/search")).map_err(|e| {
        format!(
            "AGENT_WEB_SEARCH_URL `{base}` is not a valid URL ({e}); use e.g. http://127.0.0.1:8888"
        )
    })?;
    url.query_pairs_mut()
        .append_pair("q", query)
        .append_pair("format", "json");
    Ok(url.into())
}

/// DuckDuckGo's HTML results page (or a stand-in) with `q` added.
pub fn duckduckgo_url(base: &str, query: &str) -> Result<String, String> {
    let mut url = Url::parse(base.trim())
        .map_err(|e| format!("AGENT_WEB_SEARCH_URL `{base}` is not a valid URL ({e})"))?;
    url.query_pairs_mut().append_pair("q", query);
    Ok(url.into())
}

#[derive(Deserialize)]
struct SearxAnswer {
    #[serde(default)]
    results: Vec<SearxResult>,
}

#[derive(Deserialize)]
struct SearxResult {
    #[serde(default)]
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: Option<String>,
}

/// Reads SearXNG's JSON answer.
pub fn parse_searxng(body: &str) -> Result<Vec<Hit>, String> {
    let answer: SearxAnswer = serde_json::from_str(body).map_err(|e| {
        format!("SearXNG's answer is not the JSON expected ({e}); is AGENT_WEB_SEARCH_URL the instance's base URL?")
    })?;
    Ok(answer
        .results
        .into_iter()
        .filter(|r| !r.url.is_empty())
        .map(|r| Hit {
            title: squash(&r.title),
            url: r.url,
            snippet: squash(r.content.as_deref().unwrap_or("")),
        })
        .collect())
}

/// Reads DuckDuckGo's HTML results page: `.result` blocks, ads skipped, redirect links unwrapped.
pub fn parse_duckduckgo(body: &str) -> Result<Vec<Hit>, String> {
    let doc = Html::parse_document(body);
    let result = selector(".result");
    let title = selector(".result__a");
    let snippet = selector(".result__snippet");
    let mut hits = Vec::new();
    for block in doc.select(&result) {
        let classes: Vec<&str> = block.value().classes().collect();
        if classes
            .iter()
            .any(|c| *c == "result--ad" || *c == "result--no-result")
        {
            continue;
        }
        let Some(link) = block.select(&title).next() else {
            continue;
        };
        let Some(url) = link.attr("href").and_then(unwrap_duckduckgo_link) else {
            continue;
        };
        hits.push(Hit {
            title: text_of(link),
            url,
            snippet: block
                .select(&snippet)
                .next()
                .map(text_of)
                .unwrap_or_default(),
        });
    }
    if hits.is_empty() && (body.contains("anomaly-modal") || body.contains("challenge-form")) {
        return Err(
            "DuckDuckGo answered with a bot check instead of results; wait a minute, or configure a SearXNG engine"
                .to_string(),
        );
    }
    Ok(hits)
}

/// Turns DuckDuckGo's `//duckduckgo.com/l/?uddg=<target>&rut=..` into the target itself.
pub fn unwrap_duckduckgo_link(href: &str) -> Option<String> {
    let absolute = if href.starts_with("//") {
        format!("https:{href}")
    } else {
        href.to_string()
    };
    let url = Url::parse(&absolute).ok()?;
    if let Some((_, target)) = url.query_pairs().find(|(k, _)| k == "uddg") {
        let target = Url::parse(&target).ok()?;
        return matches!(target.scheme(), "http" | "https").then(|| target.into());
    }
    matches!(url.scheme(), "http" | "https").then(|| url.into())
}

/// The numbered list the model reads.
pub fn render(query: &str, hits: &[Hit], max: usize) -> String {
    if hits.is_empty() {
        return format!("no results for `{query}`; try other words");
    }
    let mut out = format!("Results for `{query}`:\n");
    for (i, hit) in hits.iter().take(max).enumerate() {
        let title = if hit.title.is_empty() {
            "(no title)"
        } else {
            &hit.title
        };
        out.push_str(&format!("\n{}. {}\n   {}\n", i + 1, title, hit.url));
        if !hit.snippet.is_empty() {
            out.push_str(&format!("   {}\n", clip(&hit.snippet, 300)));
        }
    }
    out.push_str("\nUse fetch_page with a URL to read a result.");
    out
}

/// A selector from a literal known to be valid.
fn selector(css: &str) -> Selector {
    // The literals above are valid CSS; a typo would fail every test at once.
    Selector::parse(css).unwrap_or_else(|_| panic!("invalid built-in selector {css}"))
}

fn text_of(element: ElementRef<'_>) -> String {
    squash(&element.text().collect::<String>())
}

/// Collapses runs of whitespace to one space and trims.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Shortens `text` to at most `max` characters, marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDG_PAGE: &str = r#"<html><body><div id="links">
      <div class="result results_links result--ad"><a class="result__a" href="https://ads.example/x">Buy now</a></div>
      <div class="result results_links results_links_deep web-result">
        <h2 class="result__title"><a rel="nofollow" class="result__a"
          href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.rust-lang.org%2Flearn%3Fa%3D1%26b%3D2&amp;rut=abc">Learn <b>Rust</b></a></h2>
        <a class="result__snippet" href="//duckduckgo.com/l/?uddg=x">A language empowering
          everyone to build <b>reliable</b> software.</a>
      </div>
      <div class="result results_links web-result">
        <h2 class="result__title"><a class="result__a" href="https://doc.rust-lang.org/book/">The Book</a></h2>
      </div>
    </div></body></html>"#;

    #[test]
    fn duckduckgo_results_skip_ads_and_unwrap_redirects() {
        let hits = parse_duckduckgo(DDG_PAGE).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].title, "Learn Rust");
        assert_eq!(hits[0].url, "https://www.rust-lang.org/learn?a=1&b=2");
        assert_eq!(
            hits[0].snippet,
            "A language empowering everyone to build reliable software."
        );
        assert_eq!(hits[1].url, "https://doc.rust-lang.org/book/");
        assert_eq!(hits[1].snippet, "");
    }

    #[test]
    fn duckduckgo_bot_check_is_an_error() {
        let page =
            r#"<html><body><form id="challenge-form" class="anomaly-modal"></form></body></html>"#;
        assert!(parse_duckduckgo(page).unwrap_err().contains("bot check"));
    }

    #[test]
    fn redirect_to_a_non_web_scheme_is_dropped() {
        assert_eq!(
            unwrap_duckduckgo_link("//duckduckgo.com/l/?uddg=javascript%3Aalert(1)"),
            None
        );
    }

    #[test]
    fn searxng_json_is_read() {
        let body = r#"{"query":"q","results":[{"url":"https://a.example/","title":" A  page ","content":"about\nA","engine":"x"},{"url":"","title":"no url"},{"url":"https://b.example/","title":"B"}]}"#;
        let hits = parse_searxng(body).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].title, "A page");
        assert_eq!(hits[0].snippet, "about A");
        assert_eq!(hits[1].snippet, "");
        assert!(
            parse_searxng("<html>")
                .unwrap_err()
                .contains("not the JSON")
        );
    }

    #[test]
    fn urls_are_built_with_the_query_encoded() {
        assert_eq!(
            searxng_url("http://127.0.0.1:8888/", "a&b c").unwrap(),
            "http://127.0.0.1:8888/search?q=a%26b+c&format=json"
        );
        assert_eq!(
            searxng_url("http://h/searx", "x").unwrap(),
            "http://h/searx/search?q=x&format=json"
        );
        assert_eq!(
            duckduckgo_url("https://html.duckduckgo.com/html/", "rust wasm").unwrap(),
            "https://html.duckduckgo.com/html/?q=rust+wasm"
        );
        assert!(searxng_url("not a url", "x").is_err());
    }

    #[test]
    fn render_numbers_results_and_respects_max() {
        let hit = |n: &str| Hit {
            title: n.to_string(),
            url: format!("https://{n}.example/"),
            snippet: String::new(),
        };
        let out = render("q", &[hit("a"), hit("b"), hit("c")], 2);
        assert!(out.contains("1. a\n   https://a.example/"));
        assert!(out.contains("2. b"));
        assert!(!out.contains("c.example"));
        assert!(render("q", &[], 5).starts_with("no results"));
    }
}

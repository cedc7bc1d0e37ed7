//! `web`: the agent's built-in plugin for searching the web and reading pages.
//!
//! Tools: `web_search(query, max_results?)` and `fetch_page(url, max_chars?, offset?)`
//! (their names are part of the public interface; keep them).
//!
//! The sandbox has no sockets: every request goes through the host's imported
//! `http-fetch`, which checks each hop (redirects too) against the hosts this
//! plugin was granted and refuses private addresses. HTML is parsed here, inside
//! the sandbox, with `scraper`, so a hostile page can at worst waste this
//! plugin's own time and memory, both capped by the host.
//!
//! The search engine is configured by the host through WASI environment
//! variables (the plugin reads nothing else):
//! - `AGENT_WEB_ENGINE`: `duckduckgo` (the default) or `searxng`.
//! - `AGENT_WEB_SEARCH_URL`: for `searxng`, the instance's base URL
//!   (`http://127.0.0.1:8888`; `/search?q=..&format=json` is appended); for
//!   `duckduckgo`, the results page to use instead of
//!   `https://html.duckduckgo.com/html/` (tests point it at a fixture server).

mod page;
mod search;

use serde::Deserialize;
use serde::de::DeserializeOwned;

wit_bindgen::generate!({
    path: "../wit",
    world: "plugin",
});

use agent::plugin::host::{LogLevel, http_fetch, log};
use agent::plugin::types::{HttpRequest, HttpResponse};
use exports::agent::plugin::tools::{Guest, ToolInfo};

/// Sent with every request: some engines refuse clients that send no agent.
const USER_AGENT: &str = "Mozilla/5.0 (compatible; agent-web-plugin/0.1; +https://github.com/)";
/// DuckDuckGo's JavaScript-free results page.
const DUCKDUCKGO_URL: &str = "https://html.duckduckgo.com/html/";
/// Results returned by `web_search` unless the model asks for another number.
const RESULTS_DEFAULT: usize = 5;
/// Most results `web_search` returns.
const RESULTS_MAX: usize = 20;
/// Characters of page text `fetch_page` returns unless told otherwise.
const PAGE_DEFAULT: usize = 20_000;
/// Bounds for `fetch_page`'s `max_chars`.
const PAGE_MIN: usize = 1_000;
const PAGE_MAX: usize = 100_000;

struct Web;

impl Guest for Web {
    fn describe() -> Vec<ToolInfo> {
        vec![
            ToolInfo {
                name: "web_search".to_string(),
                description: "Search the web. Returns a numbered list of results with title, URL and snippet.".to_string(),
                args_schema: r#"{"type":"object","properties":{"query":{"type":"string","minLength":1,"description":"What to search for"},"max_results":{"type":"integer","minimum":1,"maximum":20,"description":"How many results; default 5"}},"required":["query"],"additionalProperties":false}"#.to_string(),
            },
            ToolInfo {
                name: "fetch_page".to_string(),
                description: "Fetch a web page and return it as readable text: title, headings, paragraphs and a numbered list of its links. Long pages come in parts: use offset to continue.".to_string(),
                args_schema: r#"{"type":"object","properties":{"url":{"type":"string","description":"Absolute http:// or https:// URL"},"max_chars":{"type":"integer","minimum":1000,"maximum":100000,"description":"Most characters of page text to return; default 20000"},"offset":{"type":"integer","minimum":0,"description":"Character offset in the page text to start at; default 0"}},"required":["url"],"additionalProperties":false}"#.to_string(),
            },
        ]
    }

    fn invoke(tool: String, args_json: String) -> Result<String, String> {
        match tool.as_str() {
            "web_search" => web_search(args(&tool, &args_json)?),
            "fetch_page" => fetch_page(args(&tool, &args_json)?),
            other => Err(format!(
                "unknown tool `{other}`; this plugin offers web_search and fetch_page"
            )),
        }
    }
}

export!(Web);

/// Parses a tool's arguments, turning serde's message into one the model can act on.

/// The error for a search engine that cannot be reached: what failed, and,
/// for the model, that trying again will not help (Qwen2.5-Coder-1.5B
/// repeated an unreachable search until the loop guard stopped its run).
fn unreachable(engine: &str, base: &str, e: &str) -> String {
    format!(
        "web_search could not reach {engine} at {base}: {e}. Web search does not work from here right now: do not search again in this run; work with the files and tools you have"
    )
}

fn args<T: DeserializeOwned>(tool: &str, json: &str) -> Result<T, String> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| format!("invalid arguments for {tool}: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    max_results: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    url: String,
    max_chars: Option<usize>,
    offset: Option<usize>,
}

/// Reads a WASI environment variable the host set, treating empty as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// One GET through the host, with the headers every request carries.
fn get(url: &str, accept: &str) -> Result<HttpResponse, String> {
    let request = HttpRequest {
        method: "GET".to_string(),
        url: url.to_string(),
        headers: vec![
            ("user-agent".to_string(), USER_AGENT.to_string()),
            ("accept".to_string(), accept.to_string()),
        ],
        body: None,
    };
    log(LogLevel::Debug, &format!("GET {url}"));
    http_fetch(&request)
}

/// The value of a response header, by case-insensitive name.
fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn web_search(args: SearchArgs) -> Result<String, String> {
    let query = args.query.trim();
    if query.is_empty() {
        return Err("web_search needs a non-empty query".to_string());
    }
    let max = args
        .max_results
        .unwrap_or(RESULTS_DEFAULT)
        .clamp(1, RESULTS_MAX);
    let engine = env("AGENT_WEB_ENGINE").unwrap_or_else(|| "duckduckgo".to_string());
    let results = match engine.trim().to_ascii_lowercase().as_str() {
        "searxng" => {
            let base = env("AGENT_WEB_SEARCH_URL").ok_or(
                "the searxng engine needs AGENT_WEB_SEARCH_URL, the instance's base URL (for example http://127.0.0.1:8888); set it in the agent's web plugin settings",
            )?;
            let url = search::searxng_url(&base, query)?;
            let response = get(&url, "application/json")
                .map_err(|e| unreachable("SearXNG", &base, &e))?;
            if response.status == 403 {
                return Err(format!(
                    "SearXNG at {base} refused the JSON API (HTTP 403): enable `json` under search.formats in its settings.yml"
                ));
            }
            if !(200..300).contains(&response.status) {
                return Err(format!(
                    "SearXNG at {base} answered HTTP {}; try again later or check the instance",
                    response.status
                ));
            }
            search::parse_searxng(&String::from_utf8_lossy(&response.body))?
        }
        "duckduckgo" | "ddg" => {
            let base = env("AGENT_WEB_SEARCH_URL").unwrap_or_else(|| DUCKDUCKGO_URL.to_string());
            let url = search::duckduckgo_url(&base, query)?;
            let response = get(&url, "text/html")
                .map_err(|e| unreachable("DuckDuckGo", &base, &e))?;
            // DuckDuckGo answers 202 with a challenge page when it suspects a bot.
            if response.status == 202 || response.status == 429 || response.status == 403 {
                return Err(format!(
                    "DuckDuckGo refused the search (HTTP {}), most likely rate limiting; wait a minute, or configure a SearXNG engine",
                    response.status
                ));
            }
            if !(200..300).contains(&response.status) {
                return Err(format!(
                    "DuckDuckGo answered HTTP {}; try again later",
                    response.status
                ));
            }
            search::parse_duckduckgo(&String::from_utf8_lossy(&response.body))?
        }
        other => {
            return Err(format!(
                "unknown search engine `{other}` in AGENT_WEB_ENGINE; use duckduckgo or searxng"
            ));
        }
    };
    Ok(search::render(query, &results, max))
}

fn fetch_page(args: FetchArgs) -> Result<String, String> {
    let parsed = url::Url::parse(args.url.trim()).map_err(|e| {
        format!(
            "invalid URL `{}`: {e}; give an absolute http:// or https:// URL",
            args.url
        )
    })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!(
            "fetch_page reads http:// and https:// pages only, not `{}:`",
            parsed.scheme()
        ));
    }
    let max_chars = args
        .max_chars
        .unwrap_or(PAGE_DEFAULT)
        .clamp(PAGE_MIN, PAGE_MAX);
    let offset = args.offset.unwrap_or(0);
    let response = get(
        parsed.as_str(),
        "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
    )
    .map_err(|e| format!("could not fetch {parsed}: {e}"))?;
    if response.status >= 400 {
        return Err(format!(
            "{} answered HTTP {}{}",
            response.final_url,
            response.status,
            match response.status {
                404 | 410 => " (page not found)",
                401 | 403 => " (access denied)",
                429 => " (rate limited; try later)",
                _ => "",
            }
        ));
    }
    let content_type = header(&response, "content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = String::from_utf8_lossy(&response.body);
    let kind = page::Kind::from_content_type(&content_type, &body).ok_or_else(|| {
        format!(
            "fetch_page reads HTML and text pages; {} is `{}` ({} bytes)",
            response.final_url,
            content_type,
            response.body.len()
        )
    })?;
    let final_url = if response.final_url.is_empty() {
        parsed.to_string()
    } else {
        response.final_url.clone()
    };
    let readable = page::Readable::extract(kind, &body, &final_url);
    readable.render(offset, max_chars, response.truncated)
}

//! MCP servers as tools (the client side of the Model Context Protocol,
//! through the official Rust SDK, `rmcp`). A server listed under `mcp:` in
//! the config is started by agent as a process speaking MCP on stdio, with
//! only the environment variables the config names (and `PATH`), or
//! reached over streamable HTTP at its `url` (with a bearer token from a
//! named environment variable); its tools join the registry as
//! `SERVER.TOOL`, with the server's description and input schema, so they
//! are part of the constrained action schema.
//!
//! Such a server runs outside our sandbox: its tools' default approval is
//! `ask` (`approve:` per server changes that), the description says so,
//! and what they return is untrusted content for the taint rule. Output is
//! capped (text, structured content; images and resources are described,
//! not dumped). A server that crashes, hangs past its timeout or sends what
//! cannot be read becomes an error observation and is restarted at most
//! once per run; its process dies with agent (`kill_on_drop`, and on Linux
//! a parent-death signal, so `kill -9` of agent leaves no server behind).
//!
//! The other direction, agent's own tools offered to MCP clients, is
//! [`serve`].

pub mod serve;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tools::{Tool, ToolClass, ToolContext, ToolError, ToolSpec};

/// Most bytes of a result kept before the observation cap (a flooding
/// server's output is cut here, then capped head + tail by the loop).
const MAX_RESULT_BYTES: usize = 1 << 20;

/// One `mcp:` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The prefix of its tools (`SERVER.TOOL`): a-z, 0-9 and `_`.
    pub name: String,
    /// The program to start (stdio transport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Names of the environment variables passed through (with `PATH`);
    /// nothing else of agent's environment reaches the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// A server already running, over streamable HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `url`: the environment variable whose value is sent as the
    /// bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The tools offered (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// What its tools do, for approvals: read, write, exec or network.
    #[serde(default = "exec")]
    pub class: String,
    /// A class per tool, over `class`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, String>,
    /// Seconds a call (and the start) may take.
    #[serde(default = "sixty")]
    pub timeout_secs: u64,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The approval of its tools when no `approvals.tools.NAME` says
    /// otherwise: `auto`, `ask` (the default: the server runs unsandboxed)
    /// or `deny`.
    #[serde(default = "ask")]
    pub approve: String,
}

fn exec() -> String {
    "exec".into()
}
fn sixty() -> u64 {
    60
}
fn yes() -> bool {
    true
}
fn ask() -> String {
    "ask".into()
}

/// A configuration or connection problem.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("mcp server `{name}`: {problem}")]
    Config { name: String, problem: String },
    #[error("mcp server `{name}` did not start: {reason}")]
    Start { name: String, reason: String },
}

/// The class a config word names.
fn class_of(word: &str) -> Option<ToolClass> {
    match word {
        "read" => Some(ToolClass::Read),
        "write" => Some(ToolClass::Write),
        "exec" | "execute" => Some(ToolClass::Execute),
        "network" => Some(ToolClass::Network),
        _ => None,
    }
}

impl ServerConfig {
    /// Everything wrong with the entry, in words that name the key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let name_ok = {
            let mut c = self.name.chars();
            matches!(c.next(), Some(ch) if ch.is_ascii_lowercase())
                && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        };
        if !name_ok {
            p.push("`name` must be a-z, 0-9 and `_`, starting with a letter (it prefixes the tools' names)".into());
        }
        match (&self.command, &self.url) {
            (None, None) => {
                p.push("give `command` (a program speaking MCP on stdio) or `url`".into())
            }
            (Some(_), Some(_)) => p.push("give `command` or `url`, not both".into()),
            (None, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                p.push(format!("`url` is `{u}`: give an http:// or https:// URL"));
            }
            (Some(c), None) if c.trim().is_empty() => p.push("`command` is empty".into()),
            _ => {}
        }
        for word in std::iter::once(&self.class).chain(self.classes.values()) {
            if class_of(word).is_none() {
                p.push(format!("class `{word}`: use read, write, exec or network"));
            }
        }
        if self.token_env.is_some() && self.url.is_none() {
            p.push("`token_env` goes with `url` (a stdio server gets `env` instead)".into());
        }
        if !matches!(self.approve.as_str(), "auto" | "ask" | "deny") {
            p.push(format!(
                "`approve` is `{}`: use auto, ask or deny",
                self.approve
            ));
        }
        if self.timeout_secs == 0 {
            p.push("`timeout_secs` is 0".into());
        }
        p
    }

    fn class(&self, tool: &str) -> ToolClass {
        self.classes
            .get(tool)
            .or(Some(&self.class))
            .and_then(|w| class_of(w))
            .unwrap_or(ToolClass::Execute)
    }

    /// The `source` its tools carry (`mcp:NAME`).
    pub fn source(&self) -> String {
        format!("mcp:{}", self.name)
    }
}

type Connection = RunningService<rmcp::RoleClient, ()>;

/// A started (or restartable) server.
pub struct Server {
    config: ServerConfig,
    conn: tokio::sync::Mutex<Option<Connection>>,
    /// Failures per run: the second in one run stops the restarts.
    failures: std::sync::Mutex<HashMap<String, u32>>,
}

/// A tool of a server, as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub description: String,
    pub schema: Value,
}

impl Server {
    /// Start `config`'s server and list its tools.
    pub async fn start(config: ServerConfig) -> Result<(Arc<Self>, Vec<Listed>), McpError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(McpError::Config {
                name: config.name.clone(),
                problem: problems.join("; "),
            });
        }
        let conn = connect(&config).await?;
        let limit = Duration::from_secs(config.timeout_secs);
        let tools = tokio::time::timeout(limit, conn.list_all_tools())
            .await
            .map_err(|_| {
                start_error(
                    &config,
                    format!("it did not list its tools within {} s", config.timeout_secs),
                )
            })?
            .map_err(|e| start_error(&config, format!("listing its tools failed: {e}")))?;
        let listed = tools
            .into_iter()
            .map(|t| Listed {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                schema: Value::Object((*t.input_schema).clone()),
            })
            .collect();
        Ok((
            Arc::new(Self {
                config,
                conn: tokio::sync::Mutex::new(Some(conn)),
                failures: Default::default(),
            }),
            listed,
        ))
    }

    /// The tools of this server that the config offers, as registry tools.
    pub fn tools(self: &Arc<Self>, listed: &[Listed]) -> (Vec<Arc<dyn Tool>>, Vec<String>) {
        let mut out: Vec<Arc<dyn Tool>> = Vec::new();
        let mut problems = Vec::new();
        if let Some(allow) = &self.config.tools {
            for name in allow {
                if !listed.iter().any(|l| &l.name == name) {
                    problems.push(format!(
                        "the server has no tool `{name}` (it lists {})",
                        listed
                            .iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        for tool in listed {
            if self
                .config
                .tools
                .as_ref()
                .is_some_and(|a| !a.contains(&tool.name))
            {
                continue;
            }
            let mut schema = tool.schema.clone();
            if let Some(map) = schema.as_object_mut() {
                map.entry("type").or_insert(Value::String("object".into()));
            }
            let description = crate::sanitize::one_line(
                &crate::sanitize::strip_terminal_escapes(&tool.description),
                400,
            );
            out.push(Arc::new(McpTool {
                server: self.clone(),
                remote: tool.name.clone(),
                spec: ToolSpec {
                    name: format!("{}.{}", self.config.name, local_name(&tool.name)),
                    description: format!(
                        "{description} (MCP server `{}`, runs outside the sandbox)",
                        self.config.name
                    ),
                    args_schema: schema,
                    class: self.config.class(&tool.name),
                    source: self.config.source(),
                },
            }));
        }
        (out, problems)
    }

    /// Call `tool` with `args` for `run`: one call at a time per server,
    /// within the timeout and Ctrl-C; a dead or hung server is dropped and
    /// started again on the next call, once per run.
    pub async fn call(
        &self,
        run: &str,
        tool: &str,
        args: Value,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<CallToolResult, ToolError> {
        let name = &self.config.name;
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let failed = self
                .failures
                .lock()
                .map(|f| f.get(run).copied().unwrap_or(0))
                .unwrap_or(0);
            if failed >= 2 {
                return Err(ToolError::Observation(format!(
                    "the MCP server `{name}` failed twice in this run and is not started again; do without it"
                )));
            }
            *conn = Some(connect(&self.config).await.map_err(|e| {
                self.failed(run);
                ToolError::Observation(e.to_string())
            })?);
        }
        let Some(c) = conn.as_ref() else {
            return Err(ToolError::Observation(format!(
                "the MCP server `{name}` is not running"
            )));
        };
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = args.as_object().cloned();
        let limit = Duration::from_secs(self.config.timeout_secs);
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, c.call_tool(params)) => r,
            () = cancel.cancelled() => {
                *conn = None;
                return Err(ToolError::Cancelled);
            }
        };
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => {
                *conn = None;
                self.failed(run);
                Err(ToolError::Observation(format!(
                    "the MCP server `{name}` failed during `{tool}`: {e}; it will be started again for the next call"
                )))
            }
            Err(_) => {
                // Dropping the connection kills the hung process.
                *conn = None;
                self.failed(run);
                Err(ToolError::Observation(format!(
                    "the MCP server `{name}` did not answer `{tool}` within {} s; it was stopped",
                    self.config.timeout_secs
                )))
            }
        }
    }

    fn failed(&self, run: &str) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(run.to_string()).or_default() += 1;
        }
    }
}

fn start_error(config: &ServerConfig, reason: String) -> McpError {
    McpError::Start {
        name: config.name.clone(),
        reason,
    }
}

/// Start the process (or reach the URL) and say hello.
async fn connect(config: &ServerConfig) -> Result<Connection, McpError> {
    let limit = Duration::from_secs(config.timeout_secs);
    if let Some(url) = &config.url {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let mut http = StreamableHttpClientTransportConfig::with_uri(url.clone());
        if let Some(var) = &config.token_env {
            let token = std::env::var(var).map_err(|_| {
                start_error(config, format!("its token variable `{var}` is not set"))
            })?;
            http = http.auth_header(token);
        }
        let transport = StreamableHttpClientTransport::from_config(http);
        return tokio::time::timeout(limit, ().serve(transport))
            .await
            .map_err(|_| {
                start_error(
                    config,
                    format!(
                        "{url} did not finish the MCP handshake within {} s",
                        config.timeout_secs
                    ),
                )
            })?
            .map_err(|e| start_error(config, format!("the MCP handshake with {url} failed: {e}")));
    }
    let program = config.command.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&config.args).env_clear().kill_on_drop(true);
    for var in std::iter::once("PATH").chain(config.env.iter().map(String::as_str)) {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            // The server dies with agent, even under kill -9.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| start_error(config, format!("cannot run `{program}`: {e}")))?;
    tokio::time::timeout(limit, ().serve(transport))
        .await
        .map_err(|_| {
            start_error(
                config,
                format!(
                    "it did not finish the MCP handshake within {} s",
                    config.timeout_secs
                ),
            )
        })?
        .map_err(|e| start_error(config, format!("the MCP handshake failed: {e}")))
}

/// A server's tool name as ours: lowercase, `-`, `.` and others as `_`.
fn local_name(remote: &str) -> String {
    let mut out: String = remote
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert(0, 't');
    }
    out.truncate(48);
    out
}

/// One tool of an MCP server.
pub struct McpTool {
    server: Arc<Server>,
    remote: String,
    spec: ToolSpec,
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        // What an unsandboxed server returns is untrusted (case 39).
        ctx.taint
            .mark(format!("{} (an MCP server's output)", self.spec.name));
        let run = ctx.run_id.clone().unwrap_or_default();
        let result = self
            .server
            .call(&run, &self.remote, args, &ctx.cancel)
            .await?;
        let text = render(&result);
        if result.is_error == Some(true) {
            Err(ToolError::Observation(format!(
                "{} returned an error: {text}",
                self.spec.name
            )))
        } else {
            Ok(text)
        }
    }
}

/// A result as text: its text blocks, its structured content as JSON, and
/// a line for each image, audio clip or resource; at most
/// [`MAX_RESULT_BYTES`].
pub fn render(result: &CallToolResult) -> String {
    let mut parts: Vec<String> = Vec::new();
    for block in &result.content {
        parts.push(match block {
            ContentBlock::Text(t) => t.text.clone(),
            ContentBlock::Image(i) => format!(
                "[an image, {}, {} bytes of base64]",
                i.mime_type,
                i.data.len()
            ),
            ContentBlock::Audio(a) => {
                format!("[audio, {}, {} bytes of base64]", a.mime_type, a.data.len())
            }
            ContentBlock::Resource(r) => format!(
                "[a resource: {}]",
                serde_json::to_value(&r.resource)
                    .ok()
                    .and_then(|v| v.get("uri").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default()
            ),
            ContentBlock::ResourceLink(l) => format!("[a link to the resource {}]", l.uri),
            _ => "[content of a kind agent does not show]".to_string(),
        });
    }
    // Structured content the text already says is not said twice: servers
    // send the same JSON as text, and the Python SDK wraps a plain return
    // value as {"result": value} beside its text.
    if let Some(structured) = &result.structured_content {
        let said = |v: &Value| {
            parts.iter().any(|p| {
                serde_json::from_str::<Value>(p).is_ok_and(|t| &t == v)
                    || v.as_str().is_some_and(|s| s == p)
            })
        };
        let wrapped = structured
            .as_object()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.get("result"));
        if !said(structured) && !wrapped.is_some_and(said) {
            parts.push(format!("structured content: {structured}"));
        }
    }
    let mut text = parts.join("\n");
    if text.len() > MAX_RESULT_BYTES {
        let mut cut = MAX_RESULT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[... the rest of the server's output was cut ...]");
    }
    crate::sanitize::strip_terminal_escapes(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> ServerConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_server_entry_is_checked_with_the_key_named() {
        let ok = config(
            "{name: notes, command: python3, args: [s.py], class: read, classes: {rm: write}}",
        );
        assert!(ok.problems().is_empty());
        assert_eq!(ok.class("rm"), ToolClass::Write);
        assert_eq!(ok.class("ls"), ToolClass::Read);
        assert_eq!(ok.approve, "ask", "unsandboxed: ask by default");
        let cases = [
            ("{name: Notes, command: x}", "`name` must be"),
            ("{name: n}", "give `command`"),
            (
                "{name: n, url: 'ftp://127.0.0.1:1/mcp'}",
                "give an http:// or https:// URL",
            ),
            (
                "{name: n, command: x, token_env: T}",
                "`token_env` goes with `url`",
            ),
            ("{name: n, command: x, class: delete}", "class `delete`"),
            (
                "{name: n, command: x, timeout_secs: 0}",
                "`timeout_secs` is 0",
            ),
            (
                "{name: n, command: x, approve: maybe}",
                "`approve` is `maybe`",
            ),
        ];
        for (yaml, expected) in cases {
            let p = config(yaml).problems().join("; ");
            assert!(p.contains(expected), "{yaml}: {p}");
        }
        assert!(
            serde_yaml::from_str::<ServerConfig>("{name: n, command: x, colour: red}").is_err()
        );
    }

    #[test]
    fn server_tool_names_become_ours_under_the_server_prefix() {
        assert_eq!(local_name("get-weather"), "get_weather");
        assert_eq!(local_name("readFile"), "readfile");
        assert_eq!(local_name("2fa"), "t2fa");
        assert!(crate::tools::valid_tool_name("notes.get_weather"));
        assert!(!crate::tools::valid_tool_name("a.b.c"));
        assert!(!crate::tools::valid_tool_name(".a"));
    }

    #[test]
    fn results_are_described_capped_and_stripped() {
        let mut r = CallToolResult::success(vec![
            ContentBlock::text("red \x1b[31mtext"),
            ContentBlock::image("aGk=", "image/png"),
        ]);
        r.structured_content = Some(serde_json::json!({"n": 1}));
        let text = render(&r);
        assert!(
            text.starts_with("red text\n[an image, image/png, 4 bytes of base64]"),
            "{text}"
        );
        assert!(text.ends_with("structured content: {\"n\":1}"), "{text}");
        // What the text already says is not repeated.
        let mut r = CallToolResult::success(vec![ContentBlock::text("{\n  \"n\": 1\n}")]);
        r.structured_content = Some(serde_json::json!({"n": 1}));
        assert_eq!(render(&r), "{\n  \"n\": 1\n}");
        let mut r = CallToolResult::success(vec![ContentBlock::text("HI")]);
        r.structured_content = Some(serde_json::json!({"result": "HI"}));
        assert_eq!(render(&r), "HI");
        let big = CallToolResult::success(vec![ContentBlock::text("x".repeat(3 << 20))]);
        let text = render(&big);
        assert!(text.len() < (1 << 20) + 100 && text.ends_with("was cut ...]"));
    }
}

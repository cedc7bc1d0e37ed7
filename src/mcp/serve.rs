//! `agent mcp serve`: agent's own tools for other agents (the server side
//! of MCP, through `rmcp`). What is offered is what `agent run` would hand
//! its model: the WASM plugins' tools, confined to the workspace and to
//! their manifests' grants by the same plugin host, and the recipes on the
//! search path as `recipe_NAME` tools, each call a recipe run with agent's
//! model. The composition root (`cli::mcp`) chooses which of them and
//! hands in a [`Gate`] (there, the run's approval policies: a `deny`, an
//! `ask` with nobody to answer, a write to a file git runs are refused as
//! in a run); this module answers the protocol, asks the gate before each
//! call, and journals each call as a step of one run per server process,
//! so `agent runs list` shows who called what.
//!
//! Transports: stdio, or streamable HTTP on an address that is loopback
//! unless the person allows otherwise, and then only with a bearer token
//! ([`check_listen`]); a browser's `Origin` is refused on loopback, against
//! pages that would call local tools.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::memory::journal::StepOutcome;
use crate::memory::journal::{RunSettings, now_rfc3339};
use crate::memory::{RunJournal, RunRecord, RunStatus, StepRecord, StopKind};
use crate::tools::{ToolClass, ToolContext, ToolError, ToolRegistry, ToolSpec};

/// Decides whether a client's call may run.
#[async_trait::async_trait]
pub trait Gate: Send + Sync {
    /// `Err` with the reason the client is told refuses call `step`.
    async fn check(
        &self,
        spec: &ToolSpec,
        args: &serde_json::Value,
        step: u32,
    ) -> Result<(), String>;
}

/// What a run record says of the MCP server it journals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// `stdio`, or the `http://…/mcp` address.
    pub transport: String,
    /// The clients that called, as they named themselves (`name version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<String>,
}

impl Served {
    /// A label for `agent runs list`.
    pub fn label(&self) -> String {
        if self.clients.is_empty() {
            format!("mcp {}", self.transport)
        } else {
            format!("mcp {}: {}", self.transport, self.clients.join(", "))
        }
    }
}

/// What went wrong serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a loopback address, so other machines could call your tools; listen on 127.0.0.1:PORT, or pass --allow-remote with --token-env"
    )]
    NotLoopback(SocketAddr),
    #[error(
        "--allow-remote needs a bearer token: put one in an environment variable and name it with --token-env"
    )]
    RemoteWithoutToken,
    #[error(
        "the environment variable {0} (--token-env) is not set or is empty; set it to the token clients must send"
    )]
    TokenMissing(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("the MCP connection on stdio failed: {0}")]
    Stdio(String),
    #[error("cannot journal the MCP session: {0}")]
    Journal(#[from] crate::memory::StoreError),
}

/// Refuse an address other machines could reach unless `allow_remote`,
/// and remote access without a token.
pub fn check_listen(
    addr: SocketAddr,
    allow_remote: bool,
    token: Option<&str>,
) -> Result<(), ServeError> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(ServeError::NotLoopback(addr));
    }
    if allow_remote && token.is_none() {
        return Err(ServeError::RemoteWithoutToken);
    }
    Ok(())
}

/// The run that journals one server process: each call a step.
pub struct CallLog {
    journal: RunJournal,
    run: Mutex<RunRecord>,
    next: AtomicU32,
    started: Instant,
}

impl CallLog {
    /// The run to journal calls in, with `settings` that say how it is
    /// served (`settings.mcp`). It is written with the first call: a client
    /// that only lists the tools leaves no run behind.
    pub fn new(journal: RunJournal, id: String, settings: RunSettings) -> Self {
        let how = settings
            .mcp
            .as_ref()
            .map(|s| s.transport.clone())
            .unwrap_or_default();
        let run = RunRecord::new(
            id,
            format!("serve agent's tools to MCP clients over {how}"),
            settings,
        );
        Self {
            journal,
            run: Mutex::new(run),
            next: AtomicU32::new(1),
            started: Instant::now(),
        }
    }

    /// The run's id.
    pub fn id(&self) -> String {
        self.run.lock().map(|r| r.id.clone()).unwrap_or_default()
    }

    /// The number of the next step (a call's child runs are named by it).
    fn begin(&self) -> u32 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// Commit `step` (a call by `client`); a journal that cannot be written
    /// is reported, and the call's result still goes to the client.
    fn commit(&self, step: StepRecord, client: &str) {
        let Ok(mut run) = self.run.lock() else {
            return;
        };
        run.steps += 1;
        run.updated_at = now_rfc3339();
        run.elapsed_ms = self.started.elapsed().as_millis() as u64;
        if let Some(served) = run.settings.mcp.as_mut()
            && !served.clients.iter().any(|c| c == client)
        {
            served.clients.push(client.to_string());
            eprintln!("agent mcp serve: {client} called its first tool");
        }
        if let Err(e) = self.journal.commit_step(&run, &step) {
            tracing::warn!("an MCP call was not journaled: {e}");
        }
    }

    /// End the run, if a call started it: the server stopped (`reason`).
    pub fn close(&self, reason: &str) -> Result<(), ServeError> {
        let Ok(mut run) = self.run.lock() else {
            return Ok(());
        };
        if run.steps == 0 {
            return Ok(());
        }
        run.status = RunStatus::Finished;
        run.stop = Some(StopKind::Finished);
        run.elapsed_ms = self.started.elapsed().as_millis() as u64;
        run.updated_at = now_rfc3339();
        run.answer = Some(format!(
            "served {} call{}",
            run.steps,
            if run.steps == 1 { "" } else { "s" }
        ));
        run.stop_reason = Some(reason.to_string());
        Ok(self.journal.put_run(&run)?)
    }
}

/// What one server offers, shared by every connection to it: `tools`,
/// each call let through by `gate` and journaled in `log`.
pub struct Offer {
    pub tools: ToolRegistry,
    pub gate: Arc<dyn Gate>,
    pub log: Arc<CallLog>,
    /// What the journal keeps of a result (the client gets all of it).
    pub observation_chars: usize,
    /// What the client is told of the server at the start.
    pub instructions: String,
    /// Each plugin's grants in words, for the tools' descriptions.
    pub grants: std::collections::BTreeMap<String, String>,
}

impl Offer {
    /// The tools as MCP lists them: a plugin's description says it is
    /// sandboxed and what it was granted; the annotations hint at the class
    /// (read-only, destructive, open world) for clients that ask before
    /// calling.
    fn listed(&self) -> Vec<rmcp::model::Tool> {
        self.tools
            .specs()
            .into_iter()
            .map(|spec| {
                let schema = match &spec.args_schema {
                    serde_json::Value::Object(map) => map.clone(),
                    _ => serde_json::Map::new(),
                };
                let description = match self.grants.get(&spec.source) {
                    Some(grants) => format!(
                        "{} (agent's sandboxed plugin `{}`: {grants})",
                        spec.description, spec.source
                    ),
                    None => spec.description.clone(),
                };
                let hints = ToolAnnotations::new();
                let hints = match spec.class {
                    ToolClass::Read => hints.read_only(true).open_world(false),
                    ToolClass::Network => hints.read_only(true).open_world(true),
                    ToolClass::Write | ToolClass::Execute => {
                        hints.read_only(false).destructive(true).open_world(false)
                    }
                    ToolClass::Internal | ToolClass::Human => hints,
                };
                let mut tool = rmcp::model::Tool::new(spec.name.clone(), description, schema);
                tool.annotations = Some(hints);
                tool
            })
            .collect()
    }

    /// Call `name` for `client`: checked against its schema, approved,
    /// run, journaled. `Err` is what the client is told of a failed call.
    async fn call(
        &self,
        name: &str,
        args: serde_json::Value,
        client: &str,
        cancel: CancellationToken,
    ) -> Result<String, String> {
        let Some(tool) = self.tools.get(name).cloned() else {
            return Err(format!(
                "this server offers no tool `{}` (it offers: {})",
                crate::sanitize::one_line(name, 100),
                self.tools.names().join(", ")
            ));
        };
        self.tools.check_args(name, &args)?;
        let index = self.log.begin();
        let started = Instant::now();
        let spec = tool.spec().clone();
        let result = match self.gate.check(&spec, &args, index).await {
            Ok(()) => {
                let context = ToolContext {
                    cancel,
                    run_id: Some(self.log.id()),
                    step: Some(index),
                    taint: Default::default(),
                };
                tool.call(args.clone(), &context)
                    .await
                    .map(|out| (out, StepOutcome::Ok))
                    .map_err(|e| match e {
                        ToolError::Cancelled => {
                            ("the call was cancelled".to_string(), StepOutcome::ToolError)
                        }
                        other => (other.to_string(), StepOutcome::ToolError),
                    })
            }
            Err(reason) => Err((reason, StepOutcome::Denied)),
        };
        let (text, outcome) = match &result {
            Ok((out, outcome)) | Err((out, outcome)) => (out.as_str(), *outcome),
        };
        self.log.commit(
            StepRecord {
                index,
                raw_output: String::new(),
                thought: Some(format!("called by {client}")),
                tool: Some(name.to_string()),
                args: Some(args),
                observation: crate::sanitize::observation(text, self.observation_chars),
                outcome,
                note: Some(format!(
                    "{} bytes {} to the client",
                    text.len(),
                    if outcome == StepOutcome::Ok {
                        "returned"
                    } else {
                        "of error returned"
                    }
                )),
                usage: Default::default(),
                model_ms: 0,
                tool_ms: started.elapsed().as_millis() as u64,
                at: now_rfc3339(),
                votes: None,
                escalated: None,
                person: None,
                untrusted: false,
            },
            client,
        );
        result.map(|(out, _)| out).map_err(|(e, _)| e)
    }
}

/// One connection's view of an [`Offer`] (cheap to clone: an HTTP server
/// makes one per session).
#[derive(Clone)]
pub struct Handler {
    offer: Arc<Offer>,
}

impl Handler {
    pub fn new(offer: Arc<Offer>) -> Self {
        Self { offer }
    }
}

/// How a client named itself (`name version`), or `an unnamed client`.
fn client_name(context: &RequestContext<RoleServer>) -> String {
    match context.client_info() {
        Some(info) => crate::sanitize::one_line(
            &crate::sanitize::strip_terminal_escapes(&format!("{} {}", info.name, info.version)),
            80,
        ),
        None => "an unnamed client".to_string(),
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agent", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.offer.instructions.clone())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.offer.listed()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let client = client_name(&context);
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let result = match self
            .offer
            .call(&request.name, args, &client, context.ct.clone())
            .await
        {
            Ok(out) => CallToolResult::success(vec![ContentBlock::text(out)]),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e)]),
        };
        Ok(result.into())
    }
}

/// Serve `handler` on stdin/stdout until the client closes them or
/// `cancel` fires.
pub async fn serve_stdio(handler: Handler, cancel: CancellationToken) -> Result<(), ServeError> {
    let running = handler
        .serve_with_ct(rmcp::transport::stdio_pipes(), cancel)
        .await
        .map_err(|e| ServeError::Stdio(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| ServeError::Stdio(e.to_string()))?;
    Ok(())
}

/// A bound HTTP listener, ready for [`serve_http`].
pub struct Listener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Bind `addr` (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Listen { addr, error })?;
        let addr = listener
            .local_addr()
            .map_err(|error| ServeError::Listen { addr, error })?;
        Ok(Self { listener, addr })
    }

    /// The address clients reach: `http://ADDR/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

/// Serve `handler` over streamable HTTP at `/mcp` until `cancel` fires.
/// With `token`, every request must carry `Authorization: Bearer TOKEN`.
pub async fn serve_http(
    handler: Handler,
    listener: Listener,
    token: Option<String>,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let config =
        StreamableHttpServerConfig::default().with_cancellation_token(cancel.child_token());
    let config = if listener.addr.ip().is_loopback() {
        // Loopback: the Host must be a loopback name (no DNS rebinding) and
        // no browser page may call in.
        config.enforce_origin_validation()
    } else {
        // Remote clients name this machine as they know it; the token is
        // what admits them.
        config.disable_allowed_hosts()
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let token = token.map(Arc::new);
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("an MCP connection was not accepted: {e}");
                    continue;
                }
            },
        };
        let (service, token) = (service.clone(), token.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let answer = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let (mut service, token) = (service.clone(), token.clone());
                    async move {
                        if let Some(refused) =
                            refuse(&request, token.as_deref().map(String::as_str))
                        {
                            return Ok::<_, std::convert::Infallible>(refused);
                        }
                        tower_service::Service::call(&mut service, request).await
                    }
                },
            );
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, answer)
                .await
            {
                tracing::debug!("an MCP connection ended: {e}");
            }
        });
    }
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// The answer to a request that does not reach the MCP service: another
/// path than `/mcp`, or a missing or wrong bearer token.
fn refuse<B>(request: &hyper::Request<B>, token: Option<&str>) -> Option<hyper::Response<Body>> {
    use http_body_util::BodyExt;
    let answer = |status: u16, text: &str| {
        let mut response = hyper::Response::new(
            http_body_util::Full::new(bytes::Bytes::from(text.to_string())).boxed(),
        );
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
        if status == 401 {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    };
    if request.uri().path() != "/mcp" {
        return Some(answer(404, "agent serves MCP at /mcp\n"));
    }
    let token = token?;
    let given = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same_secret(given.trim().as_bytes(), token.as_bytes()) {
        None
    } else {
        Some(answer(
            401,
            "a bearer token is required (Authorization: Bearer TOKEN)\n",
        ))
    }
}

/// Compare secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_allowed_and_never_remote_without_a_token() {
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        check_listen(local, false, None).unwrap();
        let e = check_listen(any, false, Some("t")).unwrap_err().to_string();
        assert!(
            e.contains("not a loopback") && e.contains("--allow-remote"),
            "{e}"
        );
        let e = check_listen(any, true, None).unwrap_err().to_string();
        assert!(e.contains("--token-env"), "{e}");
        check_listen(any, true, Some("t")).unwrap();
    }

    #[test]
    fn requests_need_the_path_and_the_token() {
        let request = |path: &str, auth: Option<&str>| {
            let mut b = hyper::Request::builder().uri(path);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).unwrap()
        };
        let status = |r: Option<hyper::Response<Body>>| r.map(|r| r.status().as_u16());
        assert_eq!(status(refuse(&request("/mcp", None), None)), None);
        assert_eq!(status(refuse(&request("/other", None), None)), Some(404));
        assert_eq!(
            status(refuse(&request("/mcp", None), Some("s3"))),
            Some(401)
        );
        assert_eq!(
            status(refuse(&request("/mcp", Some("Bearer s4")), Some("s3"))),
            Some(401)
        );
        assert_eq!(
            status(refuse(&request("/mcp", Some("Bearer s3")), Some("s3"))),
            None
        );
    }
}

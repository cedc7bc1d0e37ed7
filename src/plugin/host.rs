//! The wasmtime side of the plugin host: one engine per process, the linker,
//! compilation with the cache, and one sandboxed call.
//!
//! Decisions:
//! - One `Engine` per process (built on first use), with epoch interruption
//!   and the pooling allocator (falling back to on-demand allocation where the
//!   address space for the pool cannot be reserved). A ticker thread advances
//!   the epoch every [`TICK`] while at least one call runs, and sleeps otherwise.
//! - Each call runs on an OS thread of its own, with its own single-threaded
//!   tokio runtime (case 41). WASI file operations block the thread they run
//!   on (opening a FIFO waits for a writer, a stalled mount never answers),
//!   and no timer or epoch check can interrupt a thread inside a system call.
//!   On its own thread such a call blocks only itself: the caller waits for
//!   the answer, its time limit and the user's cancellation side by side, and
//!   on the first of the last two it reports a timeout or a cancellation and
//!   abandons the thread. Promised: no plugin call outlives its deadline
//!   (plus a few ticks), the run's wall-clock budget (which drops the call)
//!   or Ctrl-C, whatever the guest is blocked in.
//! - An abandoned thread owns everything it touches (its store, a clone of the
//!   pre-linked component, the captured output) and holds no lock anyone else
//!   needs. Abandoning it cancels its stop token: the epoch callback traps the
//!   guest as soon as it runs wasm again and the thread's own `select!` drops
//!   the call at its next await, so a thread that comes back from its system
//!   call ends at once. One stuck for good (a FIFO nobody opens) stays parked
//!   in the kernel until the process exits; at most [`MAX_CALL_THREADS`] call
//!   threads live at once, so stuck ones cannot pile up without bound.
//! - Inside the thread the call is async (`instantiate_async`, `call_async`):
//!   the epoch callback checks the call's deadline and the stop token every
//!   tick and yields in between, and the call future sits in a `select!` with
//!   a timer and the stop token, so a guest blocked in an async host call (a
//!   WASI sleep, a slow fetch) is dropped at its deadline and the thread ends.
//! - Every call gets a fresh `Store` from the plugin's `InstancePre`: nothing
//!   survives between calls, and a trapped instance is never entered again.
//! - The deadline is set before instantiation (with epochs on, the default
//!   deadline of zero would trap the instantiation itself).
//! - Memory: the cap is per plugin instance, not per linear memory. A
//!   `ResourceLimiter` of our own, one per store, sums every memory the
//!   component creates or grows (a component may hold several core instances,
//!   each with its memories) and refuses growth that would take the total past
//!   `memory_mb` with a typed error, so "ran out of memory" is told apart from
//!   other traps. A growth it allowed that then fails stays counted: the total
//!   may overcount, never undercount. (Shared memories, which would escape a
//!   store's limiter, need wasmtime's `threads` feature, which is not built.)
//! - WASI p2 is linked (its sockets with TCP, UDP and name lookup all denied,
//!   no `wasi:http`): the only network is our `http-fetch`. Files: the workspace
//!   is preopened at `/workspace` with the granted mode (read-only file and
//!   directory rights for `read`), or not at all for `none`.
//!
//! Size: one job, running one plugin call under its limits (the engine and
//! store set-up, the call thread, the deadline and the limiter belong
//! together); a sixth of the file is its tests.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap, UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::cache::CompiledCache;
use super::http::{Egress, FetchRequest, Resolver};
use super::manifest::{MAX_MEMORY_MB, WorkspaceAccess};
use super::output::CapturedOutput;
use super::policy::Grant;
use crate::sanitize::neutralize_controls;

/// Generated bindings of `plugins/wit` (world `plugin`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "plugins/wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

pub(crate) use bindings::PluginPre;
use bindings::agent::plugin::host::LogLevel;
pub(crate) use bindings::agent::plugin::types::ToolInfo;
use bindings::agent::plugin::types::{HttpRequest, HttpResponse};

/// How often the epoch advances while calls run (deadline granularity).
pub const TICK: Duration = Duration::from_millis(10);
/// How much of stdout and of stderr is kept per call.
const STDIO_CAP: usize = 64 * 1024;
/// Log lines a plugin may emit per call.
const MAX_LOGS: u32 = 200;
/// Where the workspace appears inside the guest.
pub const GUEST_WORKSPACE: &str = "/workspace";
/// Most call threads alive at once: running calls plus abandoned ones still
/// stuck in a blocking host call.
pub(crate) const MAX_CALL_THREADS: usize = 64;

/// The process-wide engine and linker.
pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<CallState>,
    /// Hex sha256 of wasmtime's compatibility hash: part of every cache key.
    pub engine_hash: String,
    active: AtomicUsize,
    ticker: OnceLock<std::thread::Thread>,
    /// Call threads alive (running or abandoned).
    call_threads: AtomicUsize,
}

static RUNTIME: OnceLock<Result<Arc<Runtime>, String>> = OnceLock::new();

/// The process's runtime, started on first use.
pub(crate) fn runtime() -> Result<Arc<Runtime>, String> {
    RUNTIME
        .get_or_init(|| Runtime::start().map(Arc::new))
        .clone()
}

fn engine_config(pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    if pooling {
        let mut p = PoolingAllocationConfig::new();
        // Sized for a few dozen concurrent calls of components built by
        // wit-bindgen (a handful of core instances) and componentize-py (a
        // dozen core instances and a large function table).
        p.total_component_instances(100)
            .total_core_instances(2000)
            .total_memories(200)
            .total_tables(1000)
            .total_stacks(100)
            .max_memory_size(MAX_MEMORY_MB as usize * 1024 * 1024)
            .max_tables_per_module(4)
            .table_elements(65_536)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// A `Hasher` feeding sha256, so the engine hash is stable across runs.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Runtime {
    fn start() -> Result<Self, String> {
        let (engine, pooled) = match Engine::new(&engine_config(true)) {
            Ok(e) => (e, true),
            Err(pool_err) => {
                tracing::warn!(
                    "pooling allocator unavailable ({pool_err}); using on-demand allocation"
                );
                let e = Engine::new(&engine_config(false))
                    .map_err(|e| format!("could not start the WebAssembly engine: {e:#}"))?;
                (e, false)
            }
        };
        let mut linker: Linker<CallState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| format!("could not link WASI: {e:#}"))?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| format!("could not link the host interface: {e:#}"))?;
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let engine_hash = hex::encode(h.0.finalize());
        tracing::debug!(pooled, "plugin engine started");
        Ok(Self {
            engine,
            linker,
            engine_hash,
            active: AtomicUsize::new(0),
            ticker: OnceLock::new(),
            call_threads: AtomicUsize::new(0),
        })
    }

    /// Mark a call as running; the ticker runs while any guard lives.
    fn enter(self: &Arc<Self>) -> ActiveCall {
        self.active.fetch_add(1, Ordering::SeqCst);
        let ticker = self.ticker.get_or_init(|| {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    loop {
                        let Some(rt) = weak.upgrade() else { return };
                        if rt.active.load(Ordering::SeqCst) == 0 {
                            drop(rt);
                            std::thread::park_timeout(Duration::from_secs(1));
                            continue;
                        }
                        drop(rt);
                        std::thread::sleep(TICK);
                        if let Some(rt) = weak.upgrade() {
                            rt.engine.increment_epoch();
                        }
                    }
                });
            match spawned {
                Ok(handle) => handle.thread().clone(),
                // Without a ticker, deadlines are still enforced by the call's timer.
                Err(_) => std::thread::current(),
            }
        });
        ticker.unpark();
        ActiveCall(self.clone())
    }
}

struct ActiveCall(Arc<Runtime>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One live call thread, counted in `Runtime::call_threads` until dropped.
struct CallThread(Arc<Runtime>);

impl CallThread {
    fn claim(rt: &Arc<Runtime>) -> Option<Self> {
        let before = rt.call_threads.fetch_add(1, Ordering::SeqCst);
        let slot = Self(rt.clone());
        (before < MAX_CALL_THREADS).then_some(slot)
    }
}

impl Drop for CallThread {
    fn drop(&mut self) {
        self.0.call_threads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a compiled component could not be produced.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompileError {
    #[error("{0}")]
    NotWasm(String),
    #[error("it is not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("it needs something the host does not provide: {0}")]
    Link(String),
}

/// Check the header: a component, not a core module or something else.
fn check_header(wasm: &[u8]) -> Result<(), CompileError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(CompileError::NotWasm(
            "it is not a WebAssembly file (no `\\0asm` header)".into(),
        ));
    }
    match &wasm[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(CompileError::NotWasm(
            "it is a core WebAssembly module, not a component; build for `wasm32-wasip2` \
             (or wrap it with `wasm-tools component new`)"
                .into(),
        )),
        _ => Err(CompileError::NotWasm(
            "it has an unknown WebAssembly version or layer".into(),
        )),
    }
}

/// Compile (or load from the cache) and pre-link a component.
pub(crate) fn prepare(
    rt: &Runtime,
    cache: &CompiledCache,
    wasm: &[u8],
    wasm_sha: &str,
) -> Result<(PluginPre<CallState>, bool), CompileError> {
    let mut from_cache = false;
    let mut component = None;
    if let Some(bytes) = cache.load_compiled(wasm_sha, &rt.engine_hash) {
        // SAFETY: these bytes were produced by `Component::serialize` of this
        // engine configuration and carry an HMAC under this cache's key, which
        // `load_compiled` verified on this very buffer.
        match unsafe { Component::deserialize(&rt.engine, &bytes) } {
            Ok(c) => {
                component = Some(c);
                from_cache = true;
            }
            Err(e) => tracing::warn!("recompiling a plugin whose cached code did not load: {e:#}"),
        }
    }
    let component = match component {
        Some(c) => c,
        None => {
            check_header(wasm)?;
            let c = Component::new(&rt.engine, wasm)
                .map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
            match c.serialize() {
                Ok(bytes) => {
                    if let Err(e) = cache.store_compiled(wasm_sha, &rt.engine_hash, &bytes) {
                        tracing::warn!(
                            "could not cache a compiled plugin in {}: {e}",
                            cache.dir().display()
                        );
                    }
                }
                Err(e) => tracing::warn!("could not serialise a compiled plugin: {e:#}"),
            }
            c
        }
    };
    let pre = rt
        .linker
        .instantiate_pre(&component)
        .map_err(|e| CompileError::Link(format!("{e:#}")))?;
    let pre = PluginPre::new(pre).map_err(|e| CompileError::Link(format!("{e:#}")))?;
    Ok((pre, from_cache))
}

/// Memory and table limits of one call (one store, so one plugin instance);
/// remembers when the memory cap was hit.
pub(crate) struct CallLimits {
    /// The cap on all linear memories of the store together.
    memory_bytes: usize,
    /// Bytes of all memories of the store, as far as growth was allowed.
    used: usize,
    hit: bool,
}

impl CallLimits {
    fn new(memory_bytes: usize) -> Self {
        Self {
            memory_bytes,
            used: 0,
            hit: false,
        }
    }
}

/// The typed error our limiter raises at the memory cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap reached")]
struct MemoryCapReached;

/// Why the epoch callback stopped a guest.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("deadline reached")]
    Timeout,
    #[error("cancelled")]
    Cancelled,
}

impl ResourceLimiter for CallLimits {
    /// Called for every memory the store creates (`current` 0) and every
    /// growth: the total of all of them is what the cap bounds.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.hit = true;
            return Err(MemoryCapReached.into());
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Per-call state inside the `Store`.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: CallLimits,
    plugin: Arc<str>,
    egress: Option<Arc<Egress>>,
    deadline: Instant,
    logs: u32,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::agent::plugin::types::Host for CallState {}

impl bindings::agent::plugin::host::Host for CallState {
    async fn log(&mut self, level: LogLevel, message: String) {
        self.logs += 1;
        if self.logs > MAX_LOGS {
            return;
        }
        let mut message = neutralize_controls(&message);
        if message.len() > 2048 {
            let cut = (0..=2048)
                .rev()
                .find(|i| message.is_char_boundary(*i))
                .unwrap_or(0);
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.plugin;
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    async fn http_fetch(&mut self, request: HttpRequest) -> Result<HttpResponse, String> {
        let Some(egress) = self.egress.clone() else {
            return Err(format!(
                "refused: the `{}` plugin has no network access",
                self.plugin
            ));
        };
        let req = FetchRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        tracing::debug!(plugin = &*self.plugin, url = %req.url, "http-fetch");
        let r = egress.fetch(req, Some(self.deadline)).await;
        if let Err(e) = &r {
            tracing::info!(plugin = &*self.plugin, "http-fetch refused or failed: {e}");
        }
        r.map(|r| HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
            truncated: r.truncated,
            final_url: r.final_url,
        })
    }
}

/// What one call may touch.
pub(crate) struct CallEnv<'a> {
    pub plugin: &'a str,
    pub grant: &'a Grant,
    /// The host directory behind `/workspace`.
    pub workspace: &'a Path,
    /// False for `describe()`: no workspace, no network.
    pub full_access: bool,
    pub resolver: Arc<dyn Resolver>,
    pub cancel: CancellationToken,
}

/// How a call failed.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// The plugin's own `err` string.
    Plugin(String),
    /// Stopped at the time limit.
    Timeout(Duration),
    /// Stopped at the memory cap.
    OutOfMemory(u32),
    /// A trap or another runtime error, with the stderr tail.
    Crashed { reason: String, stderr: String },
    /// The user cancelled.
    Cancelled,
    /// The sandbox could not be set up (workspace missing, ...).
    Setup(String),
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plugin(e) => f.write_str(e),
            Self::Timeout(d) => write!(
                f,
                "timed out after {} ms (the plugin's time limit)",
                d.as_millis()
            ),
            Self::OutOfMemory(mb) => write!(f, "ran out of memory (cap {mb} MB)"),
            Self::Crashed { reason, stderr } if stderr.is_empty() => {
                write!(f, "plugin crashed: {reason}")
            }
            Self::Crashed { reason, stderr } => {
                write!(f, "plugin crashed: {reason} (stderr tail: {stderr})")
            }
            Self::Cancelled => f.write_str("cancelled"),
            Self::Setup(e) => f.write_str(e),
        }
    }
}

/// Output of a finished call besides its result.
#[derive(Debug, Default)]
pub(crate) struct CallIo {
    pub stdout: String,
    pub stderr: String,
}

/// A fresh store for one call; `stop` (a child of the user's cancellation,
/// also cancelled when the caller gives up on the call) traps the guest at
/// its next epoch check.
fn new_store(
    rt: &Arc<Runtime>,
    env: &CallEnv<'_>,
    stop: &CancellationToken,
) -> Result<(Store<CallState>, CapturedOutput, CapturedOutput), String> {
    let stdout = CapturedOutput::new(STDIO_CAP);
    let stderr = CapturedOutput::new(STDIO_CAP);
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        // File operations run on the call's own thread (see the module docs)
        // instead of bouncing to a pool.
        .allow_blocking_current_thread(true);
    for (k, v) in &env.grant.env {
        b.env(k, v);
    }
    let access = if env.full_access {
        env.grant.workspace
    } else {
        WorkspaceAccess::None
    };
    if access != WorkspaceAccess::None {
        let perms = if access == WorkspaceAccess::Write {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        b.preopened_dir(env.workspace, GUEST_WORKSPACE, perms)
            .map_err(|e| {
                format!(
                    "the workspace {} cannot be opened for the plugin: {e:#}",
                    env.workspace.display()
                )
            })?;
        b.env("PWD", GUEST_WORKSPACE);
        b.initial_cwd(GUEST_WORKSPACE);
    }
    let egress = (env.full_access && env.grant.http.enabled()).then(|| {
        Arc::new(Egress::new(
            env.plugin,
            env.grant.http.clone(),
            env.resolver.clone(),
        ))
    });
    let deadline = Instant::now() + env.grant.timeout;
    let state = CallState {
        wasi: b.build(),
        table: ResourceTable::new(),
        limits: CallLimits::new(env.grant.memory_mb as usize * 1024 * 1024),
        plugin: Arc::from(env.plugin),
        egress,
        deadline,
        logs: 0,
    };
    let mut store = Store::new(&rt.engine, state);
    store.limiter(|s| &mut s.limits);
    let stop = stop.clone();
    store.epoch_deadline_callback(move |_| {
        if stop.is_cancelled() {
            return Err(Stop::Cancelled.into());
        }
        if Instant::now() >= deadline {
            return Err(Stop::Timeout.into());
        }
        Ok(UpdateDeadline::Yield(1))
    });
    // Before instantiating: with epochs on, the default deadline (0) traps at once.
    store.set_epoch_deadline(1);
    Ok((store, stdout, stderr))
}

fn classify(
    e: &wasmtime::Error,
    store: &Store<CallState>,
    env: &CallEnv<'_>,
    stderr: &CapturedOutput,
) -> CallFailure {
    if let Some(stop) = e.downcast_ref::<Stop>() {
        return match stop {
            Stop::Timeout => CallFailure::Timeout(env.grant.timeout),
            Stop::Cancelled => CallFailure::Cancelled,
        };
    }
    if store.data().limits.hit || e.downcast_ref::<MemoryCapReached>().is_some() {
        return CallFailure::OutOfMemory(env.grant.memory_mb);
    }
    let reason = match e.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => "call stack exhausted (too deep recursion)".to_string(),
        Some(Trap::UnreachableCodeReached) => {
            "it aborted (wasm `unreachable`, e.g. a Rust panic)".to_string()
        }
        Some(trap) => trap.to_string(),
        None => {
            let text = format!("{e:#}");
            if text.contains("concurrent") || text.contains("maximum") {
                format!("too many plugin calls at once ({text})")
            } else {
                text
            }
        }
    };
    CallFailure::Crashed {
        reason: neutralize_controls(&reason),
        stderr: neutralize_controls(&stderr.tail_text(1024)),
    }
}

/// How a call on its thread ended, as its caller saw it.
enum Ended<R> {
    /// The guest returned or trapped; its store, for classifying a trap.
    Done(wasmtime::Result<R>, Store<CallState>),
    /// The time limit passed first.
    Timeout,
    /// The user cancelled first.
    Cancelled,
}

/// What the call thread sends back: `None` when it stopped the call itself.
type ThreadAnswer<R> = Result<Option<(wasmtime::Result<R>, Store<CallState>)>, String>;

/// Run `body` (the guest's side of a call, given the store) on a thread of
/// its own, and wait for it, the time limit or the user's cancellation,
/// whichever comes first (see the module docs). Returning, or being dropped,
/// cancels `stop`, which tells an abandoned thread to end.
async fn on_call_thread<R, F, Fut>(
    rt: &Arc<Runtime>,
    env: &CallEnv<'_>,
    store: Store<CallState>,
    stop: CancellationToken,
    body: F,
) -> Result<Ended<R>, CallFailure>
where
    R: Send + 'static,
    F: FnOnce(Store<CallState>) -> Fut + Send + 'static,
    Fut: Future<Output = (wasmtime::Result<R>, Store<CallState>)>,
{
    let _stop_when_done = stop.clone().drop_guard();
    let Some(slot) = CallThread::claim(rt) else {
        return Err(CallFailure::Setup(format!(
            "too many plugin calls are running or stuck ({MAX_CALL_THREADS}); a stuck call is a \
             plugin blocked in a file operation that never finishes (a FIFO, a device, a stalled \
             mount): restart the agent to free them"
        )));
    };
    let limit = env.grant.timeout + 5 * TICK;
    let (tx, rx) = tokio::sync::oneshot::channel::<ThreadAnswer<R>>();
    let thread_stop = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("plugin-call".into())
        .spawn(move || {
            // Moved in whole: the slot is freed when this thread ends.
            let slot = slot;
            let _active = slot.0.enter();
            let local = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(local) => local,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot start a runtime for the call: {e}")));
                    return;
                }
            };
            let answer = local.block_on(async move {
                tokio::select! {
                    r = body(store) => Some(r),
                    () = tokio::time::sleep(limit) => None,
                    () = thread_stop.cancelled() => None,
                }
            });
            let _ = tx.send(Ok(answer));
            // Blocking tasks still stuck (a file read that never returns) are
            // left behind instead of waited for.
            local.shutdown_background();
        });
    if let Err(e) = spawned {
        return Err(CallFailure::Setup(format!(
            "cannot start a thread for the plugin call: {e}"
        )));
    }
    tokio::select! {
        answer = rx => match answer {
            Ok(Ok(Some((result, store)))) => Ok(Ended::Done(result, store)),
            Ok(Ok(None)) if env.cancel.is_cancelled() => Ok(Ended::Cancelled),
            Ok(Ok(None)) => Ok(Ended::Timeout),
            Ok(Err(e)) => Err(CallFailure::Setup(e)),
            Err(_) => Err(CallFailure::Crashed {
                reason: "the call's thread ended without an answer (a host panic)".into(),
                stderr: String::new(),
            }),
        },
        () = tokio::time::sleep(limit) => Ok(Ended::Timeout),
        () = env.cancel.cancelled() => Ok(Ended::Cancelled),
    }
}

/// Run `describe()` in a fresh, locked-down store (no workspace, no network).
pub(crate) async fn describe(
    rt: &Arc<Runtime>,
    pre: &PluginPre<CallState>,
    env: &CallEnv<'_>,
) -> Result<Vec<ToolInfo>, CallFailure> {
    let stop = env.cancel.child_token();
    let (store, _stdout, stderr) = new_store(rt, env, &stop).map_err(CallFailure::Setup)?;
    let pre = pre.clone();
    let ended = on_call_thread(rt, env, store, stop, move |mut store| async move {
        let r = async {
            let plugin = pre.instantiate_async(&mut store).await?;
            plugin.agent_plugin_tools().call_describe(&mut store).await
        }
        .await;
        (r, store)
    })
    .await?;
    match ended {
        Ended::Done(result, store) => result.map_err(|e| classify(&e, &store, env, &stderr)),
        Ended::Timeout => Err(CallFailure::Timeout(env.grant.timeout)),
        Ended::Cancelled => Err(CallFailure::Cancelled),
    }
}

/// Run `invoke(tool, args)` in a fresh store with the grant's access.
pub(crate) async fn invoke(
    rt: &Arc<Runtime>,
    pre: &PluginPre<CallState>,
    env: &CallEnv<'_>,
    tool: &str,
    args_json: &str,
) -> (Result<String, CallFailure>, CallIo) {
    let stop = env.cancel.child_token();
    let (store, stdout, stderr) = match new_store(rt, env, &stop) {
        Ok(s) => s,
        Err(e) => return (Err(CallFailure::Setup(e)), CallIo::default()),
    };
    let pre = pre.clone();
    let (tool, args_json) = (tool.to_string(), args_json.to_string());
    let ended = on_call_thread(rt, env, store, stop, move |mut store| async move {
        let r = async {
            let plugin = pre.instantiate_async(&mut store).await?;
            plugin
                .agent_plugin_tools()
                .call_invoke(&mut store, &tool, &args_json)
                .await
        }
        .await;
        (r, store)
    })
    .await;
    let result = match ended {
        Ok(Ended::Done(Ok(Ok(text)), _)) => Ok(text),
        Ok(Ended::Done(Ok(Err(plugin_error)), _)) => Err(CallFailure::Plugin(plugin_error)),
        Ok(Ended::Done(Err(e), store)) => Err(classify(&e, &store, env, &stderr)),
        Ok(Ended::Timeout) => Err(CallFailure::Timeout(env.grant.timeout)),
        Ok(Ended::Cancelled) => Err(CallFailure::Cancelled),
        Err(failure) => Err(failure),
    };
    (
        result,
        CallIo {
            stdout: stdout.text(),
            stderr: stderr.text(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_components_from_modules_and_junk() {
        assert!(check_header(b"\0asm\x0d\x00\x01\x00rest").is_ok());
        let e = check_header(b"\0asm\x01\x00\x00\x00")
            .unwrap_err()
            .to_string();
        assert!(e.contains("core WebAssembly module"), "{e}");
        let e = check_header(b"#!/bin/sh\nrm -rf /")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a WebAssembly file"), "{e}");
        assert!(check_header(b"\0as").is_err());
    }

    #[test]
    fn the_runtime_starts_once_with_a_stable_engine_hash() {
        let a = runtime().unwrap();
        let b = runtime().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.engine_hash.len(), 64);
    }

    /// A component with two core instances, each with a memory of one 64 KiB
    /// page and a function growing it by some pages (returning the old size,
    /// or -1 when the growth was refused).
    const TWO_MEMORIES: &str = r#"
        (component
          (core module $m
            (memory (export "mem") 1)
            (func (export "grow") (param i32) (result i32)
              (memory.grow (local.get 0))))
          (core instance $a (instantiate $m))
          (core instance $b (instantiate $m))
          (func (export "grow-a") (param "pages" u32) (result s32)
            (canon lift (core func $a "grow")))
          (func (export "grow-b") (param "pages" u32) (result s32)
            (canon lift (core func $b "grow"))))
    "#;

    /// 64 KiB pages in one MiB.
    const PAGES_PER_MB: u32 = 16;

    fn grant(memory_mb: u32) -> Grant {
        Grant {
            workspace: WorkspaceAccess::None,
            http: super::super::policy::HttpGrant {
                hosts: Vec::new(),
                any_public_host: false,
                allow_local: Vec::new(),
                max_response_bytes: 0,
                timeout: Duration::from_secs(1),
                max_requests: 0,
            },
            memory_mb,
            timeout: Duration::from_secs(10),
            output_bytes: 1024,
            env: Vec::new(),
        }
    }

    /// Instantiate [`TWO_MEMORIES`] in a store built as for a plugin call and
    /// grow its memories by `steps` (memory, pages) in order; the answers,
    /// `Err` when the growth trapped, and whether the cap was hit.
    async fn grow_in_one_store(
        memory_mb: u32,
        steps: &[(&str, u32)],
    ) -> (Vec<Result<i32, String>>, bool) {
        let rt = runtime().unwrap();
        let wasm = wat::parse_str(TWO_MEMORIES).unwrap();
        let component = Component::new(&rt.engine, &wasm).unwrap();
        let grant = grant(memory_mb);
        let env = CallEnv {
            plugin: "two-memories",
            grant: &grant,
            workspace: Path::new("/nonexistent"),
            full_access: false,
            resolver: Arc::new(super::super::http::SystemResolver),
            cancel: CancellationToken::new(),
        };
        let (mut store, _out, _err) = new_store(&rt, &env, &CancellationToken::new()).unwrap();
        let _active = rt.enter();
        let instance = rt
            .linker
            .instantiate_async(&mut store, &component)
            .await
            .unwrap();
        let mut answers = Vec::new();
        for (name, pages) in steps {
            let f = instance
                .get_typed_func::<(u32,), (i32,)>(&mut store, *name)
                .unwrap();
            let r = f.call_async(&mut store, (*pages,)).await;
            answers.push(r.map(|(old,)| old).map_err(|e| format!("{e:#}")));
        }
        (answers, store.data().limits.hit)
    }

    #[tokio::test]
    async fn the_memory_cap_bounds_all_memories_of_a_plugin_together() {
        // Cap 4 MiB; each memory starts at one page (64 KiB), so 128 KiB in all.
        // Either memory alone may grow by 3 MiB: 3 MiB + 128 KiB is under the cap.
        let alone = 3 * PAGES_PER_MB;
        for memory in ["grow-a", "grow-b"] {
            let (answers, hit) = grow_in_one_store(4, &[(memory, alone)]).await;
            assert_eq!(answers, vec![Ok(1)], "{memory} alone");
            assert!(!hit);
        }
        // Both in one instance: 6 MiB + 128 KiB, past the cap, so the second
        // growth is stopped although that memory alone stays under it.
        let (answers, hit) = grow_in_one_store(4, &[("grow-a", alone), ("grow-b", alone)]).await;
        assert_eq!(answers[0], Ok(1));
        assert!(answers[1].is_err(), "{answers:?}");
        assert!(hit, "the cap is reported as the reason");
        // What is left under the cap can still be used by the other memory.
        let rest = PAGES_PER_MB - 2;
        let (answers, hit) = grow_in_one_store(4, &[("grow-a", alone), ("grow-b", rest)]).await;
        assert_eq!(answers, vec![Ok(1), Ok(1)]);
        assert!(!hit);
    }
}

//! The `http-fetch` capability: the only way a plugin reaches the network.
//!
//! Every hop (the first URL and each redirect) goes through [`Egress::check`]:
//! 1. only `http` and `https`, no `user:password@`;
//! 2. the host must be on the plugin's granted allowlist (or the user allowed
//!    any public host, or listed this exact `host:port` in this plugin's own
//!    `plugins.overrides.NAME.allow_local`); a refused local endpoint names
//!    that key, so the user knows how to grant it to this plugin alone;
//! 3. the host is resolved here, once, and every address is classified: loopback,
//!    private, CGNAT, link-local (cloud metadata), unspecified, multicast,
//!    broadcast, documentation, benchmark and reserved ranges are refused, and
//!    IPv6 forms that embed an IPv4 address (mapped, compatible, 6to4, NAT64)
//!    are judged by that address;
//! 4. the request then goes to exactly the address that was checked: each hop
//!    uses its own client whose resolver answers only that host with only that
//!    address, so a DNS answer that changes between check and connect
//!    (rebinding) cannot redirect it, and proxies from the environment are off.
//!
//! Redirects are followed here (`redirect::Policy::none()` in reqwest), at most
//! [`MAX_REDIRECTS`], each one checked like the first. A hop to another origin
//! (scheme, host or port differ) carries none of the plugin's own request
//! headers: not `Authorization` and `Cookie` only, but every one, since an API
//! key travels under any name (`X-Api-Key`, `Private-Token`). A same-origin
//! hop keeps them; once dropped they stay dropped. Bodies are cut at the
//! grant's size cap and marked `truncated`; the whole fetch, hops included, is
//! bounded by the grant's time cap; one tool call may make at most
//! `max_requests` fetches, so no plugin can crawl without bound.
//!
//! IP literals are parsed by the `url` crate, which normalises the odd
//! spellings (`0251.0376.0251.0376`, `2852039166`, `0xA9FEA9FE`) into the
//! address they mean before any check.
//!
//! Size: one job, the egress policy and the fetch it guards; over half the
//! file is its tests (one per way out it refuses).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use url::{Host, Url};

use super::policy::HttpGrant;

/// Most redirects followed per fetch.
pub const MAX_REDIRECTS: usize = 5;
/// Most response headers handed to the plugin.
const MAX_HEADERS: usize = 100;

/// A request as the plugin sent it.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    /// HTTP method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Option<Vec<u8>>,
}

/// The response handed back to the plugin.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// Status code of the last hop.
    pub status: u16,
    /// Headers of the last hop.
    pub headers: Vec<(String, String)>,
    /// Body, cut at the cap.
    pub body: Vec<u8>,
    /// True when the body was cut.
    pub truncated: bool,
    /// URL of the last hop.
    pub final_url: String,
}

/// Resolves host names; a trait so tests can play DNS tricks.
pub trait Resolver: Send + Sync + 'static {
    /// All addresses of `host`.
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;
}

/// The operating system's resolver.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, port))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// One checked hop: where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL's host as reqwest will look it up (None for IP literals).
    pub domain: Option<String>,
    /// The checked address and port.
    pub addr: SocketAddr,
}

/// The HTTP capability of one plugin call.
pub struct Egress {
    plugin: String,
    grant: HttpGrant,
    resolver: Arc<dyn Resolver>,
    used: AtomicU32,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("plugin", &self.plugin)
            .field("grant", &self.grant)
            .finish()
    }
}

/// Why an address is not reachable by plugins, or `None` for public ones.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10/8)",
        (172, 16..=31, _) => "private (172.16/12)",
        (192, 168, _) => "private (192.168/16)",
        (100, 64..=127, _) => "shared CGNAT (100.64/10)",
        (169, 254, _) => "link-local / cloud metadata (169.254/16)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast",
        (198, 18..=19, _) => "benchmarking (198.18/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // Forms that carry an IPv4 address: judge the address they carry.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).map(|_| "IPv4-mapped private or special address");
    }
    if seg[..6] == [0; 6] {
        return Some("IPv4-compatible IPv6 (deprecated)");
    }
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return forbidden_v4(v4).map(|_| "6to4 address of a private or special IPv4");
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return forbidden_v4(v4).map(|_| "NAT64 address of a private or special IPv4");
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        return Some("local-use NAT64 (64:ff9b:1::/48)");
    }
    // Only global unicast (2000::/3) is public; inside it, carve out the rest.
    if seg[0] & 0xe000 != 0x2000 {
        return Some(match seg[0] {
            0xfc00..=0xfdff => "unique local (fc00::/7)",
            0xfe80..=0xfebf => "link-local (fe80::/10)",
            0xfec0..=0xfeff => "site-local (fec0::/10)",
            0xff00..=0xffff => "multicast",
            _ => "not global unicast",
        });
    }
    if seg[0] == 0x2001 && seg[1] < 0x0200 {
        return Some("IETF special-purpose (2001::/23, Teredo included)");
    }
    if seg[0] == 0x2001 && seg[1] == 0x0db8 || seg[0] == 0x3fff && seg[1] < 0x1000 {
        return Some("documentation");
    }
    None
}

/// True for hosts that name this machine or a private network by themselves:
/// loopback and private IP literals, `localhost` and `*.localhost`.
fn looks_local(host: &Host<&str>) -> bool {
    let local_ip = |ip: IpAddr| {
        ip.is_loopback()
            || ip.is_unspecified()
            || matches!(forbidden_reason(ip), Some(r) if r.starts_with("private") || r.starts_with("unique local"))
    };
    match host {
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Host::Ipv4(v4) => local_ip(IpAddr::V4(*v4)),
        Host::Ipv6(v6) => local_ip(IpAddr::V6(*v6)),
    }
}

/// The URL's host as the allowlist compares it: lowercase, no trailing dot,
/// IPv6 in brackets.
fn host_key(host: &Host<&str>) -> String {
    match host {
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ipv4(v4) => v4.to_string(),
        Host::Ipv6(v6) => format!("[{v6}]"),
    }
}

impl Egress {
    /// The capability for one call of `plugin`, with its grant.
    pub fn new(plugin: &str, grant: HttpGrant, resolver: Arc<dyn Resolver>) -> Self {
        Self {
            plugin: plugin.to_owned(),
            grant,
            resolver,
            used: AtomicU32::new(0),
        }
    }

    /// Check one hop; on success, the address to connect to.
    pub async fn check(&self, url: &Url) -> Result<Target, String> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "refused `{url}`: scheme `{scheme}` is not allowed; only http and https"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "refused `{url}`: URLs with user:password@ are not allowed"
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| format!("refused `{url}`: it has no host"))?;
        let key = host_key(&host);
        let port = url.port_or_known_default().unwrap_or(80);
        let local = self
            .grant
            .allow_local
            .iter()
            .any(|e| e.host == key && e.port == port);
        let listed = self.grant.hosts.iter().any(|p| p.matches(&key));
        if !(local || listed || self.grant.any_public_host) {
            if looks_local(&host) {
                return Err(format!(
                    "refused `{url}`: `{key}:{port}` is a local endpoint the `{}` plugin has not been granted{}",
                    self.plugin,
                    self.local_hint(&key, port)
                ));
            }
            let allowed: Vec<String> = self.grant.hosts.iter().map(ToString::to_string).collect();
            return Err(if self.grant.enabled() {
                format!(
                    "refused `{url}`: host `{key}` is not in the `{}` plugin's allowlist ({}); the user can add it \
                     under plugins.overrides.{}.allow_hosts in config.yaml",
                    self.plugin,
                    allowed.join(", "),
                    self.plugin
                )
            } else {
                format!(
                    "refused `{url}`: the `{}` plugin has no network access",
                    self.plugin
                )
            });
        }
        let (domain, addrs) = match host {
            Host::Ipv4(v4) => (None, vec![IpAddr::V4(v4)]),
            Host::Ipv6(v6) => (None, vec![IpAddr::V6(v6)]),
            Host::Domain(d) => {
                let addrs = self
                    .resolver
                    .lookup(d, port)
                    .await
                    .map_err(|e| format!("could not resolve `{d}`: {e}"))?;
                if addrs.is_empty() {
                    return Err(format!("could not resolve `{d}`: no addresses"));
                }
                (Some(d.to_ascii_lowercase()), addrs)
            }
        };
        if local {
            return Ok(Target {
                domain,
                addr: SocketAddr::new(addrs[0], port),
            });
        }
        match addrs.iter().find(|ip| forbidden_reason(**ip).is_none()) {
            Some(ip) => Ok(Target {
                domain,
                addr: SocketAddr::new(*ip, port),
            }),
            None => {
                let ip = addrs[0];
                let why = forbidden_reason(ip).unwrap_or("special");
                let hint = if ip.is_loopback()
                    || matches!(forbidden_reason(ip), Some(r) if r.starts_with("private"))
                {
                    self.local_hint(&key, port)
                } else {
                    String::new()
                };
                Err(format!(
                    "refused `{url}`: `{key}` is {ip}, a {why} address that plugins may not reach{hint}"
                ))
            }
        }
    }

    /// How the user grants `key:port` to this plugin (and only to it).
    fn local_hint(&self, key: &str, port: u16) -> String {
        format!(
            " (the user can grant it to this plugin alone with \
             plugins.overrides.{}.allow_local: [\"{key}:{port}\"] in config.yaml)",
            self.plugin
        )
    }

    /// Perform a request with every hop checked; the error is the observation
    /// the plugin receives.
    pub async fn fetch(
        &self,
        req: FetchRequest,
        deadline: Option<Instant>,
    ) -> Result<FetchResponse, String> {
        let n = self.used.fetch_add(1, Ordering::Relaxed);
        if n >= self.grant.max_requests {
            return Err(format!(
                "refused: this tool call has used all {} of its HTTP requests (plugins.http_max_requests)",
                self.grant.max_requests
            ));
        }
        let mut limit = self.grant.timeout;
        if let Some(d) = deadline {
            limit = limit.min(d.saturating_duration_since(Instant::now()));
        }
        let started = Instant::now();
        match tokio::time::timeout(limit, self.fetch_hops(req, started + limit)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "HTTP request timed out after {} ms",
                limit.as_millis()
            )),
        }
    }

    async fn fetch_hops(
        &self,
        req: FetchRequest,
        deadline: Instant,
    ) -> Result<FetchResponse, String> {
        let mut method =
            reqwest::Method::from_bytes(req.method.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("`{}` is not an HTTP method", req.method))?;
        let mut url = Url::parse(req.url.trim())
            .map_err(|e| format!("`{}` is not a valid URL: {e}", req.url))?;
        let mut body = req.body;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &req.headers {
            let Ok(name) = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()) else {
                return Err(format!("`{name}` is not a valid header name"));
            };
            // The host decides where a request goes and how it is framed.
            if matches!(
                name.as_str(),
                "host"
                    | "connection"
                    | "content-length"
                    | "transfer-encoding"
                    | "upgrade"
                    | "te"
                    | "trailer"
            ) || name.as_str().starts_with("proxy-")
            {
                continue;
            }
            let Ok(value) = reqwest::header::HeaderValue::from_str(value) else {
                return Err(format!("the value of header `{name}` is not valid"));
            };
            headers.append(name, value);
        }
        for hop in 0..=MAX_REDIRECTS {
            let target = self.check(&url).await?;
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let client = pinned_client(&target, remaining)?;
            let mut request = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = &body {
                request = request.body(b.clone());
            }
            let mut response = request
                .send()
                .await
                .map_err(|e| describe_reqwest_error(&url, &e))?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                if hop == MAX_REDIRECTS {
                    return Err(format!(
                        "too many redirects (more than {MAX_REDIRECTS}) starting from `{}`",
                        req.url
                    ));
                }
                let location = location
                    .to_str()
                    .map_err(|_| "a redirect's Location header is not text".to_string())?;
                let next = url
                    .join(location)
                    .map_err(|e| format!("a redirect points to an invalid URL ({e})"))?;
                if status == reqwest::StatusCode::SEE_OTHER
                    || (matches!(status.as_u16(), 301 | 302) && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    body = None;
                }
                // The caller's headers were written for the origin it named
                // (API keys, tokens, cookies under any name): a hop to another
                // origin (scheme, host or port) gets none of them.
                if next.origin() != url.origin() {
                    headers.clear();
                }
                url = next;
                continue;
            }
            let response_headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .take(MAX_HEADERS)
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let cap = self.grant.max_response_bytes;
            let mut out = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| describe_reqwest_error(&url, &e))?
            {
                let room = cap.saturating_sub(out.len());
                if chunk.len() > room {
                    out.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                out.extend_from_slice(&chunk);
            }
            return Ok(FetchResponse {
                status: status.as_u16(),
                headers: response_headers,
                body: out,
                truncated,
                final_url: url.to_string(),
            });
        }
        Err(format!("too many redirects (more than {MAX_REDIRECTS})"))
    }
}

/// Answers exactly one host with exactly one (checked) address; anything else fails.
struct PinnedResolver {
    domain: String,
    addr: SocketAddr,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let answer: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> = if name
            .as_str()
            .trim_end_matches('.')
            .eq_ignore_ascii_case(self.domain.trim_end_matches('.'))
        {
            Ok(Box::new(std::iter::once(self.addr)))
        } else {
            Err(format!("`{}` was not checked by the egress policy", name.as_str()).into())
        };
        Box::pin(std::future::ready(answer))
    }
}

fn pinned_client(target: &Target, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!(
            "agent/",
            env!("CARGO_PKG_VERSION"),
            " (plugin http-fetch)"
        ))
        .pool_max_idle_per_host(0);
    let domain = target.domain.clone().unwrap_or_default();
    builder = builder.dns_resolver(PinnedResolver {
        domain,
        addr: target.addr,
    });
    builder
        .build()
        .map_err(|e| format!("could not set up the HTTP client: {e}"))
}

fn describe_reqwest_error(url: &Url, e: &reqwest::Error) -> String {
    let mut msg = format!("request to `{url}` failed: ");
    if e.is_timeout() {
        msg.push_str("timed out");
    } else if e.is_connect() {
        msg.push_str("could not connect");
    } else {
        msg.push_str("error");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::manifest::HostPattern;
    use crate::plugin::policy::LocalEndpoint;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn grant(hosts: &[&str], any_public: bool, local: &[&str]) -> HttpGrant {
        HttpGrant {
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            any_public_host: any_public,
            allow_local: local
                .iter()
                .map(|e| LocalEndpoint::parse(e).unwrap())
                .collect(),
            max_response_bytes: 1024,
            timeout: Duration::from_secs(5),
            max_requests: 5,
        }
    }

    /// Answers from a script, one answer per lookup, and counts lookups.
    struct ScriptedDns {
        answers: Mutex<Vec<Vec<IpAddr>>>,
        lookups: AtomicU32,
    }

    impl Resolver for ScriptedDns {
        fn lookup<'a>(
            &'a self,
            _host: &'a str,
            _port: u16,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let mut a = self.answers.lock().unwrap();
            let next = if a.len() > 1 {
                a.remove(0)
            } else {
                a[0].clone()
            };
            Box::pin(async move { Ok(next) })
        }
    }

    fn scripted(answers: &[&[&str]]) -> Arc<ScriptedDns> {
        Arc::new(ScriptedDns {
            answers: Mutex::new(
                answers
                    .iter()
                    .map(|a| a.iter().map(|s| s.parse().unwrap()).collect())
                    .collect(),
            ),
            lookups: AtomicU32::new(0),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_refused_and_public_ones_allowed() {
        for s in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "fec0::1",
        ] {
            assert!(forbidden_reason(ip(s)).is_some(), "{s} should be refused");
        }
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(forbidden_reason(ip(s)), None, "{s} should be allowed");
        }
    }

    #[tokio::test]
    async fn odd_ip_spellings_are_normalised_then_refused() {
        let e = Egress::new("web", grant(&[], true, &[]), Arc::new(SystemResolver));
        for u in [
            "http://0251.0376.0251.0376/",
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://169.254.43518/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://127.1/",
            "http://0/",
            "http://[::]/",
            "http://[0:0:0:0:0:0:0:1]/",
        ] {
            let err = e.check(&Url::parse(u).unwrap()).await.unwrap_err();
            assert!(err.contains("may not reach"), "{u}: {err}");
        }
    }

    #[tokio::test]
    async fn schemes_credentials_and_unlisted_hosts_are_refused_before_dns() {
        let dns = scripted(&[&["93.184.216.34"]]);
        let e = Egress::new(
            "web",
            grant(&["example.com", "*.example.org"], false, &[]),
            dns.clone(),
        );
        for u in [
            "file:///etc/passwd",
            "gopher://example.com/",
            "ftp://example.com/",
            "data:text/plain,hi",
        ] {
            let err = e.check(&Url::parse(u).unwrap()).await.unwrap_err();
            assert!(err.contains("scheme"), "{u}: {err}");
        }
        let err = e
            .check(&Url::parse("http://user:pw@example.com/").unwrap())
            .await
            .unwrap_err();
        assert!(err.contains("user:password"), "{err}");
        for u in [
            "https://evil.example/?d=secret",
            "http://example.com.evil.net/",
            "http://example.org/",
        ] {
            let err = e.check(&Url::parse(u).unwrap()).await.unwrap_err();
            assert!(
                err.contains("not in the `web` plugin's allowlist"),
                "{u}: {err}"
            );
        }
        assert_eq!(
            dns.lookups.load(Ordering::SeqCst),
            0,
            "refused hosts must not even be resolved"
        );
        assert!(
            e.check(&Url::parse("https://a.example.org/x").unwrap())
                .await
                .is_ok()
        );
        let none = Egress::new("code", grant(&[], false, &[]), dns);
        let err = none
            .check(&Url::parse("https://example.com/").unwrap())
            .await
            .unwrap_err();
        assert!(err.contains("no network access"), "{err}");
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let dns = scripted(&[&["10.0.0.5", "127.0.0.1"]]);
        let e = Egress::new("web", grant(&["internal.example.com"], false, &[]), dns);
        let err = e
            .check(&Url::parse("http://internal.example.com/").unwrap())
            .await
            .unwrap_err();
        assert!(err.contains("10.0.0.5") && err.contains("private"), "{err}");
    }

    #[tokio::test]
    async fn the_checked_address_is_pinned() {
        // One lookup per hop; mixed answers keep only the public address.
        let dns = scripted(&[&["10.0.0.1", "93.184.216.34"]]);
        let e = Egress::new("web", grant(&["example.com"], false, &[]), dns.clone());
        let t = e
            .check(&Url::parse("https://example.com/").unwrap())
            .await
            .unwrap();
        assert_eq!(t.addr, "93.184.216.34:443".parse().unwrap());
        assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
    }

    /// A one-shot HTTP server on loopback that answers every request with `reply`
    /// and counts requests.
    async fn serve(replies: Vec<String>) -> (u16, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            let mut replies = replies.into_iter();
            while let Ok((mut sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let Some(reply) = replies.next() else { break };
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (port, count)
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn get(url: &str) -> FetchRequest {
        FetchRequest {
            method: "GET".into(),
            url: url.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn dns_rebinding_cannot_move_the_connection() {
        // The first answer (checked) is the allowed local fixture; every later
        // answer is a private address. The request still reaches the fixture,
        // because the client never asks DNS again.
        let (port, hits) = serve(vec![ok("fixture")]).await;
        let dns = scripted(&[&["127.0.0.1"], &["10.9.9.9"]]);
        let e = Egress::new(
            "web",
            grant(&["x"], false, &[&format!("rebind.test:{port}")]),
            dns.clone(),
        );
        let r = e
            .fetch(get(&format!("http://rebind.test:{port}/")), None)
            .await
            .unwrap();
        assert_eq!(r.body, b"fixture");
        assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // And the other way round: private at check time is refused, nothing is sent.
        let dns = scripted(&[&["10.9.9.9"], &["127.0.0.1"]]);
        let e = Egress::new("web", grant(&["rebind.test"], false, &[]), dns);
        assert!(
            e.fetch(get(&format!("http://rebind.test:{port}/")), None)
                .await
                .is_err()
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn loopback_needs_allow_local_for_that_exact_port() {
        let (port, hits) = serve(vec![ok("hello")]).await;
        let url = format!("http://127.0.0.1:{port}/");
        let e = Egress::new(
            "web",
            grant(&["127.0.0.1"], true, &[]),
            Arc::new(SystemResolver),
        );
        let how = format!("plugins.overrides.web.allow_local: [\"127.0.0.1:{port}\"]");
        let err = e.fetch(get(&url), None).await.unwrap_err();
        assert!(err.contains("loopback") && err.contains(&how), "{err}");
        let e = Egress::new(
            "web",
            grant(
                &["x"],
                false,
                &[&format!("127.0.0.1:{}", port.wrapping_add(1))],
            ),
            Arc::new(SystemResolver),
        );
        let err = e.fetch(get(&url), None).await.unwrap_err();
        assert!(
            err.contains("local endpoint the `web` plugin has not been granted")
                && err.contains(&how),
            "{err}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let e = Egress::new(
            "web",
            grant(&["x"], false, &[&format!("127.0.0.1:{port}")]),
            Arc::new(SystemResolver),
        );
        let r = e.fetch(get(&url), None).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.truncated),
            (200, &b"hello"[..], false)
        );
    }

    #[tokio::test]
    async fn every_redirect_hop_is_checked() {
        let (port, hits) = serve(vec![
            "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/\r\ncontent-length: 0\r\n\r\n".into(),
            "HTTP/1.1 301 Moved\r\nlocation: http://evil.example/\r\ncontent-length: 0\r\n\r\n".into(),
            "HTTP/1.1 307 Temporary\r\nlocation: /final\r\ncontent-length: 0\r\n\r\n".into(),
            ok("final"),
        ])
        .await;
        let local = format!("127.0.0.1:{port}");
        let e = Egress::new(
            "web",
            grant(&["x"], false, &[&local]),
            Arc::new(SystemResolver),
        );
        let url = format!("http://{local}/start");
        let err = e.fetch(get(&url), None).await.unwrap_err();
        assert!(err.contains("169.254.169.254"), "{err}");
        let err = e.fetch(get(&url), None).await.unwrap_err();
        assert!(
            err.contains("evil.example") && err.contains("allowlist"),
            "{err}"
        );
        let r = e.fetch(get(&url), None).await.unwrap();
        assert_eq!(r.body, b"final");
        assert_eq!(r.final_url, format!("http://{local}/final"));
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    /// Like [`serve`], but also keeps the head of every request it gets.
    async fn serve_logged(replies: Vec<String>) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        tokio::spawn(async move {
            let mut replies = replies.into_iter();
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                l.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_ascii_lowercase());
                let Some(reply) = replies.next() else { break };
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (port, log)
    }

    #[tokio::test]
    async fn case10_a_cross_origin_redirect_carries_none_of_the_callers_headers() {
        // Two servers on 127.0.0.1: another port is another origin.
        let (other, other_log) = serve_logged(vec![ok("other"), ok("other")]).await;
        let redirect = |to: String| {
            format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n")
        };
        let (first, first_log) = serve_logged(vec![
            redirect(format!("http://127.0.0.1:{other}/landing")),
            redirect("/same".into()),
            ok("same"),
            redirect("/hop".into()),
            redirect(format!("http://127.0.0.1:{other}/twice")),
        ])
        .await;
        let e = Egress::new(
            "web",
            grant(
                &["x"],
                false,
                &[&format!("127.0.0.1:{first}"), &format!("127.0.0.1:{other}")],
            ),
            Arc::new(SystemResolver),
        );
        let secret_headers = || {
            [
                ("X-Api-Key", "key-123"),
                ("Private-Token", "tok-456"),
                ("Authorization", "Bearer abc"),
                ("Cookie", "session=789"),
                ("Accept", "application/x-custom"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
        };
        let with_headers = |path: &str| FetchRequest {
            method: "GET".into(),
            url: format!("http://127.0.0.1:{first}{path}"),
            headers: secret_headers(),
            body: None,
        };
        let secrets = [
            "key-123",
            "tok-456",
            "bearer abc",
            "session=789",
            "x-custom",
        ];
        // Cross-origin: the second server sees none of them.
        let r = e.fetch(with_headers("/start"), None).await.unwrap();
        assert_eq!(r.body, b"other");
        // Same-origin redirect: the caller's headers reach the final hop.
        let r = e.fetch(with_headers("/start2"), None).await.unwrap();
        assert_eq!(r.body, b"same");
        // Same origin first, then away: dropped at the origin change.
        let r = e.fetch(with_headers("/start3"), None).await.unwrap();
        assert_eq!(r.body, b"other");
        let first_log = first_log.lock().unwrap().clone();
        let other_log = other_log.lock().unwrap().clone();
        assert_eq!(first_log.len(), 5, "{first_log:?}");
        for head in &first_log {
            for s in secrets {
                assert!(head.contains(s), "same origin lost `{s}`: {head}");
            }
        }
        assert_eq!(other_log.len(), 2, "{other_log:?}");
        for head in &other_log {
            for s in secrets {
                assert!(!head.contains(s), "`{s}` followed the redirect: {head}");
            }
        }
    }

    #[tokio::test]
    async fn redirect_loops_stop_after_the_hop_limit() {
        let replies = (0..10)
            .map(|_| {
                "HTTP/1.1 302 Found\r\nlocation: /again\r\ncontent-length: 0\r\n\r\n".to_string()
            })
            .collect();
        let (port, hits) = serve(replies).await;
        let local = format!("127.0.0.1:{port}");
        let e = Egress::new(
            "web",
            grant(&["x"], false, &[&local]),
            Arc::new(SystemResolver),
        );
        let err = e
            .fetch(get(&format!("http://{local}/")), None)
            .await
            .unwrap_err();
        assert!(err.contains("too many redirects"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), MAX_REDIRECTS as u32 + 1);
    }

    #[tokio::test]
    async fn bodies_are_capped_and_requests_counted() {
        let big = "x".repeat(5000);
        let (port, _) = serve(vec![ok(&big), ok("a"), ok("b"), ok("c"), ok("d"), ok("e")]).await;
        let local = format!("127.0.0.1:{port}");
        let e = Egress::new(
            "web",
            grant(&["x"], false, &[&local]),
            Arc::new(SystemResolver),
        );
        let r = e
            .fetch(get(&format!("http://{local}/")), None)
            .await
            .unwrap();
        assert_eq!((r.body.len(), r.truncated), (1024, true));
        for _ in 0..4 {
            e.fetch(get(&format!("http://{local}/")), None)
                .await
                .unwrap();
        }
        let err = e
            .fetch(get(&format!("http://{local}/")), None)
            .await
            .unwrap_err();
        assert!(err.contains("used all 5"), "{err}");
    }

    #[tokio::test]
    async fn slow_servers_hit_the_time_cap() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let local = format!("127.0.0.1:{port}");
        let mut g = grant(&["x"], false, &[&local]);
        g.timeout = Duration::from_millis(300);
        let e = Egress::new("web", g, Arc::new(SystemResolver));
        let t = Instant::now();
        let err = e
            .fetch(get(&format!("http://{local}/")), None)
            .await
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}

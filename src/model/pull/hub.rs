//! Downloading one file from the Hugging Face hub.
//!
//! A hub file is downloaded from `{HF_ENDPOINT}/{repo}/resolve/{rev}/{file}`
//! (default endpoint `https://huggingface.co`, `HF_TOKEN` sent as a bearer
//! token to the endpoint's own host only, never to the CDN it redirects to).
//! Redirects are followed by hand so the hub's `X-Linked-Etag` (the file's
//! SHA-256) and `X-Linked-Size` can be read on the way: that way even an
//! arbitrary `hf:` file is verified, not only the registry's.
//!
//! Bytes stream into a uniquely named `.part` file beside the destination,
//! hashed as they arrive, and are renamed into place only once size and
//! hash match: a crash, a Ctrl-C or two concurrent pulls never leave a
//! half-written model where a complete one is expected. The check and the
//! move are `cache::commit_file`'s, shared with the PyPI fallback; a hub
//! download that stops is started over, not resumed.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::{commit_file, sha256_file, unique_suffix};
use super::{Expected, PROGRESS_STEP, PullError, Puller, create_parent, io_err};
use crate::model::progress::{ModelEvent, ModelProgress};
use crate::model::reference::HubFile;

impl Puller {
    /// Download one hub file to `dest` (verified when the hub states its
    /// hash, as it does for large files), creating its folder.
    pub async fn pull_file(
        &self,
        hub: &HubFile,
        what: &str,
        dest: &Path,
        progress: &dyn ModelProgress,
    ) -> Result<u64, PullError> {
        create_parent(dest).await?;
        self.download_hub(hub, what, dest, &Expected::default(), progress)
            .await
    }

    pub(super) async fn download_hub(
        &self,
        hub: &HubFile,
        what: &str,
        dest: &Path,
        expected: &Expected,
        progress: &dyn ModelProgress,
    ) -> Result<u64, PullError> {
        let first = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            hub.repo,
            hub.revision_or_main(),
            hub.file
        );
        let mut url = url::Url::parse(&first).map_err(|e| PullError::Unreachable {
            url: first.clone(),
            reason: format!("bad URL ({e}); check HF_ENDPOINT"),
        })?;
        let origin = url.origin();
        let mut linked = Expected::default();
        let mut hops = 0;
        let mut resp = loop {
            let mut req = self.client.get(url.clone());
            if let Some(t) = &self.token
                && url.origin() == origin
            {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| PullError::Unreachable {
                url: url.to_string(),
                reason: crate::errors::chain(&e.without_url()),
            })?;
            let h = resp.headers();
            if let Some(tag) = h.get("x-linked-etag").and_then(|v| v.to_str().ok()) {
                let tag = tag
                    .trim_matches('"')
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_ascii_lowercase();
                if tag.len() == 64 && tag.bytes().all(|b| b.is_ascii_hexdigit()) {
                    linked.sha256 = Some(tag);
                }
            }
            if let Some(n) = h
                .get("x-linked-size")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                linked.size = Some(n);
            }
            if resp.status().is_redirection() {
                hops += 1;
                let next = h
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| url.join(loc).ok());
                match next {
                    Some(n) if hops <= 10 => {
                        url = n;
                        continue;
                    }
                    _ => {
                        return Err(PullError::Status {
                            url: url.to_string(),
                            status: resp.status().as_u16(),
                            hint: "a redirect without a usable Location, or too many redirects"
                                .to_string(),
                        });
                    }
                }
            }
            if !resp.status().is_success() {
                let status = resp.status().as_u16();
                let hint = match status {
                    401 | 403 => {
                        "the file needs access rights: accept the model's licence on the hub and set HF_TOKEN"
                    }
                    404 => "no such repository, revision or file on the hub: check the reference",
                    429 => "rate limited: wait a little, or set HF_TOKEN",
                    _ => "try again later",
                };
                return Err(PullError::Status {
                    url: url.to_string(),
                    status,
                    hint: hint.to_string(),
                });
            }
            break resp;
        };

        let want = Expected {
            size: expected.size.or(linked.size).or(resp.content_length()),
            sha256: expected.sha256.clone().or(linked.sha256),
        };
        progress.event(&ModelEvent::DownloadStarted {
            what: what.to_string(),
            source: first.clone(),
            total: want.size,
        });
        let mut part = PartFile::create(dest).await?;
        let mut done = 0u64;
        let mut reported = 0u64;
        loop {
            let chunk = resp.chunk().await.map_err(|e| PullError::Unreachable {
                url: first.clone(),
                reason: crate::errors::chain(&e.without_url()),
            })?;
            let Some(chunk) = chunk else { break };
            part.write(&chunk).await?;
            done += chunk.len() as u64;
            if done - reported >= PROGRESS_STEP {
                reported = done;
                progress.event(&ModelEvent::DownloadProgress {
                    done,
                    total: want.size,
                });
            }
        }
        progress.event(&ModelEvent::DownloadProgress {
            done,
            total: want.size,
        });
        part.commit(what, &want).await
    }
}

/// A `.part` file that is removed unless committed.
struct PartFile {
    path: PathBuf,
    dest: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    hasher: Option<Sha256>,
    written: u64,
    committed: bool,
}

impl PartFile {
    async fn create(dest: &Path) -> Result<Self, PullError> {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!(".{}.part", unique_suffix()));
        let path = PathBuf::from(name);
        let f = tokio::fs::File::create(&path)
            .await
            .map_err(io_err(&path))?;
        Ok(Self {
            file: Some(tokio::io::BufWriter::with_capacity(1 << 20, f)),
            path,
            dest: dest.to_path_buf(),
            hasher: Some(Sha256::new()),
            written: 0,
            committed: false,
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), PullError> {
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        if let Some(f) = &mut self.file {
            f.write_all(bytes).await.map_err(io_err(&self.path))?;
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Check size and hash, then move into place; returns the size.
    async fn commit(mut self, what: &str, expected: &Expected) -> Result<u64, PullError> {
        if let Some(mut f) = self.file.take() {
            f.flush().await.map_err(io_err(&self.path))?;
            f.get_mut().sync_all().await.map_err(io_err(&self.path))?;
        }
        let sha = match self.hasher.take() {
            Some(h) => hex::encode(h.finalize()),
            None => sha256_file(&self.path)?,
        };
        let bytes = commit_file(&self.path, &self.dest, self.written, sha, what, expected).await?;
        self.committed = true;
        Ok(bytes)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::progress::NoProgress;
    use crate::model::pull::cached;
    use crate::model::reference::ModelRef;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake hub on 127.0.0.1: `/o/r/resolve/main/m.gguf` redirects to
    /// `/cdn/m.gguf` (carrying X-Linked-Etag/Size like the real hub), which
    /// serves `body`. Returns the endpoint and the request lines it saw.
    async fn fake_hub(body: Vec<u8>, linked_sha: String) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let linked_sha = linked_sha.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = sock.read(&mut tmp).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let auth = head.lines().any(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("authorization: bearer sekrit")
                    });
                    seen.lock().unwrap().push(format!("{line} auth={auth}"));
                    let resp = if line.starts_with("GET /o/r/resolve/main/m.gguf ") {
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: /cdn/m.gguf\r\nX-Linked-Etag: \"{linked_sha}\"\r\n\
                             X-Linked-Size: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes()
                    } else if line.starts_with("GET /cdn/m.gguf ") {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    } else {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    };
                    let _ = sock.write_all(&resp).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn body() -> Vec<u8> {
        (0..2_000_000u32).map(|i| (i % 251) as u8).collect()
    }

    fn events() -> (
        Arc<Mutex<Vec<ModelEvent>>>,
        impl Fn(&ModelEvent) + Send + Sync,
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        (log, move |e: &ModelEvent| {
            l2.lock().unwrap().push(e.clone())
        })
    }

    #[tokio::test]
    async fn pulls_from_the_hub_with_progress_then_hits_the_cache() {
        let body = body();
        let sha = hex::encode(Sha256::digest(&body));
        let (endpoint, seen) = fake_hub(body.clone(), sha.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let puller = Puller::new(endpoint, Some("sekrit".into())).unwrap();
        let r = ModelRef::parse("hf:o/r/m.gguf").unwrap();
        let (log, sink) = events();

        let path = puller.resolve_or_pull(&r, dir.path(), &sink).await.unwrap();
        assert_eq!(path, dir.path().join("o/r/m.gguf"));
        assert_eq!(std::fs::read(&path).unwrap(), body);
        let c = cached(&r, dir.path()).unwrap();
        assert_eq!(
            (c.bytes, c.sha256.as_deref()),
            (body.len() as u64, Some(sha.as_str()))
        );

        let log = log.lock().unwrap().clone();
        assert!(
            matches!(
                &log[0],
                ModelEvent::DownloadStarted {
                    total: Some(2_000_000),
                    ..
                }
            ),
            "{log:?}"
        );
        let dones: Vec<u64> = log
            .iter()
            .filter_map(|e| {
                if let ModelEvent::DownloadProgress { done, .. } = e {
                    Some(*done)
                } else {
                    None
                }
            })
            .collect();
        assert!(
            dones.len() >= 3 && dones.windows(2).all(|w| w[0] <= w[1]),
            "{dones:?}"
        );
        assert_eq!(dones.last(), Some(&2_000_000));
        assert!(matches!(
            log.last(),
            Some(ModelEvent::Cached {
                bytes: 2_000_000,
                ..
            })
        ));
        // The token went to the hub host; the redirect target is the same
        // host here, so it is sent there too (same origin).
        assert!(seen.lock().unwrap()[0].ends_with("auth=true"));

        // Second time: no request at all.
        let before = seen.lock().unwrap().len();
        let again = puller
            .resolve_or_pull(&r, dir.path(), &NoProgress)
            .await
            .unwrap();
        assert_eq!(again, path);
        assert_eq!(seen.lock().unwrap().len(), before);
        // No stray .part files.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("o/r"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}"); // m.gguf and m.gguf.sha256
    }

    #[tokio::test]
    async fn a_hash_mismatch_is_refused_and_nothing_is_cached() {
        let body = body();
        let wrong = "0".repeat(64);
        let (endpoint, _) = fake_hub(body, wrong.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let puller = Puller::new(endpoint, None).unwrap();
        let r = ModelRef::parse("hf:o/r/m.gguf").unwrap();
        let err = puller.pull(&r, dir.path(), &NoProgress).await.unwrap_err();
        assert!(
            matches!(&err, PullError::Mismatch { kind: "sha256", expected, .. } if *expected == wrong),
            "{err}"
        );
        assert!(cached(&r, dir.path()).is_none());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("o/r")).unwrap().collect();
        assert!(left.is_empty(), "partial files left behind: {left:?}");
    }

    #[tokio::test]
    async fn missing_files_and_unreachable_hubs_are_told_apart() {
        let (endpoint, _) = fake_hub(body(), "0".repeat(64)).await;
        let dir = tempfile::tempdir().unwrap();
        let r = ModelRef::parse("hf:o/r/other.gguf").unwrap();
        let err = Puller::new(endpoint, None)
            .unwrap()
            .pull(&r, dir.path(), &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PullError::Status { status: 404, .. }),
            "{err}"
        );

        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let err = Puller::new(closed, None)
            .unwrap()
            .pull(&r, dir.path(), &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(err, PullError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("HF_ENDPOINT"));
    }
}

//! The knowledge base through the real binary: a mixed folder, change
//! detection, removal, URLs over loopback, kill -9 during ingestion, a
//! full disk, and the `kb_search` tool in a scripted run.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use crate::common::{TestEnv, action, json_lines, run_stdout, stdout};
use predicates::prelude::*;

fn mixed_folder(env: &TestEnv) -> std::path::PathBuf {
    let docs = env.root.path().join("docs");
    std::fs::create_dir_all(docs.join("src")).unwrap();
    std::fs::create_dir_all(docs.join(".git")).unwrap();
    std::fs::write(
        docs.join("guide.md"),
        "# Guide\n\nWelcome.\n\n## Release\n\nTag the release with `just tag` and the robot publishes it.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("page.html"),
        "<html><head><title>Wiki</title><script>var secret=1</script></head><body><h1>Rota</h1><p>Maria handles the pager in December.</p></body></html>",
    )
    .unwrap();
    std::fs::write(
        docs.join("src/lib.rs"),
        "/// Adds numbers.\npub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n/// Retries a flaky network call three times with jitter.\npub fn retry_with_jitter() {}\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("notes.txt"),
        "Office wifi password rotates each quarter.\n",
    )
    .unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kb/report.pdf"),
        docs.join("report.pdf"),
    )
    .unwrap();
    std::fs::write(docs.join("blob.bin"), [0u8, 1, 2, 3, 255]).unwrap();
    std::fs::write(docs.join(".git/config"), "[core]\nhidden = true\n").unwrap();
    docs
}

#[test]
fn a_mixed_folder_is_ingested_searched_updated_and_removed() {
    let env = TestEnv::new();
    let docs = mixed_folder(&env);
    let out = stdout(&env, &["kb", "add", docs.to_str().unwrap()]);
    assert!(
        out.contains("5 added, 0 updated, 0 unchanged, 1 skipped"),
        "{out}"
    );
    let list = json_lines(&stdout(&env, &["kb", "list", "--json"]));
    assert_eq!(
        list.len(),
        5,
        "hidden folders and binary files are left out"
    );
    let kinds: Vec<_> = list
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"markdown".into())
            && kinds.contains(&"html".into())
            && kinds.contains(&"code".into())
            && kinds.contains(&"pdf".into())
    );
    // A PDF's passages say which page they are on.
    let hits = json_lines(&stdout(
        &env,
        &[
            "kb",
            "search",
            "where are the backup tapes stored",
            "--json",
        ],
    ));
    let location = hits[0]["location"].as_str().unwrap();
    assert!(
        location.contains("report.pdf") && location.contains("(page 2)"),
        "{hits:?}"
    );

    let hits = json_lines(&stdout(
        &env,
        &["kb", "search", "how is a release tagged", "--json"],
    ));
    assert!(
        hits[0]["location"]
            .as_str()
            .unwrap()
            .contains("guide.md:7-7 (Guide > Release)"),
        "{hits:?}"
    );
    let hits = json_lines(&stdout(
        &env,
        &["kb", "search", "who has the pager", "--json"],
    ));
    assert!(hits[0]["source"].as_str().unwrap().ends_with("page.html"));
    assert!(!hits[0]["text"].as_str().unwrap().contains("secret"));
    let hits = json_lines(&stdout(&env, &["kb", "search", "retry jitter", "--json"]));
    assert!(hits[0]["source"].as_str().unwrap().ends_with("lib.rs"));

    // Unchanged files are skipped; a changed one replaces its chunks.
    std::fs::write(docs.join("notes.txt"), "The wifi is now managed by IT.\n").unwrap();
    let out = stdout(&env, &["kb", "add", docs.to_str().unwrap()]);
    assert!(out.contains("0 added, 1 updated, 4 unchanged"), "{out}");
    assert!(json_lines(&stdout(&env, &["kb", "search", "rotates", "--json"])).is_empty());

    let out = stdout(&env, &["kb", "remove", docs.join("src").to_str().unwrap()]);
    assert!(out.contains("lib.rs"));
    assert_eq!(
        json_lines(&stdout(&env, &["kb", "list", "--json"])).len(),
        4
    );
    env.agent()
        .args(["kb", "remove", "/no/such/doc"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("agent kb list"));
    env.agent()
        .args(["kb", "add", docs.join("blob.bin").to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("binary"));
}

/// A one-page HTTP server on loopback; returns its URL.
fn serve_once(body: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/wiki/page")
}

#[test]
fn a_url_is_fetched_as_html_and_found_by_the_kb_search_tool() {
    let env = TestEnv::new();
    let url = serve_once(
        "<html><body><h2>Build</h2><p>The nightly build runs at 02:00 UTC on runner-7.</p></body></html>",
    );
    let out = stdout(&env, &["kb", "add", &url]);
    assert!(out.contains("1 added"), "{out}");
    let run = env.script(
        "kb",
        &[
            &action(
                "kb_search",
                serde_json::json!({"query": "when does the nightly build run"}),
            ),
            &action("finish", serde_json::json!({"answer": "02:00 UTC"})),
        ],
    );
    let out = run_stdout(
        &env,
        &[
            "run",
            "--yes",
            "--json",
            "--model",
            &run,
            "when is the nightly build?",
        ],
        0,
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("runner-7") && text.contains(&format!("{url} block 1 (Build)")),
        "{text}"
    );
}

/// A server that answers every request with a body that never ends (chunked,
/// or with a `Content-Length` of 600 MB when `announce`), and counts the body
/// bytes it got out before the client hung up.
fn serve_endless(announce: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let head = if announce {
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 629145600\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                };
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let block = "word ".repeat(13_107); // 65 535 bytes
                let chunk = if announce {
                    block
                } else {
                    format!("{:x}\r\n{block}\r\n", block.len())
                };
                // Ten times the cap at most, so a broken client cannot hang the test.
                for _ in 0..3200 {
                    if s.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                    counter.fetch_add(65_535, Ordering::Relaxed);
                }
            });
        }
    });
    (format!("http://{addr}/big.txt"), sent)
}

#[test]
fn case18_kb_add_of_a_huge_url_streams_and_stops_at_the_cap() {
    use std::sync::atomic::Ordering;
    let env = TestEnv::new();
    for announce in [false, true] {
        let (url, sent) = serve_endless(announce);
        let started = std::time::Instant::now();
        env.agent()
            .args(["kb", "add", &url])
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "passed the 20 MiB cap on a document (20971520 bytes)",
            ));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "announce={announce}: took {:?}",
            started.elapsed()
        );
        // What the server got out is the cap plus what socket buffers hold,
        // not the body.
        let sent = sent.load(Ordering::Relaxed);
        assert!(
            sent < 40 << 20,
            "announce={announce}: {sent} bytes were read"
        );
    }
    let list = stdout(&env, &["kb", "list"]);
    assert!(list.contains("empty"), "{list}");
}

#[test]
fn kill_9_during_kb_add_keeps_every_acknowledged_document() {
    // Security case 31, for ingestion.
    let env = TestEnv::new();
    let docs = env.root.path().join("many");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..400 {
        let body: String = (0..300)
            .map(|w| format!("word{} topic{i} ", w % 50))
            .collect();
        std::fs::write(docs.join(format!("doc{i:04}.txt")), body).unwrap();
    }
    let mut child = env
        .agent_std()
        .args(["kb", "add", docs.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 25 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("added ") {
            acknowledged.push(rest.split(" (").next().unwrap().to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        acknowledged.len() >= 25,
        "ingestion acknowledged too few before the kill"
    );

    let list = json_lines(&stdout(&env, &["kb", "list", "--json"]));
    let kept: std::collections::HashSet<_> = list
        .iter()
        .map(|d| d["source"].as_str().unwrap().to_string())
        .collect();
    for a in &acknowledged {
        assert!(kept.contains(a), "acknowledged {a} was lost");
    }
    // Every kept document is whole: its chunks are searchable.
    let first = acknowledged[0]
        .rsplit('/')
        .next()
        .unwrap()
        .trim_end_matches(".txt")
        .replace("doc", "");
    let topic = format!("topic{}", first.parse::<u32>().unwrap());
    let hits = json_lines(&stdout(&env, &["kb", "search", &topic, "--json"]));
    assert!(hits.iter().any(|h| h["source"] == acknowledged[0].as_str()));
    // Running again finishes the job.
    let out = stdout(&env, &["kb", "add", docs.to_str().unwrap()]);
    assert!(out.contains("0 failed"), "{out}");
    assert_eq!(
        json_lines(&stdout(&env, &["kb", "list", "--json"])).len(),
        400
    );
}

#[test]
fn a_full_disk_is_an_error_and_the_store_still_opens() {
    // Security case 33. Needs root to mount a small tmpfs; skipped otherwise.
    let env = TestEnv::new();
    let mnt = env.root.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let home = mnt.join("home");
    let docs = env.root.path().join("big");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..40 {
        let body: String = (0..20_000).map(|w| format!("t{i}x{w} ")).collect();
        std::fs::write(docs.join(format!("big{i:02}.txt")), body).unwrap();
    }
    let run = |args: &[&str]| {
        let mut cmd = env.agent();
        cmd.env("AGENT_HOME", &home).args(args);
        cmd.output().unwrap()
    };
    // Something else takes most of the disk; the store gets what is left.
    std::fs::write(mnt.join("filler0"), vec![7u8; 2_500_000]).unwrap();
    let out = run(&["kb", "add", docs.to_str().unwrap()]);
    assert!(!out.status.success(), "filling a 4 MB disk must fail");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("is full") && err.contains("Free some space"),
        "a full disk is named as such: {err}"
    );
    assert!(
        !err.contains("mv "),
        "no advice to move a healthy store: {err}"
    );
    let acknowledged: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("added ")
                .map(|r| r.split(" (").next().unwrap().to_string())
        })
        .collect();
    // Make room, then the store opens and keeps what was acknowledged.
    for i in 0..40 {
        let _ = std::fs::remove_file(mnt.join(format!("filler{i}")));
    }
    let out = run(&["kb", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    for a in &acknowledged {
        assert!(listed.contains(a.as_str()), "acknowledged {a} was lost");
    }
}

/// Case 41: a FIFO nobody writes to would block reading it for ever. Named
/// directly it is refused; inside a folder it is skipped; either way at once.
#[cfg(unix)]
#[test]
fn case41_kb_add_refuses_a_fifo_and_skips_one_in_a_folder() {
    use std::time::{Duration, Instant};
    let env = TestEnv::new();
    let docs = env.root.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("notes.md"),
        "# Notes\n\nThe pager rota is on the wiki.\n",
    )
    .unwrap();
    let pipe = docs.join("pipe.md");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let limit = Duration::from_secs(60);

    let started = Instant::now();
    let out = env
        .agent()
        .args(["kb", "add", pipe.to_str().unwrap()])
        .timeout(limit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pipe.md: not a regular file (a named pipe)"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    let out = env
        .agent()
        .args(["kb", "add", docs.to_str().unwrap()])
        .timeout(limit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 added, 0 updated, 0 unchanged, 1 skipped, 0 failed"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("pipe.md: not a regular file (a named pipe)"),
        "{stderr}"
    );
}

//! The interactive session driven for real in a pseudo-terminal with the
//! scripted model: a two-goal conversation with slash commands, approvals
//! answered each way, Ctrl-C during a slow step and on an empty line,
//! history kept across sessions, and resuming a session.
//!
//! The pty comes from libc's `openpty`; the child gets it as its controlling
//! terminal, so Ctrl-C (byte 0x03) becomes SIGINT exactly as at a keyboard.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{TestEnv, action};
use serde_json::json;

/// A child process on a pseudo-terminal, with everything it wrote.
pub(crate) struct Pty {
    master: std::fs::File,
    child: Child,
    output: Arc<Mutex<String>>,
    /// How much of the output earlier `expect`s consumed.
    seen: usize,
}

/// Remove ANSI escape sequences so tests match the text a person sees.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

impl Pty {
    pub(crate) fn spawn(cmd: std::process::Command) -> Pty {
        Self::spawn_sized(cmd, 120)
    }

    fn spawn_sized(mut cmd: std::process::Command, cols: u16) -> Pty {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let size = libc::winsize {
            ws_row: 40,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds into the provided ints.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        // SAFETY: both fds were just opened and are owned here.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        let master = unsafe { std::fs::File::from_raw_fd(master) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn agent on a pty");
        drop(cmd);
        let output = Arc::new(Mutex::new(String::new()));
        let sink = output.clone();
        let mut reader = master.try_clone().unwrap();
        let mut answer = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        // rustyline asks where the cursor is; answer as a terminal would.
                        if text.contains("\u{1b}[6n") {
                            let _ = answer.write_all(b"\x1b[1;1R");
                        }
                        sink.lock().unwrap().push_str(&text);
                    }
                }
            }
        });
        Pty {
            master,
            child,
            output,
            seen: 0,
        }
    }

    /// Wait until `needle` appears after what earlier calls consumed;
    /// returns the text up to and including it.
    pub(crate) fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let all = plain(&self.output.lock().unwrap());
            let rest = all.get(self.seen..).unwrap_or_default();
            if let Some(i) = rest.find(needle) {
                let upto = rest[..i + needle.len()].to_string();
                self.seen += i + needle.len();
                return upto;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {needle:?}; output after the last match:\n{rest}\n--- whole output ---\n{all}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn prompt(&mut self) {
        self.expect("agent> ", Duration::from_secs(120));
    }

    fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Type a line and press Enter.
    pub(crate) fn line(&mut self, text: &str) {
        self.send(text);
        self.send("\r");
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the session did not end; output:\n{}",
                    plain(&self.output.lock().unwrap())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn finish(answer: &str) -> String {
    action("finish", json!({"answer": answer}))
}

fn chat(env: &TestEnv, args: &[&str]) -> Pty {
    let mut cmd = env.agent_std();
    cmd.arg("chat").args(args);
    Pty::spawn(cmd)
}

fn runs(env: &TestEnv) -> Vec<serde_json::Value> {
    let out = env
        .agent()
        .args(["runs", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn a_two_goal_conversation_with_slash_commands() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[&finish("The answer is 42."), &finish("Twice that is 84.")],
    );
    let mut s = chat(&env, &["--model", &model]);
    s.prompt();
    s.line("what is six times seven?");
    s.expect("The answer is 42.", LONG);
    s.prompt();
    // Tab completes a slash command.
    s.send("/bud\t");
    s.expect("/budget", LONG);
    s.send("\r");
    s.expect("at most 20 steps", LONG);
    s.prompt();
    s.line("/model");
    s.expect("model: scripted", LONG);
    s.prompt();
    // What the session's goal cost, by model.
    s.line("/cost");
    let cost = s.expect(" tokens, ", LONG);
    assert!(cost.contains("s.yaml (default): 1 call, "), "{cost}");
    s.prompt();
    s.line("/tools");
    s.expect("write_file", LONG);
    s.prompt();
    s.line("/frobnicate");
    let shown = s.expect("(to send", LONG);
    assert!(
        shown.contains("unknown command /frobnicate") && shown.contains("/help"),
        "{shown}"
    );
    s.prompt();
    s.line("/help");
    s.expect("/save FILE", LONG);
    s.prompt();
    // A line ending in \ goes on on the next line.
    s.line("and twice \\");
    s.line("that?");
    s.expect("Twice that is 84.", LONG);
    s.prompt();
    s.line("/save talk.md");
    s.expect("saved 2 exchanges", LONG);
    s.prompt();
    s.line("/exit");
    let status = s.wait(LONG);
    assert!(status.success(), "{status:?}");

    // The follow-up is the user's words, and carries the first exchange
    // to the model beside them.
    let list = runs(&env);
    assert_eq!(list.len(), 2, "{list:?}");
    let follow = list
        .iter()
        .find(|r| r["goal"] == "and twice \nthat?")
        .expect("the follow-up run");
    let earlier = &follow["earlier"][0];
    assert_eq!(earlier["goal"], "what is six times seven?", "{follow}");
    assert_eq!(earlier["outcome"], "The answer is 42.", "{follow}");
    let md = std::fs::read_to_string(env.root.path().join("talk.md")).unwrap();
    assert!(md.contains("## 1. what is six times seven?"), "{md}");
    assert!(md.contains("## 2. and twice"), "{md}");
    assert!(md.contains("Twice that is 84."), "{md}");
}

#[test]
fn approvals_answered_yes_no_feedback_and_always() {
    let env = TestEnv::new();
    env.config("approvals:\n  write: ask\n");
    let write = |path: &str| action("write_file", json!({"path": path, "content": "x"}));
    let model = env.script(
        "s",
        &[
            &write("no.txt"),
            &write("yes.txt"),
            &write("feedback.txt"),
            &write("always.txt"),
            &write("again.txt"),
            &finish("wrote them"),
            &write("denied.txt"),
            &finish("could not"),
        ],
    );
    let mut s = chat(&env, &["--model", &model]);
    s.prompt();
    s.line("write some files");

    let q = s.expect("approve> ", LONG);
    assert!(
        q.contains("write_file") && q.contains("path: no.txt"),
        "{q}"
    );
    assert!(q.contains("permissions of plugin files"), "{q}");
    s.line("n");
    s.expect("declined", LONG);

    s.expect("approve> ", LONG);
    s.line("y");
    let q = s.expect("approve> ", LONG);
    assert!(q.contains("feedback.txt"), "{q}");
    s.line("please stop writing files");
    s.expect("said: please stop writing files", LONG);

    s.expect("approve> ", LONG);
    s.line("always");
    s.expect("wrote them", LONG);
    s.prompt();
    // A session-wide deny replaces the earlier "always".
    s.line("/approve deny");
    s.expect("approval policy for this session: deny", LONG);
    s.prompt();
    s.line("one more file");
    let shown = s.expect("could not", LONG);
    assert!(!shown.contains("approve> "), "{shown}");
    assert!(shown.contains("denies `write_file`"), "{shown}");
    s.prompt();
    s.send("\x04");
    assert!(s.wait(LONG).success());

    let ws = &env.workspace;
    assert!(!ws.join("no.txt").exists());
    assert!(ws.join("yes.txt").exists());
    assert!(!ws.join("feedback.txt").exists());
    assert!(ws.join("always.txt").exists());
    // "always" stuck: the next write ran without a question.
    assert!(ws.join("again.txt").exists());
    assert!(!ws.join("denied.txt").exists());
}

#[test]
fn ctrl_c_cancels_a_slow_step_and_the_session_goes_on() {
    let env = TestEnv::new();
    let model = env.script_yaml(
        "s",
        &format!(
            "responses:\n  - text: '{}'\n    delay_ms: 60000\n  - '{}'\n",
            finish("too late"),
            finish("back again")
        ),
    );
    let mut s = chat(&env, &["--model", &model]);
    s.prompt();
    s.line("take your time");
    s.expect("thinking", LONG);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    s.send("\x03");
    s.expect("cancelled", Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10));
    s.prompt();
    s.line("try again");
    s.expect("back again", LONG);
    s.prompt();

    // Ctrl-C on an empty line asks first; "n" stays, "y" leaves.
    s.send("\x03");
    s.expect("Leave the session? [y/N]", LONG);
    s.line("n");
    s.prompt();
    s.send("\x03");
    s.expect("Leave the session? [y/N]", LONG);
    s.line("y");
    assert!(s.wait(LONG).success());

    let list = runs(&env);
    let statuses: Vec<&str> = list.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"cancelled"), "{statuses:?}");
    assert!(statuses.contains(&"finished"), "{statuses:?}");
}

#[test]
fn history_is_kept_across_sessions_and_a_session_resumes() {
    let env = TestEnv::new();
    let first = env.script("one", &[&finish("Paris.")]);
    let mut s = chat(&env, &["--model", &first]);
    s.prompt();
    s.line("what is the capital of France?");
    s.expect("Paris.", LONG);
    s.prompt();
    s.line("/exit");
    let end = s.expect("--resume", LONG);
    assert!(end.contains("session"), "{end}");
    assert!(s.wait(LONG).success());

    let second = env.script("two", &[&finish("About 2 million people.")]);
    let mut s = chat(&env, &["--resume", "--model", &second]);
    let banner = s.expect("agent> ", LONG);
    assert!(banner.contains("resumed, 1 earlier exchanges"), "{banner}");
    assert!(
        banner.contains("what is the capital of France?"),
        "{banner}"
    );
    // Up twice: past `/exit` to the goal typed in the first session.
    s.send("\x1b[A");
    s.send("\x1b[A");
    s.expect("capital of France?", LONG);
    s.send("\x15"); // clear the line
    s.line("and how many people live there?");
    s.expect("About 2 million people.", LONG);
    s.prompt();
    s.line("/exit");
    assert!(s.wait(LONG).success());

    let list = runs(&env);
    let follow = list
        .iter()
        .find(|r| r["goal"] == "and how many people live there?")
        .expect("the follow-up run");
    assert_eq!(
        follow["earlier"][0]["outcome"], "Paris.",
        "the resumed session carried the answer: {follow}"
    );
}

#[test]
fn a_piped_session_reads_goals_from_stdin_and_never_asks() {
    let env = TestEnv::new();
    env.config("approvals:\n  write: ask\n");
    let model = env.script(
        "s",
        &[
            &action("write_file", json!({"path": "a.txt", "content": "x"})),
            // a.txt is missing: the first finish is refused, the second
            // ends the run unverified.
            &finish("could not write"),
            &finish("could not write"),
            &action(
                "remember",
                json!({"text": "The deploy key lives in the vault."}),
            ),
            &finish("noted"),
            &finish("hello again"),
        ],
    );
    let out = env
        .agent()
        .args(["chat", "--model", &model])
        .write_stdin("write a.txt\nremember it\n/memory deploy\n/kb\n/plugins\n/runs\n/approve\n/clear\nfresh start\n/exit\n")
        .timeout(LONG)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("nobody can answer"), "{stdout}");
    assert!(stdout.contains("could not write"), "{stdout}");
    assert!(!env.workspace.join("a.txt").exists());
    // /memory finds what a goal remembered; /kb says how to fill it.
    let listed = stdout
        .lines()
        .any(|l| l.contains("The deploy key lives in the vault.") && !l.contains('{'));
    assert!(listed, "{stdout}");
    assert!(stdout.contains("knowledge base is empty"), "{stdout}");
    // /plugins shows each plugin's grant; /runs the runs of this session.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("files") && l.contains("workspace write")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("unverified") && l.contains(" tok  write a.txt")),
        "{stdout}"
    );
    assert!(
        stdout.contains("approval policy for this session: from the config"),
        "{stdout}"
    );
    // After /clear nothing of the earlier goals is carried.
    assert!(stdout.contains("conversation cleared"), "{stdout}");
    let list = runs(&env);
    assert!(list.iter().any(|r| r["goal"] == "fresh start"), "{list:?}");
}

#[test]
fn vi_mode_from_the_config_and_no_colour_with_no_color() {
    let env = TestEnv::new();
    env.config("repl:\n  edit_mode: vi\n");
    let model = env.script("s", &[&finish("Done in vi.")]);
    let mut s = chat(&env, &["--model", &model]);
    s.prompt();
    s.send("abcd");
    s.expect("abcd", LONG);
    // Escape to normal mode, then `x` deletes the character under the cursor.
    s.send("\x1b");
    std::thread::sleep(Duration::from_millis(700));
    s.send("x");
    std::thread::sleep(Duration::from_millis(200));
    s.send("\r");
    s.expect("Done in vi.", LONG);
    s.prompt();
    s.send("\x04");
    assert!(s.wait(LONG).success());
    let list = runs(&env);
    assert_eq!(list[0]["goal"], "abc", "{list:?}");
    // NO_COLOR is set: the transcript carries no colour or style codes.
    let raw = s.output.lock().unwrap().clone();
    for sgr in [
        "\x1b[1m", "\x1b[2m", "\x1b[3m", "\x1b[36m", "\x1b[32m", "\x1b[33m",
    ] {
        assert!(!raw.contains(sgr), "{sgr:?} in {raw:?}");
    }
}

#[test]
fn agent_run_applies_approve_flags_and_never_hangs_without_a_terminal() {
    let env = TestEnv::new();
    let write = action("write_file", json!({"path": "a.txt", "content": "x"}));
    // --approve ask with nobody to ask: refused with a reason, the run goes on.
    let model = env.script("ask", &[&write, &finish("gave up")]);
    let out = env
        .agent()
        .args(["run", "--json", "--approve", "ask", "--model", &model, "g"])
        .timeout(LONG)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ev = crate::common::events(&out.stdout);
    let obs = ev
        .iter()
        .find(|e| e["type"] == "observation" && e["tool"] == "write_file")
        .expect("an observation for write_file");
    assert!(
        obs["observation"]
            .as_str()
            .unwrap()
            .contains("nobody can answer"),
        "{obs}"
    );
    assert!(!env.workspace.join("a.txt").exists());

    // --yes runs what the config says to ask about; a config deny still holds.
    env.config("approvals:\n  write: ask\n  execute: deny\n");
    let model = env.script("yes", &[&write, &finish("done")]);
    env.agent()
        .args(["run", "--yes", "--model", &model, "g"])
        .timeout(LONG)
        .assert()
        .success();
    assert!(env.workspace.join("a.txt").exists());
    let code = action("run_python", json!({"code": "print(1)"}));
    let model = env.script("deny", &[&code, &finish("done")]);
    let out = env
        .agent()
        .args(["run", "--json", "--approve", "auto", "--model", &model, "g"])
        .timeout(LONG)
        .output()
        .unwrap();
    let ev = crate::common::events(&out.stdout);
    let obs = ev
        .iter()
        .find(|e| e["type"] == "observation" && e["tool"] == "run_python")
        .expect("an observation for run_python");
    assert!(
        obs["observation"]
            .as_str()
            .unwrap()
            .contains("denies `run_python`"),
        "{obs}"
    );
}

#[test]
fn agent_run_on_a_terminal_asks_and_shows_what_will_run() {
    let env = TestEnv::new();
    env.config("approvals:\n  write: ask\n");
    let model = env.script(
        "s",
        &[
            &action("write_file", json!({"path": "a.txt", "content": "hello"})),
            &finish("written"),
        ],
    );
    let mut cmd = env.agent_std();
    cmd.args(["run", "--model", &model, "write a.txt"]);
    let mut s = Pty::spawn(cmd);
    let q = s.expect("approve> ", LONG);
    // The step is on screen before its question.
    let step = q.find("→ write_file").expect("the step line");
    let question = q
        .find("? approve step 1: write_file")
        .expect("the question");
    assert!(step < question, "{q}");
    assert!(q.contains("content: hello"), "{q}");
    s.line("y");
    s.expect("written", LONG);
    assert!(s.wait(LONG).success());
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("a.txt")).unwrap(),
        "hello"
    );
}

#[test]
fn a_narrow_terminal_wraps_thoughts_with_a_hanging_indent() {
    let env = TestEnv::new();
    let thought =
        "I have read every file in the workspace and the answer is short enough to give now";
    let step = json!({"thought": thought, "tool": "finish", "args": {"answer": "ok"}}).to_string();
    let model = env.script("s", &[&step]);
    let mut cmd = env.agent_std();
    cmd.args(["chat", "--model", &model]);
    let mut s = Pty::spawn_sized(cmd, 40);
    s.prompt();
    s.line("go");
    let shown = s.expect("✔ finished", LONG);
    // The spinner's last frame is erased in place, so the thought starts mid-line.
    let from = shown
        .find("[1] I have")
        .unwrap_or_else(|| panic!("no thought line in {shown}"));
    let lines: Vec<&str> = shown[from..].lines().collect();
    let first = 0;
    let mut words = Vec::new();
    for (i, line) in lines[first..].iter().enumerate() {
        if line.contains("→ finish") {
            break;
        }
        let text = if i == 0 {
            &line[4..]
        } else {
            line.strip_prefix("    ")
                .unwrap_or_else(|| panic!("no hanging indent: {line:?}"))
        };
        // The step's time may follow the last line of the thought.
        let text = text.split(" (").next().unwrap_or_default();
        assert!(
            4 + text.chars().count() <= 40,
            "{line:?} is wider than 40 columns"
        );
        words.extend(text.split_whitespace().map(String::from));
    }
    assert_eq!(words.join(" "), thought);
    s.prompt();
    s.send("\x04");
    assert!(s.wait(LONG).success());
}

#[test]
fn agent_plan_shows_each_plan_to_edit_approve_or_reject() {
    let env = TestEnv::new();
    let plan = |d: &str| {
        json!({"thought": "p", "steps": [{"description": d, "success_criterion": "done"}]})
            .to_string()
    };
    let model = env.script(
        "s",
        &[
            &plan("write hi to a.txt"),
            &plan("write hello to a.txt"),
            &action("write_file", json!({"path": "a.txt", "content": "hello"})),
            &finish("wrote a.txt"),
            // a.txt is there as the goal asks: the plan ends without a replan.
            &plan("delete everything"),
        ],
    );
    let mut s = chat(&env, &["--model", &model]);
    s.prompt();
    s.line("/agent plan");
    s.expect("plan strategy", LONG);
    s.prompt();
    s.line("write a greeting to a.txt");
    s.expect("1. write hi to a.txt", LONG);
    s.expect("Run this plan?", LONG);
    // An edit goes back to the planner, whose new plan is shown again.
    s.line("say hello, not hi");
    s.expect("1. write hello to a.txt", LONG);
    s.expect("Run this plan?", LONG);
    s.line("y");
    s.expect("a.txt exists as the goal asks. wrote a.txt", LONG);
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("a.txt")).unwrap(),
        "hello"
    );
    s.prompt();
    s.line("wipe the workspace");
    // A follow-up is reviewed as what the user asked, not as an account of
    // the conversation so far.
    s.expect("Proposed plan for: wipe the workspace", LONG);
    s.expect("1. delete everything", LONG);
    s.expect("Run this plan?", LONG);
    s.line("n");
    s.expect("rejected", LONG);
    assert!(env.workspace.join("a.txt").exists());
}

#[test]
fn a_recipe_runs_from_the_session_asking_for_what_it_needs() {
    let env = TestEnv::new();
    env.config("memory:\n  reflect: false\n");
    let dir = env.root.path().join("recipes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("greet.yaml"),
        "title: Greet\nprompt: Greet {{ who }} in {{ lang }}.\nparameters:\n  - {key: who, requirement: user_prompt, description: whom to greet}\n  - {key: lang}\n",
    )
    .unwrap();
    let model = env.script("s", &[&finish("Bonjour Ada")]);
    let mut s = chat(&env, &["--model", &model]);
    s.prompt();
    // Tab completes the recipe's name, then its parameters.
    s.send("/recipe gr\t");
    s.expect("/recipe greet", LONG);
    s.send(" la\t");
    s.expect("lang=", LONG);
    s.line("French");
    // `who` was not given: the session asks for it.
    s.expect("who (whom to greet): ", LONG);
    s.line("Ada");
    let shown = s.expect("Bonjour Ada", LONG);
    assert!(
        shown.contains("recipe: greet lang=French who=Ada"),
        "{shown}"
    );
    s.prompt();
    // A bad value is an error naming it, and the session goes on.
    s.line("/recipe greet colour=red lang=x who=y");
    s.expect("unknown parameter `colour`", LONG);
    s.prompt();
    s.line("/exit");
    assert!(s.wait(LONG).success());
    let listed = runs(&env);
    assert_eq!(
        listed[0]["settings"]["recipe"]["name"], "greet",
        "{listed:?}"
    );
}

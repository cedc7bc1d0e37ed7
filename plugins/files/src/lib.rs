//! `files`: the agent's built-in plugin for working with files in the workspace.
//!
//! Tools: `list_files`, `read_file`, `write_file`, `append_file`, `search_files`,
//! `delete_file` (their names are part of the public interface; keep them).
//!
//! Confinement is the host's job, not ours: the host preopens the workspace as
//! the WASI directory `/workspace` (read-only or read-write, as the manifest and
//! the user allow) and nothing else, so this code cannot reach any other file
//! however it tries. We still refuse absolute paths and `..` before touching
//! anything (defence in depth, and a clearer message for the model than the
//! sandbox's "not permitted").
//!
//! Only regular files are read or written: a named pipe, a device or a socket
//! is refused by its type (a `stat`, which never blocks) before it is opened,
//! because opening a FIFO waits for a writer and a device may read without
//! end. (A file swapped for a FIFO between the check and the open still only
//! blocks this call until the host's deadline stops it.)
//!
//! Every answer is written for a model to read: short, plain text, with errors
//! that say what went wrong and what to do (`file not found: notes.txt`), and
//! outputs capped so one call cannot flood the model's context.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

wit_bindgen::generate!({
    path: "../wit",
    world: "plugin",
});

use exports::agent::plugin::tools::{Guest, ToolInfo};

/// Where the host mounts the workspace inside the sandbox.
const WORKSPACE: &str = "/workspace";
/// `read_file` returns at most this many bytes unless asked for fewer.
const READ_DEFAULT: u64 = 64 * 1024;
/// Upper bound for `read_file`'s `max_bytes` (the host caps results near 256 KiB).
const READ_MAX: u64 = 192 * 1024;
/// At most this many entries from `list_files`.
const LIST_MAX: usize = 500;
/// At most this many matching lines from `search_files`.
const SEARCH_MAX: usize = 100;
/// `search_files` skips files larger than this (logs, data dumps, binaries).
const SEARCH_FILE_MAX: u64 = 2 * 1024 * 1024;
/// A matching line is shown up to this many characters.
const LINE_MAX: usize = 200;
/// Stop walking directories after this many entries so a huge tree cannot hang a call.
const WALK_MAX: usize = 20_000;

struct Files;

impl Guest for Files {
    fn describe() -> Vec<ToolInfo> {
        let tool = |name: &str, description: &str, schema: &str| ToolInfo {
            name: name.to_string(),
            description: description.to_string(),
            args_schema: schema.to_string(),
        };
        vec![
            tool(
                "list_files",
                "List the files and directories in a workspace directory (default: the workspace root).",
                r#"{"type":"object","properties":{"path":{"type":"string","description":"Directory relative to the workspace root; default \".\""},"recursive":{"type":"boolean","description":"Also list subdirectories; default false"}},"additionalProperties":false}"#,
            ),
            tool(
                "read_file",
                "Read a text file from the workspace. Long files are returned in parts: use offset to continue.",
                r#"{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the workspace root"},"offset":{"type":"integer","minimum":0,"description":"Byte offset to start reading at; default 0"},"max_bytes":{"type":"integer","minimum":1,"maximum":196608,"description":"Most bytes to return; default 65536"}},"required":["path"],"additionalProperties":false}"#,
            ),
            tool(
                "write_file",
                "Create or overwrite a file in the workspace with the given content (parent directories are created).",
                r#"{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the workspace root"},"content":{"type":"string","description":"The complete new content of the file"}},"required":["path","content"],"additionalProperties":false}"#,
            ),
            tool(
                "append_file",
                "Append text to the end of a file in the workspace (the file is created if missing).",
                r#"{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the workspace root"},"content":{"type":"string","description":"Text to add at the end"}},"required":["path","content"],"additionalProperties":false}"#,
            ),
            tool(
                "search_files",
                "Search the workspace's text files for a plain-text pattern; returns matching lines as path:line: text. It finds text only: it cannot compare numbers, filter rows or count.",
                r#"{"type":"object","properties":{"pattern":{"type":"string","minLength":1,"description":"Text to look for (not a regular expression)"},"path":{"type":"string","description":"File or directory to search, relative to the workspace root; default \".\""},"ignore_case":{"type":"boolean","description":"Match regardless of case; default false"}},"required":["pattern"],"additionalProperties":false}"#,
            ),
            tool(
                "delete_file",
                "Delete a file (or an empty directory) in the workspace.",
                r#"{"type":"object","properties":{"path":{"type":"string","description":"File path relative to the workspace root"}},"required":["path"],"additionalProperties":false}"#,
            ),
        ]
    }

    fn invoke(tool: String, args_json: String) -> Result<String, String> {
        match tool.as_str() {
            "list_files" => list_files(args(&tool, &args_json)?),
            "read_file" => read_file(args(&tool, &args_json)?),
            "write_file" => write_file(args(&tool, &args_json)?, false),
            "append_file" => write_file(args(&tool, &args_json)?, true),
            "search_files" => search_files(args(&tool, &args_json)?),
            "delete_file" => delete_file(args(&tool, &args_json)?),
            other => Err(format!(
                "unknown tool `{other}`; this plugin offers list_files, read_file, write_file, append_file, search_files, delete_file"
            )),
        }
    }
}

export!(Files);

/// Parses a tool's arguments, turning serde's message into one the model can act on.
fn args<T: DeserializeOwned>(tool: &str, json: &str) -> Result<T, String> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| format!("invalid arguments for {tool}: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    path: Option<String>,
    recursive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    offset: Option<u64>,
    max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    pattern: String,
    path: Option<String>,
    ignore_case: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    path: String,
}

/// A path the model gave, checked and joined onto the workspace mount.
struct WsPath {
    /// As the model wrote it, normalised (`./a//b` → `a/b`), for messages.
    shown: String,
    /// Where it lives inside the sandbox.
    full: PathBuf,
}

/// Checks a model-supplied path: relative, no `..`, no NUL; `""` and `.`
/// mean the root. A backslash separates parts like `/` does: models write
/// Windows paths (`.\logs`, seen from Qwen2.5-Coder-1.5B), and a workspace
/// file whose name holds a backslash is rarer than that.
fn resolve(raw: &str) -> Result<WsPath, String> {
    if raw.contains('\0') {
        return Err("invalid path: it contains a NUL character".to_string());
    }
    let trimmed = raw.trim().replace('\\', "/");
    let trimmed = trimmed.as_str();
    let path = Path::new(trimmed);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "invalid path `{trimmed}`: `..` is not allowed; use a path inside the workspace, relative to its root"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "invalid path `{trimmed}`: absolute paths are not allowed; use a path relative to the workspace root"
                ));
            }
        }
    }
    let shown = if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    };
    let mut full = PathBuf::from(WORKSPACE);
    full.extend(&parts);
    Ok(WsPath { shown, full })
}

/// Turns an I/O error into a sentence naming the path and, where useful, the fix.
fn io_error(action: &str, path: &WsPath, err: &io::Error) -> String {
    if !Path::new(WORKSPACE).exists() {
        return "no workspace is available to this plugin (its manifest or the user's settings grant no workspace access)".to_string();
    }
    let p = &path.shown;
    match err.kind() {
        io::ErrorKind::NotFound => format!("file not found: {p}"),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => format!(
            "permission denied: cannot {action} {p} (the sandbox refused: the path leads outside the workspace, or the workspace is read-only for this plugin)"
        ),
        io::ErrorKind::IsADirectory => format!("{p} is a directory, not a file"),
        io::ErrorKind::NotADirectory => {
            format!("{p}: a part of this path is a file, not a directory")
        }
        io::ErrorKind::DirectoryNotEmpty => {
            format!("cannot {action} {p}: the directory is not empty (delete its files first)")
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            format!("cannot {action} {p}: no space left")
        }
        _ => format!("cannot {action} {p}: {err}"),
    }
}

/// Refuses anything but a regular file: a directory with a pointer to
/// `list_files`, a FIFO, device or socket with a message saying why.
fn regular_file(path: &WsPath, meta: &fs::Metadata, action: &str) -> Result<(), String> {
    let kind = meta.file_type();
    if kind.is_file() {
        Ok(())
    } else if kind.is_dir() {
        Err(format!(
            "{} is a directory, not a file; use list_files to see what is in it",
            path.shown
        ))
    } else {
        Err(format!(
            "cannot {action} {}: it is not a regular file (a named pipe, device or socket); only regular files can be read or written",
            path.shown
        ))
    }
}

fn list_files(args: ListArgs) -> Result<String, String> {
    let dir = resolve(args.path.as_deref().unwrap_or("."))?;
    let recursive = args.recursive.unwrap_or(false);
    let meta = fs::metadata(&dir.full).map_err(|e| io_error("list", &dir, &e))?;
    if !meta.is_dir() {
        return Ok(if meta.is_file() {
            format!("{} (file, {} bytes)", dir.shown, meta.len())
        } else {
            format!(
                "{} (not a regular file: a named pipe, device or socket)",
                dir.shown
            )
        });
    }
    let mut entries = Vec::new();
    let mut total = 0usize;
    let mut walked = 0usize;
    let mut stack = vec![(dir.full.clone(), String::new())];
    while let Some((full, prefix)) = stack.pop() {
        let read = match fs::read_dir(&full) {
            Ok(read) => read,
            // A subdirectory we may not read is skipped; the top one is an error.
            Err(e) if prefix.is_empty() => return Err(io_error("list", &dir, &e)),
            Err(_) => continue,
        };
        let mut level: Vec<(String, fs::FileType, u64)> = Vec::new();
        for entry in read.flatten() {
            walked += 1;
            if walked > WALK_MAX {
                break;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // DirEntry::metadata does not follow links: walking never loops or leaves via one.
            let Ok(meta) = entry.metadata() else { continue };
            level.push((name, meta.file_type(), meta.len()));
        }
        level.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, kind, len) in level {
            total += 1;
            let rel = format!("{prefix}{name}");
            if entries.len() < LIST_MAX {
                entries.push(if kind.is_dir() {
                    format!("{rel}/")
                } else if kind.is_symlink() {
                    format!("{rel} (link)")
                } else if kind.is_file() {
                    format!("{rel} ({len} bytes)")
                } else {
                    format!("{rel} (special: pipe, device or socket)")
                });
            }
            if recursive && kind.is_dir() {
                subdirs.push((full.join(&name), format!("{rel}/")));
            }
        }
        // Depth-first, in name order: push in reverse so the first name pops first.
        stack.extend(subdirs.into_iter().rev());
        if walked > WALK_MAX {
            break;
        }
    }
    if entries.is_empty() {
        return Ok(format!("{} is empty", dir.shown));
    }
    if recursive {
        entries.sort();
    }
    let mut out = entries.join("\n");
    if total > entries.len() || walked > WALK_MAX {
        out.push_str(&format!(
            "\n[... listing cut: showed {} of {}{} entries; list a subdirectory to see more]",
            entries.len(),
            if walked > WALK_MAX { "more than " } else { "" },
            total
        ));
    }
    Ok(out)
}

fn read_file(args: ReadArgs) -> Result<String, String> {
    let file = resolve(&args.path)?;
    if file.shown == "." {
        return Err("read_file needs a file path; use list_files to see the workspace".to_string());
    }
    let offset = args.offset.unwrap_or(0);
    let max = args.max_bytes.unwrap_or(READ_DEFAULT).clamp(1, READ_MAX);
    // Checked before opening: opening a FIFO would wait for a writer.
    let meta = fs::metadata(&file.full).map_err(|e| io_error("read", &file, &e))?;
    regular_file(&file, &meta, "read")?;
    let mut f = fs::File::open(&file.full).map_err(|e| io_error("read", &file, &e))?;
    // Again on what was opened, in case the path was swapped in between.
    let meta = f.metadata().map_err(|e| io_error("read", &file, &e))?;
    regular_file(&file, &meta, "read")?;
    let size = meta.len();
    if offset > size {
        return Err(format!(
            "offset {offset} is past the end of {} ({size} bytes)",
            file.shown
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error("read", &file, &e))?;
    let mut buf = Vec::new();
    f.take(max)
        .read_to_end(&mut buf)
        .map_err(|e| io_error("read", &file, &e))?;
    if buf.iter().take(8192).any(|&b| b == 0) {
        return Err(format!(
            "{} looks like a binary file ({size} bytes); read_file shows text only",
            file.shown
        ));
    }
    // Cut at a character boundary so a multi-byte character is not split in two.
    let end_offset = offset + buf.len() as u64;
    let mut text = match String::from_utf8(buf) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            if end_offset < size && bytes.len() - valid < 4 {
                bytes.truncate(valid);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    let shown_end = offset + text.len() as u64;
    if shown_end < size {
        text.push_str(&format!(
            "\n[... {} continues: showed bytes {offset}-{shown_end} of {size}; call read_file with offset={shown_end} to read on]",
            file.shown
        ));
    } else if text.is_empty() {
        text = format!("{} is empty", file.shown);
    }
    Ok(text)
}

fn write_file(args: WriteArgs, append: bool) -> Result<String, String> {
    let file = resolve(&args.path)?;
    let action = if append { "append to" } else { "write" };
    if file.shown == "." || args.path.trim_end().ends_with('/') {
        return Err(format!(
            "cannot {action} `{}`: give a file path, not a directory",
            args.path
        ));
    }
    if let Some(parent) = file.full.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error(action, &file, &e))?;
    }
    // Opening a FIFO for writing would wait for a reader.
    if let Ok(meta) = fs::metadata(&file.full)
        && !meta.is_dir()
    {
        regular_file(&file, &meta, action)?;
    }
    let mut options = fs::OpenOptions::new();
    if append {
        options.append(true).create(true);
    } else {
        options.write(true).create(true).truncate(true);
    }
    let mut f = options
        .open(&file.full)
        .map_err(|e| io_error(action, &file, &e))?;
    f.write_all(args.content.as_bytes())
        .map_err(|e| io_error(action, &file, &e))?;
    f.flush().map_err(|e| io_error(action, &file, &e))?;
    let n = args.content.len();
    Ok(if append {
        format!("appended {n} bytes to {}", file.shown)
    } else {
        format!("wrote {n} bytes to {}", file.shown)
    })
}

fn search_files(args: SearchArgs) -> Result<String, String> {
    if args.pattern.is_empty() {
        return Err("search_files needs a non-empty pattern".to_string());
    }
    let root = resolve(args.path.as_deref().unwrap_or("."))?;
    let ignore_case = args.ignore_case.unwrap_or(false);
    let needle = if ignore_case {
        args.pattern.to_lowercase()
    } else {
        args.pattern.clone()
    };
    let meta = fs::metadata(&root.full).map_err(|e| io_error("search", &root, &e))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        collect_files(&root.full, &root.shown, &mut files);
    } else {
        regular_file(&root, &meta, "search")?;
        files.push((root.full.clone(), root.shown.clone()));
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));

    // `.*ERROR` or `^ERROR$`: the text inside the regular-expression marks
    // is what the model looks for (measured: the 1.5B model searched logs
    // for `.*ERROR`, took "no matches" as the answer, and lost the run).
    // Both are looked for in the one pass; the core's lines are shown only
    // when the pattern itself is in none.
    let core = plain_core(&needle);
    let mut needles = vec![needle.as_str()];
    needles.extend(core.as_deref());
    let mut found = scan(&files, &needles, ignore_case).into_iter();
    let (mut hits, mut more) = found.next().unwrap_or_default();
    let mut read_as = None;
    if hits.is_empty()
        && let Some((core_hits, core_more)) = found.next().filter(|(h, _)| !h.is_empty())
    {
        (hits, more) = (core_hits, core_more);
        read_as = core;
    }
    if hits.is_empty() {
        let mut out = format!(
            "no matches for `{}` in {} ({} files searched)",
            args.pattern,
            root.shown,
            files.len()
        );
        if looks_like_a_query(&args.pattern) {
            out.push_str(&format!(
                ". Note: search_files looks for the exact text `{}`; it is not a condition, a comparison or a regular expression. To filter, compare, count or compute, read the file in code (run_python, when it is available) and print the result.",
                args.pattern
            ));
        } else if let Some((_, name)) = files.iter().find(|(_, shown)| {
            let pattern = args.pattern.trim().trim_start_matches("./");
            shown == pattern || shown.ends_with(&format!("/{pattern}"))
        }) {
            // Measured: the 1.5B model searched for `scores.csv`, read "no
            // matches" as "the file does not exist" and wrote a made-up one
            // over it.
            out.push_str(&format!(
                ". Note: {name} is a file here; search_files looks for text inside files, not for file names. Read it with read_file."
            ));
        }
        return Ok(out);
    }
    let matched: std::collections::BTreeSet<&str> =
        hits.iter().filter_map(|h| h.split(':').next()).collect();
    let count = hits.len();
    // Said first, and as what was found: after "no line holds ..." the
    // model read the hits below as "none found".
    let mut out = match &read_as {
        Some(core) => format!(
            "Searched for `{core}` (search_files takes plain text, not a regular expression like `{}`):\n",
            args.pattern
        ),
        None => String::new(),
    };
    out.push_str(&hits.join("\n"));
    if more {
        out.push_str(&format!(
            "\n[... stopped after {SEARCH_MAX} matches; search a narrower path or a more specific pattern]"
        ));
    } else {
        // The count, so that "how many lines ..." need not be counted by eye.
        out.push_str(&format!(
            "\n({count} matching line{} in {} file{})",
            if count == 1 { "" } else { "s" },
            matched.len(),
            if matched.len() == 1 { "" } else { "s" }
        ));
    }
    Ok(out)
}

/// For each of `needles` (lower-cased already when `ignore_case`), the
/// lines of `files` that hold it, as `path:line: text`, and whether there
/// were more than [`SEARCH_MAX`]; each file is read once for all of them.
fn scan(
    files: &[(PathBuf, String)],
    needles: &[&str],
    ignore_case: bool,
) -> Vec<(Vec<String>, bool)> {
    let mut found: Vec<(Vec<String>, bool)> = vec![(Vec::new(), false); needles.len()];
    for (full, shown) in files {
        if found.iter().all(|(_, more)| *more) {
            break;
        }
        let Ok(meta) = fs::metadata(full) else {
            continue;
        };
        // Listed as a regular file, but it may have been swapped since.
        if !meta.is_file() || meta.len() > SEARCH_FILE_MAX {
            continue;
        }
        let Ok(bytes) = fs::read(full) else { continue };
        if bytes.iter().take(8192).any(|&b| b == 0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        for (number, line) in text.lines().enumerate() {
            let folded = ignore_case.then(|| line.to_lowercase());
            let haystack = folded.as_deref().unwrap_or(line);
            for (needle, (hits, more)) in needles.iter().zip(found.iter_mut()) {
                if *more || !haystack.contains(needle) {
                    continue;
                }
                if hits.len() == SEARCH_MAX {
                    *more = true;
                    continue;
                }
                hits.push(format!(
                    "{shown}:{}: {}",
                    number + 1,
                    clip(line.trim(), LINE_MAX)
                ));
            }
        }
    }
    found
}

/// The plain text inside regular-expression marks at the ends of
/// `pattern` (`.*ERROR`, `^ERROR$`, `*.log*`), when that is all that makes
/// it read as one; `None` otherwise.
fn plain_core(pattern: &str) -> Option<String> {
    let mut core = pattern;
    loop {
        let before = core;
        for mark in [".*", ".+", "^", "*"] {
            core = core.strip_prefix(mark).unwrap_or(core);
        }
        for mark in [".*", ".+", "$", "*"] {
            core = core.strip_suffix(mark).unwrap_or(core);
        }
        if core == before {
            break;
        }
    }
    let plain = !core.trim().is_empty()
        && core != pattern
        && !looks_like_a_query(core)
        && !core.contains('*');
    plain.then(|| core.to_string())
}

/// Whether a pattern reads as a condition or a regular expression rather
/// than text (`age>30`, `price >= 10`, `ERROR|WARN`, `\\d+`, `.*`): a model
/// that writes one expects a filter this plain-text search cannot apply, and
/// "no matches" alone would read as "there are none" (measured: the 1.5B
/// model searched `age>30` and finished with "no one is older than 30").
fn looks_like_a_query(pattern: &str) -> bool {
    let comparison = ["<", ">", "==", "!="].iter().any(|op| pattern.contains(op));
    let regex = ["|", ".*", ".+", "\\d", "\\w", "\\s", "[0-9]", "^", "$"]
        .iter()
        .any(|m| pattern.contains(m));
    comparison || regex
}

/// Collects regular files under `dir` (not following links), as (sandbox path, shown path).
fn collect_files(dir: &Path, shown: &str, out: &mut Vec<(PathBuf, String)>) {
    let mut stack = vec![(dir.to_path_buf(), shown.to_string())];
    let mut walked = 0usize;
    while let Some((full, shown)) = stack.pop() {
        let Ok(read) = fs::read_dir(&full) else {
            continue;
        };
        for entry in read.flatten() {
            walked += 1;
            if walked > WALK_MAX {
                return;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if shown == "." {
                name.clone()
            } else {
                format!("{shown}/{name}")
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                // Version-control internals are never what the model is looking for.
                if name != ".git" {
                    stack.push((full.join(&name), rel));
                }
            } else if kind.is_file() {
                out.push((full.join(&name), rel));
            }
        }
    }
}

/// Shortens `text` to at most `max` characters, marking the cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn delete_file(args: PathArgs) -> Result<String, String> {
    let file = resolve(&args.path)?;
    if file.shown == "." {
        return Err("refusing to delete the workspace root".to_string());
    }
    let meta = fs::symlink_metadata(&file.full).map_err(|e| io_error("delete", &file, &e))?;
    if meta.is_dir() {
        fs::remove_dir(&file.full).map_err(|e| io_error("delete", &file, &e))?;
        Ok(format!("deleted empty directory {}", file.shown))
    } else {
        fs::remove_file(&file.full).map_err(|e| io_error("delete", &file, &e))?;
        Ok(format!("deleted {}", file.shown))
    }
}

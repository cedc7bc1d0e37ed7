//! Verified finishing: before a `finish` is accepted, check what can be
//! checked cheaply, so that a small model cannot claim a success that did
//! not happen ("There are no names older than 30" without writing the file
//! the goal named).
//!
//! What is checked today: every file the goal names as an output exists in
//! the workspace as a regular file (a link does not count: it is read
//! through [`Confined`]) and is not empty. A file counts as an output when
//! an output verb (write, save, create, store, append, put, output, produce,
//! generate, export, record, make) comes before its name in the same
//! sentence, at most twelve words earlier: "write the sum to sum.txt",
//! "save the names into older.txt", "create hello.py". Names that are only
//! read ("read notes.txt") are not checked. A name is a word with a dot and
//! an extension of one to six letters or digits; URLs are left out.
//!
//! The loop turns the first failed check into an observation and lets the
//! model go on; a `finish` that still fails the checks ends the run as
//! `unverified` (see `agent::react`).

use std::path::Path;

use crate::confined::Confined;

/// Verbs that make the file named after them an output.
const OUTPUT_VERBS: &[&str] = &[
    "write",
    "writes",
    "writing",
    "wrote",
    "save",
    "saves",
    "saving",
    "create",
    "creates",
    "creating",
    "store",
    "stores",
    "append",
    "appends",
    "put",
    "puts",
    "output",
    "outputs",
    "produce",
    "produces",
    "generate",
    "generates",
    "export",
    "exports",
    "record",
    "records",
    "make",
    "makes",
];

/// How much of an output is read to tell whether it is empty.
const HEAD_BYTES: u64 = 64 * 1024;

/// How many words before a file name an output verb may stand.
const VERB_WINDOW: usize = 12;

/// A word that names a file: `name.ext`, maybe with a directory.
fn file_name(word: &str) -> Option<&str> {
    let w = word.trim_matches(|c: char| {
        matches!(
            c,
            '`' | '"' | '\'' | ',' | ';' | ':' | '(' | ')' | '[' | ']' | '!' | '?' | '*'
        )
    });
    let w = w.strip_suffix('.').unwrap_or(w);
    if w.contains("://") || w.starts_with('/') || w.contains("..") {
        return None;
    }
    let (stem, ext) = w.rsplit_once('.')?;
    let stem_ok = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    let ext_ok = (1..=6).contains(&ext.len())
        && ext.chars().all(|c| c.is_ascii_alphanumeric())
        && ext.chars().any(|c| c.is_ascii_alphabetic());
    (stem_ok && ext_ok).then_some(w)
}

/// The files `goal` names as outputs, in order, without repeats.
pub fn named_outputs(goal: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for sentence in goal.split(['\n', '!', '?']).flat_map(|s| s.split(". ")) {
        let words: Vec<&str> = sentence.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            let Some(name) = file_name(word) else {
                continue;
            };
            let from = i.saturating_sub(VERB_WINDOW);
            let after_verb = words[from..i].iter().any(|w| {
                let w = w
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase();
                OUTPUT_VERBS.contains(&w.as_str())
            });
            if after_verb && !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// What is not yet true of the goal's outputs in `workspace` ("older.txt
/// does not exist yet"); empty when every check passes.
pub fn unmet(goal: &str, workspace: &Path) -> Vec<String> {
    let outputs = named_outputs(goal);
    if outputs.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = Confined::open(workspace) else {
        return vec![format!(
            "the workspace {} cannot be opened",
            workspace.display()
        )];
    };
    outputs
        .into_iter()
        .filter_map(|name| {
            let path = Path::new(&name);
            if !dir.is_file(path) {
                return Some(format!("{name} does not exist yet"));
            }
            // The head is enough to tell: this runs after every step.
            match dir.read_head(path, HEAD_BYTES) {
                Ok(bytes)
                    if (bytes.len() as u64) < HEAD_BYTES
                        && bytes.iter().all(|b| b.is_ascii_whitespace()) =>
                {
                    Some(format!("{name} is empty"))
                }
                Ok(_) => None,
                Err(e) => Some(format!("{name} cannot be read: {e}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_the_files_named_after_an_output_verb() {
        assert_eq!(
            named_outputs("Write a haiku about the sea to haiku.txt, then read it back"),
            ["haiku.txt"]
        );
        assert_eq!(
            named_outputs(
                "Read people.csv and save the names of those older than 30 into older.txt."
            ),
            ["older.txt"]
        );
        assert_eq!(
            named_outputs("Sum the numbers in numbers.txt and write the total to `sum.txt`"),
            ["sum.txt"]
        );
        assert_eq!(
            named_outputs("Create a Python file called sample_code.py that defines f"),
            ["sample_code.py"]
        );
        // Only read, or not a file at all.
        assert!(named_outputs("Read notes.txt and tell me what it says").is_empty());
        assert!(named_outputs("Write a summary of https://example.com/a.html").is_empty());
        assert!(named_outputs("Write the version 1.5 in the answer").is_empty());
        assert!(named_outputs("list the files in the workspace").is_empty());
    }

    #[test]
    fn missing_empty_and_linked_outputs_are_unmet() {
        let ws = tempfile::tempdir().unwrap();
        let goal = "write 42 to sum.txt and save the list to names.txt";
        assert_eq!(
            unmet(goal, ws.path()),
            ["sum.txt does not exist yet", "names.txt does not exist yet"]
        );
        std::fs::write(ws.path().join("sum.txt"), "42\n").unwrap();
        std::fs::write(ws.path().join("names.txt"), " \n").unwrap();
        assert_eq!(unmet(goal, ws.path()), ["names.txt is empty"]);
        std::fs::write(ws.path().join("names.txt"), "ada\n").unwrap();
        assert!(unmet(goal, ws.path()).is_empty());
        #[cfg(unix)]
        {
            std::fs::remove_file(ws.path().join("sum.txt")).unwrap();
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("x"), "42").unwrap();
            std::os::unix::fs::symlink(outside.path().join("x"), ws.path().join("sum.txt"))
                .unwrap();
            assert_eq!(unmet(goal, ws.path()), ["sum.txt does not exist yet"]);
        }
    }
}

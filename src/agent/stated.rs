//! Results a goal states for the code it asks for ("The function average
//! in stats.py has a bug: average([2, 4, 6]) should return 4 ... save the
//! fixed code in stats.py"): found in the goal's words, turned into a few
//! lines of Python that import the goal's module and compare, and judged
//! from what those printed. The ReAct loop runs the check with the run's
//! code tool, in its sandbox and through the run's approvals, when a
//! `finish` has passed every other check (`agent::react`).
//!
//! Measured (2026-12-02): the 1.5B model "fixed" stats.py by calling
//! `statistics.average`, which does not exist, at the top level; the file
//! failed when imported, and the run ended `finished`. Only the user's own
//! words are run: the call and the value come from the goal, the module is
//! the goal's `.py` output.

use super::verify;

/// One result the goal states: `call` from `module` should equal
/// `expected` (Python source, as the goal writes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated {
    /// The file the code is in (`stats.py`).
    pub file: String,
    /// Its module name (`stats`).
    pub module: String,
    /// The function called (`average`).
    pub function: String,
    /// The call as the goal writes it (`average([2, 4, 6])`).
    pub call: String,
    /// What it should return (`4`).
    pub expected: String,
}

/// Words that say what a call returns, after the call.
const SAYS_RETURNS: &[&str] = &[
    "should return",
    "must return",
    "returns",
    "should give",
    "should be",
    "should equal",
    "==",
];

/// The results `goal` states for its Python output (or, when it names no
/// `.py` output, its Python input): each call with a literal value.
pub fn stated_results(goal: &str) -> Vec<Stated> {
    let file = verify::named_outputs(goal)
        .into_iter()
        .chain(verify::named_inputs(goal))
        .find(|f| f.ends_with(".py"));
    let Some(file) = file else {
        return Vec::new();
    };
    let module = file.trim_end_matches(".py").to_string();
    if !is_identifier(&module) {
        return Vec::new();
    }
    let mut out: Vec<Stated> = Vec::new();
    let chars: Vec<char> = goal.chars().collect();
    for (open, _) in chars.iter().enumerate().filter(|(_, c)| **c == '(') {
        let start = (0..open)
            .rev()
            .take_while(|&i| chars[i].is_alphanumeric() || chars[i] == '_')
            .last();
        let Some(start) = start else { continue };
        let function: String = chars[start..open].iter().collect();
        let Some(close) = closing(&chars, open) else {
            continue;
        };
        if !is_identifier(&function) {
            continue;
        }
        let call: String = chars[start..=close].iter().collect();
        let rest: String = chars[close + 1..].iter().collect();
        let rest = rest.trim_start();
        let Some(after) = SAYS_RETURNS.iter().find_map(|w| rest.strip_prefix(w)) else {
            continue;
        };
        let Some(expected) = literal(after.trim_start()) else {
            continue;
        };
        let stated = Stated {
            file: file.clone(),
            module: module.clone(),
            function,
            call,
            expected,
        };
        if !out.contains(&stated) {
            out.push(stated);
        }
    }
    out
}

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// The index of the bracket that closes the one at `open`, outside quotes.
fn closing(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, &c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// A Python literal at the start of `text`: a number, `True`, `False`,
/// `None`, a quoted string, or a bracketed list, tuple or dict.
fn literal(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let first = *chars.first()?;
    if matches!(first, '[' | '(' | '{' | '\'' | '"') {
        let end = if matches!(first, '\'' | '"') {
            chars.iter().skip(1).position(|&c| c == first)? + 1
        } else {
            closing(&chars, 0)?
        };
        return Some(chars[..=end].iter().collect());
    }
    let word: String = chars
        .iter()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
        .collect();
    let word = word.trim_end_matches('.');
    let number = word.parse::<f64>().is_ok_and(f64::is_finite);
    (number || matches!(word, "True" | "False" | "None")).then(|| word.to_string())
}

/// Python that imports the function, calls it as the goal does, and
/// prints what it returned and whether that is what the goal states.
pub fn check_code(s: &Stated) -> String {
    format!(
        "from {} import {}\n_got = {}\nprint(repr(_got))\nprint(_got == ({}))",
        s.module, s.function, s.call, s.expected
    )
}

/// What is wrong, judged from the check's result (what it printed, or the
/// error it failed with); `None` when the call returned what the goal
/// states.
pub fn judge(s: &Stated, result: Result<&str, &str>) -> Option<String> {
    match result {
        Ok(printed) => {
            let lines: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
            match lines.as_slice() {
                [.., _, last] if last.trim() == "True" => None,
                [.., got, _] => Some(format!(
                    "{} with {} returns {}, and the goal says it should return {}: fix {} and call finish again",
                    s.call,
                    s.file,
                    got.trim(),
                    s.expected,
                    s.file
                )),
                _ => Some(format!(
                    "{} with {} printed nothing to compare with {}",
                    s.call, s.file, s.expected
                )),
            }
        }
        Err(error) => {
            let last = error
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("an error")
                .trim();
            Some(format!(
                "{} with {} fails when run ({}): fix {} so that it imports and returns {}, and call finish again",
                s.call,
                s.file,
                crate::sanitize::cap_head_tail(last, 200),
                s.file,
                s.expected
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX_BUG: &str = "The function average in stats.py has a bug: average([2, 4, 6]) should return 4 but it does not. Fix the bug and save the fixed code in stats.py";

    #[test]
    fn a_stated_result_is_read_from_the_goal() {
        let stated = stated_results(FIX_BUG);
        assert_eq!(
            stated,
            [Stated {
                file: "stats.py".into(),
                module: "stats".into(),
                function: "average".into(),
                call: "average([2, 4, 6])".into(),
                expected: "4".into(),
            }]
        );
        assert_eq!(
            check_code(&stated[0]),
            "from stats import average\n_got = average([2, 4, 6])\nprint(repr(_got))\nprint(_got == (4))"
        );
        let more = stated_results(
            "Write greet.py where greet('Ada') returns 'Hello, Ada' and pair(1, (2, 3)) == [1, 2, 3].",
        );
        let calls: Vec<(&str, &str)> = more
            .iter()
            .map(|s| (s.call.as_str(), s.expected.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("greet('Ada')", "'Hello, Ada'"),
                ("pair(1, (2, 3))", "[1, 2, 3]")
            ]
        );
    }

    #[test]
    fn goals_without_a_literal_result_or_a_module_state_nothing() {
        // No value, a word instead of a value, no Python file.
        assert!(stated_results("Create sample_code.py that defines multiply_int(num, multiplier) which returns num multiplied by multiplier.").is_empty());
        assert!(stated_results("Fix f(x) in a.py: f(2) should return the square").is_empty());
        assert!(stated_results("average([2, 4, 6]) should return 4; write it to a.txt").is_empty());
        // A module name Python cannot import.
        assert!(stated_results("Fix my-stats.py so that f(1) returns 2").is_empty());
    }

    #[test]
    fn the_check_s_result_is_judged() {
        let s = &stated_results(FIX_BUG)[0];
        assert_eq!(judge(s, Ok("4.0\nTrue\n")), None);
        assert_eq!(
            judge(s, Ok("6.0\nFalse\n")).unwrap(),
            "average([2, 4, 6]) with stats.py returns 6.0, and the goal says it should return 4: fix stats.py and call finish again"
        );
        let failed = judge(
            s,
            Err("Traceback (most recent call last):\n  File \"stats.py\", line 1\nAttributeError: module 'statistics' has no attribute 'average'\n"),
        )
        .unwrap();
        assert!(
            failed.starts_with("average([2, 4, 6]) with stats.py fails when run (AttributeError: module 'statistics' has no attribute 'average')"),
            "{failed}"
        );
    }

    /// The check's code, run by a real Python on the challenge's buggy
    /// file and on a fixed one.
    #[test]
    fn the_check_code_runs_against_a_real_module() {
        let s = &stated_results(FIX_BUG)[0];
        let dir = tempfile::tempdir().unwrap();
        let run = |source: &str| {
            std::fs::write(dir.path().join("stats.py"), source).unwrap();
            let out = std::process::Command::new("python3")
                .arg("-c")
                .arg(check_code(s))
                .current_dir(dir.path())
                .output()
                .ok()?;
            let printed = String::from_utf8_lossy(&out.stdout).into_owned();
            let error = String::from_utf8_lossy(&out.stderr).into_owned();
            Some(if out.status.success() {
                judge(s, Ok(&printed))
            } else {
                judge(s, Err(&error))
            })
        };
        let Some(buggy) =
            run("def average(numbers):\n    return sum(numbers) / (len(numbers) - 1)\n")
        else {
            return; // no python3 here
        };
        assert!(buggy.unwrap().contains("returns 6.0"));
        assert_eq!(
            run("def average(numbers):\n    return sum(numbers) / len(numbers)\n").unwrap(),
            None
        );
        let broken = run("import statistics\nstatistics.average([1])\n")
            .unwrap()
            .unwrap();
        assert!(
            broken.contains("fails when run (AttributeError"),
            "{broken}"
        );
    }
}

//! Code to start from: a line of Python built from the goal's own words and
//! its inputs, for the everyday data goals whose shape the words give away
//! ("Replace every Tuesday with Thursday in letter.txt", "find every email
//! address in contacts.txt", "everyone older than 30" over a CSV, "the
//! city with the largest population" over a CSV).
//!
//! A small model knows what to do and still writes the wrong code for it:
//! measured with Qwen2.5-Coder-1.5B (2026-12-02), ReplaceWord parsed each
//! word of a letter as a weekday with `datetime.strptime` for five steps,
//! ExtractEmails loaded a letter with `json.load` (copied from the prompt's
//! worked example) and typed an address that is not in it, OlderPeople
//! compared by eye. The line is shown where the model is stuck (a refused
//! finish, a failed code call; `agent::strategy`, `agent::react`), never
//! in the prompt up front: a goal that needs no hint gets none.
//!
//! Only shapes that can be read off the words with certainty get a line;
//! anything else gets `None` and the model writes its own code. A summary
//! gets advice instead: it is the model's own prose ([`prose_advice`]).

use super::verify;

/// How a message that gives such a line introduces it ("run_python with
/// this code does the work: ..."): the loop looks for it to give a model
/// that did not run the line one more chance (`agent::react`).
pub const DOES_THE_WORK: &str = "this code does the work:";

/// Python for `goal` over its `inputs` (name, text as read), or `None`.
pub fn code_hint(goal: &str, inputs: &[(String, String)]) -> Option<String> {
    replace_hint(goal, inputs)
        .or_else(|| extract_hint(goal, inputs))
        .or_else(|| convert_hint(goal, inputs))
        .or_else(|| table_hint(goal, inputs))
}

/// For a goal that asks for a summary of its inputs, what to do instead
/// of code: write it. `None` for other goals.
pub fn prose_advice(goal: &str) -> Option<String> {
    let lower = goal.to_lowercase();
    if !lower.contains("summar") {
        return None;
    }
    let out = output(goal)?;
    Some(format!(
        "a summary is prose for you to write, not code's work: call write_file with the path {out} and a few sentences of your own about what you read"
    ))
}

/// The goal's first output, where a hint's code writes.
fn output(goal: &str) -> Option<String> {
    verify::named_outputs(goal).into_iter().next()
}

/// "Replace every X with Y in A and save ... to B": read, `str.replace`,
/// write, over the input that holds X (or the first input).
pub fn replace_hint(goal: &str, inputs: &[(String, String)]) -> Option<String> {
    let (from, to) = verify::replacement(goal)?;
    let source = inputs
        .iter()
        .find(|(_, t)| t.contains(&from))
        .or_else(|| inputs.first())
        .map(|(n, _)| n.clone())
        .or_else(|| verify::named_inputs(goal).into_iter().next())?;
    let out = output(goal).unwrap_or_else(|| source.clone());
    Some(format!(
        "text = open('{source}').read().replace('{from}', '{to}'); open('{out}', 'w').write(text); print(text)"
    ))
}

/// What a goal may ask to extract from text, by the words that name it,
/// and the pattern that finds it.
/// No backslash in them: the model copies the line into a JSON string,
/// where `\w` must be written `\\w`, and measured (2026-12-02) it wrote
/// NUL bytes instead.
const EXTRACTIONS: &[(&[&str], &str)] = &[
    (
        &["email", "emails", "e-mail", "e-mails"],
        "[A-Za-z0-9_.%+-]+@[A-Za-z0-9-]+(?:[.][A-Za-z0-9-]+)+",
    ),
    (
        &["url", "urls", "link", "links"],
        "https?://[A-Za-z0-9_.~:/?#@!$&*+,;=%-]+",
    ),
];

/// "Find every email address in contacts.txt and write them to emails.txt":
/// `re.findall` over a text input (not a table, which has columns).
fn extract_hint(goal: &str, inputs: &[(String, String)]) -> Option<String> {
    let words: Vec<String> = goal
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .map(str::to_lowercase)
        .collect();
    let (_, pattern) = EXTRACTIONS
        .iter()
        .find(|(names, _)| words.iter().any(|w| names.contains(&w.as_str())))?;
    let source = inputs
        .iter()
        .map(|(n, _)| n.clone())
        .chain(verify::named_inputs(goal))
        .find(|n| !n.ends_with(".csv") && !n.ends_with(".json"))?;
    let write = output(goal)
        .map(|out| format!("open('{out}', 'w').write('\\n'.join(found) + '\\n'); "))
        .unwrap_or_default();
    Some(format!(
        "import re; found = list(dict.fromkeys(re.findall('{pattern}', open('{source}').read()))); {write}print(found)"
    ))
}

/// A filter by a number ("older than 30") or an extreme ("the largest")
/// over a CSV input, with the table's own columns, that does the whole
/// job: sorted where the goal asks for alphabetical order, written one per
/// line to the goal's output. Measured (2026-12-02): given a line that
/// only printed the names, the 1.5B model ran it and typed them into
/// older.txt on one line by hand, until its time ran out.
fn table_hint(goal: &str, inputs: &[(String, String)]) -> Option<String> {
    let (csv, text) = inputs.iter().find(|(name, _)| name.ends_with(".csv"))?;
    let table = Table::parse(text)?;
    let out = output(goal);
    let read = format!("import csv; rows = list(csv.DictReader(open('{csv}'))); ");
    let (label, numeric) = table.columns(goal)?;
    let (label, numeric) = (&table.header[label], &table.header[numeric]);
    if let Some((op, number)) = filter_of(goal) {
        let sort = if verify::asks_alphabetical(goal) {
            "found = sorted(found); "
        } else {
            ""
        };
        let write = out
            .map(|o| format!("open('{o}', 'w').write('\\n'.join(found) + '\\n'); "))
            .unwrap_or_default();
        return Some(format!(
            "{read}found = [r['{label}'] for r in rows if float(r['{numeric}']) {op} {number}]; {sort}{write}print(found)"
        ));
    }
    let f = if verify::asks_for_the_least(goal)? {
        "min"
    } else {
        "max"
    };
    let write = out
        .map(|o| format!("open('{o}', 'w').write(best['{label}'] + '\\n'); "))
        .unwrap_or_default();
    Some(format!(
        "{read}best = {f}(rows, key=lambda r: float(r['{numeric}'])); {write}print(best['{label}'], best['{numeric}'])"
    ))
}

/// "Convert products.csv to JSON and save it to products.json": the rows
/// as objects, each column whose every value is a number converted (to
/// `int` where every value is whole), dumped to the goal's `.json` output.
/// Measured (2026-12-02): CsvToJson dumped DictReader's strings, then
/// converted every value with `float()` and failed on the names.
fn convert_hint(goal: &str, inputs: &[(String, String)]) -> Option<String> {
    let lower = goal.to_lowercase();
    let out = verify::named_outputs(goal)
        .into_iter()
        .find(|o| o.ends_with(".json"))?;
    if !lower.contains("json") {
        return None;
    }
    let (csv, text) = inputs.iter().find(|(name, _)| name.ends_with(".csv"))?;
    let table = Table::parse(text)?;
    let convert: String = (0..table.header.len())
        .filter(|&i| table.is_numeric(i))
        .map(|i| {
            let whole = table.rows.iter().all(|r| r[i].parse::<i64>().is_ok());
            let f = if whole { "int" } else { "float" };
            format!("r['{0}'] = {f}(r['{0}']); ", table.header[i])
        })
        .collect();
    Some(format!(
        "import csv, json; rows = list(csv.DictReader(open('{csv}')))\nfor r in rows: {convert}\njson.dump(rows, open('{out}', 'w'), indent=2); print(rows)"
    ))
}

/// A small CSV read whole: a header and rows of as many plain fields.
/// Tables with quoted fields are not read (`None`): a hint or a check
/// built from a misread table would mislead.
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn parse(text: &str) -> Option<Table> {
        if text.contains('"') {
            return None;
        }
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let split =
            |l: &str| -> Vec<String> { l.split(',').map(|f| f.trim().to_string()).collect() };
        let header = split(lines.next()?);
        let rows: Vec<Vec<String>> = lines.map(split).collect();
        (header.len() > 1 && !rows.is_empty() && rows.iter().all(|r| r.len() == header.len()))
            .then_some(Table { header, rows })
    }

    fn is_numeric(&self, column: usize) -> bool {
        self.rows
            .iter()
            .all(|r| r[column].parse::<f64>().is_ok_and(f64::is_finite))
    }

    fn value(&self, row: usize, column: usize) -> f64 {
        self.rows[row][column].parse().unwrap_or(f64::NAN)
    }

    /// The label and number columns the goal means: a number column the
    /// goal names ("the largest population"), or the only one; a label
    /// column it names ("their names"), or the first that is not numbers.
    fn columns(&self, goal: &str) -> Option<(usize, usize)> {
        self.columns_of(goal, false)
    }

    /// [`Self::columns`], with the label column one the goal names when
    /// `named_label`: a goal that names none may ask for values, not
    /// items ("each column's minimum and maximum").
    fn columns_of(&self, goal: &str, named_label: bool) -> Option<(usize, usize)> {
        let words: Vec<String> = goal
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .map(str::to_lowercase)
            .collect();
        let named = |i: &usize| {
            let h = self.header[*i].to_lowercase();
            words.iter().any(|w| *w == h || *w == format!("{h}s"))
        };
        let numeric: Vec<usize> = (0..self.header.len())
            .filter(|&i| self.is_numeric(i))
            .collect();
        let number = match numeric.iter().copied().find(named) {
            Some(i) => i,
            None if numeric.len() == 1 => numeric[0],
            None => return None,
        };
        let labels: Vec<usize> = (0..self.header.len())
            .filter(|i| !numeric.contains(i))
            .collect();
        let label = labels
            .iter()
            .copied()
            .find(named)
            .or_else(|| labels.first().copied().filter(|_| !named_label))?;
        Some((label, number))
    }
}

/// The goal's comparison, when it has a direction: operator and number.
fn filter_of(goal: &str) -> Option<(&'static str, String)> {
    let (op, number) = verify::comparison(goal)?;
    Some((op?, number))
}

/// The labels the goal's filter or extreme picks from the table in `csv`
/// (its text), worked out here, and the number column compared: what a
/// check compares the output with (`agent::verify`), never told to the
/// model. `None` when the goal asks for neither, the table's columns are
/// unclear, or the goal names no label column (it may ask for values:
/// "each column's minimum and maximum").
pub fn table_answer(goal: &str, csv: &str) -> Option<(Vec<String>, String)> {
    let table = Table::parse(csv)?;
    let (label, number) = table.columns_of(goal, true)?;
    let column = table.header[number].clone();
    let rows = 0..table.rows.len();
    if let Some((op, bound)) = filter_of(goal) {
        let bound: f64 = bound.parse().ok()?;
        let passes = |v: f64| match op {
            ">" => v > bound,
            "<" => v < bound,
            ">=" => v >= bound,
            "<=" => v <= bound,
            _ => false,
        };
        let found = rows
            .filter(|&r| passes(table.value(r, number)))
            .map(|r| table.rows[r][label].clone())
            .collect();
        return Some((found, column));
    }
    let least = verify::asks_for_the_least(goal)?;
    let values = rows.clone().map(|r| table.value(r, number));
    let best = if least {
        values.fold(f64::INFINITY, f64::min)
    } else {
        values.fold(f64::NEG_INFINITY, f64::max)
    };
    let found = rows
        .filter(|&r| table.value(r, number) == best)
        .map(|r| table.rows[r][label].clone())
        .collect();
    Some((found, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, text: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), text.to_string())]
    }

    /// Run `code` with python3 in `dir`, when python3 is here; its output.
    fn run_python(dir: &std::path::Path, code: &str) -> Option<String> {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(code)
            .current_dir(dir)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "{code}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn a_replacement_reads_replaces_and_writes() {
        let goal = "Replace every Tuesday with Thursday in letter.txt and save the changed letter to a file called letter_new.txt";
        let inputs = input("letter.txt", "See you on Tuesday.\n");
        let hint = code_hint(goal, &inputs).unwrap();
        assert_eq!(
            hint,
            "text = open('letter.txt').read().replace('Tuesday', 'Thursday'); open('letter_new.txt', 'w').write(text); print(text)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("letter.txt"), "See you on Tuesday.\n").unwrap();
        if run_python(dir.path(), &hint).is_some() {
            let new = std::fs::read_to_string(dir.path().join("letter_new.txt")).unwrap();
            assert_eq!(new, "See you on Thursday.\n");
        }
    }

    #[test]
    fn email_addresses_are_found_by_a_pattern_that_skips_handles() {
        let goal = "Find every email address in contacts.txt and write them to a file called emails.txt, one address per line";
        let text = "Ask maria.lopez@eventhall.com or the desk (frontdesk@eventhall.com).\nCatering: chef_ben@tastybites.org. The photographer is @snapshot_sam;\nhis email is sam.photo@lensmail.net. Jo (jo@ourcompany.co)\n";
        let hint = code_hint(goal, &input("contacts.txt", text)).unwrap();
        assert!(
            hint.contains("re.findall") && hint.contains("emails.txt"),
            "{hint}"
        );
        // Only the '\n' of the join has a backslash (run_python mends one
        // that arrives as a line break).
        assert_eq!(hint.matches('\\').count(), 2, "{hint}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("contacts.txt"), text).unwrap();
        if run_python(dir.path(), &hint).is_some() {
            let found = std::fs::read_to_string(dir.path().join("emails.txt")).unwrap();
            assert_eq!(
                found,
                "maria.lopez@eventhall.com\nfrontdesk@eventhall.com\nchef_ben@tastybites.org\nsam.photo@lensmail.net\njo@ourcompany.co\n"
            );
        }
    }

    #[test]
    fn a_table_gets_a_filter_or_an_extreme_that_does_the_whole_job() {
        let text = "name,age\nZoe,34\nLiam,29\nAva,52\n";
        let people = input("people.csv", text);
        let goal = "Read people.csv and find everyone older than 30. Write their names to a file called older.txt, sorted alphabetically, one name per line";
        let hint = code_hint(goal, &people).unwrap();
        assert_eq!(
            hint,
            "import csv; rows = list(csv.DictReader(open('people.csv'))); found = [r['name'] for r in rows if float(r['age']) > 30]; found = sorted(found); open('older.txt', 'w').write('\\n'.join(found) + '\\n'); print(found)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("people.csv"), text).unwrap();
        if run_python(dir.path(), &hint).is_some() {
            let older = std::fs::read_to_string(dir.path().join("older.txt")).unwrap();
            assert_eq!(older, "Ava\nZoe\n");
        }
        let at_most =
            code_hint("people with at most 2 pets in p.csv", &input("p.csv", text)).unwrap();
        assert!(
            at_most.contains("float(r['age']) <= 2]; print(found)"),
            "{at_most}"
        );

        let text = "city,population\nMadrid,3300000\nLisbon,550000\n";
        let cities = input("cities.csv", text);
        let goal = "cities.csv lists cities and their populations. Find the city with the largest population and write its name to a file called largest.txt";
        let largest = code_hint(goal, &cities).unwrap();
        assert!(
            largest.contains("best = max(rows, key=lambda r: float(r['population']))"),
            "{largest}"
        );
        std::fs::write(dir.path().join("cities.csv"), text).unwrap();
        if run_python(dir.path(), &largest).is_some() {
            let found = std::fs::read_to_string(dir.path().join("largest.txt")).unwrap();
            assert_eq!(found, "Madrid\n");
        }
        let smallest = code_hint(
            "Write the city with the smallest population in cities.csv to s.txt",
            &cities,
        )
        .unwrap();
        assert!(smallest.contains("min(rows"), "{smallest}");
        // "Oldest" is the largest age and the smallest year: no guess.
        assert!(code_hint("Write the oldest person in people.csv to o.txt", &people).is_none());
    }

    #[test]
    fn a_comparison_without_a_direction_gets_no_filter() {
        let people = input("p.csv", "name,age\nZoe,34\n");
        assert!(code_hint("list the ages other than 30 in p.csv", &people).is_none());
    }

    #[test]
    fn a_csv_to_json_conversion_converts_only_the_number_columns() {
        let text = "name,price,stock\npencil,0.5,120\neraser,0.35,200\n";
        let goal = "Convert products.csv to JSON and save it to a file called products.json, where price and stock are numbers";
        let hint = code_hint(goal, &input("products.csv", text)).unwrap();
        assert!(
            hint.contains(
                "for r in rows: r['price'] = float(r['price']); r['stock'] = int(r['stock']); "
            ),
            "{hint}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("products.csv"), text).unwrap();
        if run_python(dir.path(), &hint).is_some() {
            let json: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("products.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                json,
                serde_json::json!([{"name": "pencil", "price": 0.5, "stock": 120}, {"name": "eraser", "price": 0.35, "stock": 200}])
            );
        }
        // No JSON output, or quoted fields: no conversion line.
        assert!(
            convert_hint(
                "Convert products.csv to a.txt",
                &input("products.csv", text)
            )
            .is_none()
        );
        assert!(convert_hint(goal, &input("products.csv", "name,price\n\"a, b\",1\n")).is_none());
    }

    #[test]
    fn the_table_s_answer_is_worked_out_as_numbers() {
        let cities = "city,population\nLisbon,545000\nMadrid,3305000\nValencia,792000\n";
        let goal = "cities.csv lists cities and their populations. Find the city with the largest population and write its name to largest.txt";
        assert_eq!(
            table_answer(goal, cities),
            Some((vec!["Madrid".to_string()], "population".to_string()))
        );
        let people = "name,age\nZoe,34\nNoah,30\nAva,52\n";
        let (older, _) = table_answer(
            "find everyone older than 30 in people.csv and write their names to o.txt",
            people,
        )
        .unwrap();
        assert_eq!(older, ["Zoe", "Ava"]);
        // Values asked for, not the item that has them: no answer to check.
        let sales = "item,price\npen,2\nbook,10\n";
        assert!(
            table_answer(
                "a table with each column's total, minimum and maximum",
                sales
            )
            .is_none()
        );
        // Two number columns and the goal names neither: unclear.
        let two = "city,area,population\nA,1,2\nB,3,4\n";
        assert!(table_answer("the largest city in c.csv", two).is_none());
        assert_eq!(
            table_answer("the city with the largest area in c.csv", two)
                .unwrap()
                .0,
            ["B"]
        );
    }

    #[test]
    fn a_summary_is_advised_as_prose() {
        assert_eq!(
            prose_advice("Summarise notes.txt in two sentences and write it to summary.txt")
                .unwrap(),
            "a summary is prose for you to write, not code's work: call write_file with the path summary.txt and a few sentences of your own about what you read"
        );
        assert!(prose_advice("Sum the numbers in n.txt into s.txt").is_none());
    }

    #[test]
    fn goals_whose_shape_is_unclear_get_no_hint() {
        // Prose, a table without numbers, a comparison without a table.
        assert!(
            code_hint(
                "Summarise notes.txt to summary.txt",
                &input("notes.txt", "Hi.")
            )
            .is_none()
        );
        assert!(
            code_hint(
                "Find the largest city in c.csv",
                &input("c.csv", "a,b\nx,y\n")
            )
            .is_none()
        );
        assert!(
            code_hint(
                "List the people older than 30 in p.txt to o.txt",
                &input("p.txt", "Ana 34")
            )
            .is_none()
        );
        // An address list that is a table has columns to use instead.
        assert!(
            code_hint(
                "Write every email in people.csv to e.txt",
                &input("people.csv", "name,email\nA,a@b.c\n")
            )
            .is_none()
        );
    }
}

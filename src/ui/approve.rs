//! The terminal side of approvals: the question is drawn on stderr and the
//! answer read with rustyline. The policy that decides when to ask is
//! [`crate::agent::approval`].

use std::io::Write;

use crate::agent::approval::Prompter;

/// Asks on the terminal with rustyline (line editing; Ctrl-C or Ctrl-D declines).
pub struct TerminalPrompter;

impl Prompter for TerminalPrompter {
    fn ask(&self, question: &str) -> Option<String> {
        let mut err = anstream::AutoStream::auto(std::io::stderr());
        let style = anstyle::AnsiColor::Yellow.on_default().bold();
        let _ = writeln!(err, "{style}{question}{style:#}");
        let _ = err.flush();
        let mut editor = rustyline::DefaultEditor::new().ok()?;
        editor.readline("approve> ").ok()
    }
}

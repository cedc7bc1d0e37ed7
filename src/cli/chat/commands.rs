//! The REPL's slash commands. Listings (`/runs`, `/memory`, `/kb`) print
//! the same lines as `agent runs list`, `agent memory search` and `agent kb
//! search`, from the functions those subcommands use.

use super::*;
use crate::model::roles::ModelRole;

impl Chat<'_> {
    /// Handle a slash command; `false` means leave.
    pub(super) async fn command(&mut self, name: &str, arg: &str) -> anyhow::Result<bool> {
        match name {
            "help" => {
                let h = repl::help_text();
                self.say(&h);
            }
            "exit" => return Ok(false),
            "model" => self.model_command(arg).await,
            "cost" => {
                let costs = self.cost.costs();
                let text = if costs.is_empty() {
                    "  no model calls yet in this session".to_string()
                } else {
                    costs
                        .iter()
                        .map(|c| format!("  {}", c.line()))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                self.say(&text);
            }
            "tools" => {
                let mut lines = Vec::new();
                for spec in self.tools.specs() {
                    let policy = self
                        .approver
                        .policy(spec)
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "always runs".into());
                    lines.push(format!(
                        "  {BOLD}{:<16}{BOLD:#} {:<8} {DIM}{} · from {}{DIM:#}",
                        spec.name,
                        policy,
                        class_words(spec.class),
                        spec.source
                    ));
                }
                let text = lines.join("\n");
                self.say(&text);
            }
            "plugins" => {
                let mut lines = Vec::new();
                for p in &self.plugins {
                    let grant = p.granted.as_ref().map(grant_words).unwrap_or_default();
                    let detail = p.error.clone().unwrap_or(grant);
                    lines.push(format!(
                        "  {BOLD}{:<10}{BOLD:#} {:<8} {}",
                        p.name,
                        p.status,
                        strip_terminal_escapes(&detail)
                    ));
                }
                if lines.is_empty() {
                    lines.push("  (no plugins)".into());
                }
                let text = lines.join("\n");
                self.say(&text);
            }
            "memory" => self.memory_command(arg),
            "kb" => self.kb_command(arg),
            "runs" => {
                let runs = self.session.journal.list(10)?;
                let mut lines: Vec<String> = runs
                    .iter()
                    .map(|r| format!("  {}", crate::cli::runs::run_line(r)))
                    .collect();
                if lines.is_empty() {
                    lines.push("  (no runs yet)".into());
                }
                let text = lines.join("\n");
                self.say(&text);
            }
            "agent" => match arg {
                "" => {
                    let now = if self.plan { "plan" } else { "react" };
                    self.say(&format!("strategy: {now} (set with /agent react|plan)"));
                }
                "plan" | "react" => {
                    self.plan = arg == "plan";
                    self.note(&format!("new goals run with the {arg} strategy"));
                }
                other => self.warn(&format!(
                    "unknown strategy `{other}`; use /agent react or /agent plan"
                )),
            },
            "approve" => {
                if arg.is_empty() {
                    let shown = self
                        .approver
                        .all()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "from the config (see /tools)".into());
                    self.say(&format!("approval policy for this session: {shown}"));
                } else {
                    match arg.parse() {
                        Ok(p) => {
                            self.approver.set_all(Some(p));
                            self.say(&format!(
                                "approval policy for this session: {p} (a deny in the config still applies)"
                            ));
                        }
                        Err(e) => self.warn(&e),
                    }
                }
            }
            "budget" => self.budget_command(arg),
            "recipe" => self.recipe_command(arg).await?,
            "clear" => {
                self.saved = SavedSession::new();
                self.approver.forget_always();
                lock(&self.pump).last_observation = None;
                let id = self.saved.id.clone();
                self.say(&format!(
                    "conversation cleared; new session {id} (\"always\" answers forgotten)"
                ));
            }
            "save" => self.save_command(arg)?,
            "last" => {
                let last = lock(&self.pump).last_observation.clone();
                match last {
                    Some(text) => {
                        let text = strip_terminal_escapes(&text);
                        self.say(&text);
                    }
                    None => self.note("no observation yet in this session"),
                }
            }
            other => self.warn(&format!("/{other} is not handled")),
        }
        Ok(true)
    }

    async fn model_command(&mut self, arg: &str) {
        if arg.is_empty() {
            // The default model, then each role that has one of its own.
            let mut line = format!("model: {}", self.models.get(ModelRole::Default).name());
            for (role, name) in self.models.names() {
                if role != ModelRole::Default && self.models.has_own(role) {
                    line.push_str(&format!(" · {role}: {name}"));
                }
            }
            self.say(&line);
            return;
        }
        let mut settings = self.settings.clone();
        settings.model = arg.to_string();
        self.note(&format!("loading model {arg} …"));
        match self.session.models(&settings, 0).await {
            Ok(models) => {
                self.models = models;
                self.settings = settings;
                self.say(&format!("model: {arg}"));
            }
            Err(e) => self.warn(&format!(
                "could not load {arg}: {}; keeping the current model",
                crate::cli::describe(&e)
            )),
        }
    }

    /// The configured embedder (loaded once per process), or a warning
    /// and `None` when it cannot be loaded.
    fn embedder(&mut self) -> Option<Option<std::sync::Arc<dyn crate::memory::embed::Embedder>>> {
        match crate::cli::memory::shared_embedder(&self.session.dirs, &self.session.config) {
            Ok(e) => Some(e),
            Err(e) => {
                self.warn(&format!(
                    "cannot load the embedder: {}",
                    crate::cli::describe(&e)
                ));
                None
            }
        }
    }

    fn memory_command(&mut self, query: &str) {
        let Some(embedder) = self.embedder() else {
            return;
        };
        let memory =
            match crate::memory::longterm::LongTermMemory::open(&self.session.store, embedder) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&format!("cannot open long-term memory: {e}"));
                    return;
                }
            };
        let found = if query.is_empty() {
            memory.list().map(|mut all| {
                all.reverse();
                all.truncate(10);
                all
            })
        } else {
            memory
                .search(query, 10)
                .map(|hits| hits.into_iter().map(|h| h.memory).collect())
        };
        match found {
            Ok(list) if list.is_empty() => self.note("no memories found"),
            Ok(list) => {
                let text = list
                    .iter()
                    .map(|m| format!("  {}", crate::cli::memory::line(m)))
                    .collect::<Vec<_>>()
                    .join("\n");
                self.say(&text);
            }
            Err(e) => self.warn(&format!("memory search failed: {e}")),
        }
    }

    fn kb_command(&mut self, query: &str) {
        let Some(embedder) = self.embedder() else {
            return;
        };
        let kb = match crate::cli::memory::knowledge_base(
            &self.session.store,
            &self.session.config,
            embedder,
        ) {
            Ok(kb) => kb,
            Err(e) => return self.warn(&format!("cannot open the knowledge base: {e}")),
        };
        if query.is_empty() {
            match kb.list() {
                Ok(docs) if docs.is_empty() => {
                    self.note("the knowledge base is empty; add documents with `agent kb add PATH`")
                }
                Ok(docs) => {
                    let text = docs
                        .iter()
                        .map(|d| format!("  {}", crate::cli::kb::doc_line(d)))
                        .collect::<Vec<_>>()
                        .join("\n");
                    self.say(&text);
                }
                Err(e) => self.warn(&format!("cannot list the knowledge base: {e}")),
            }
            return;
        }
        match kb.search(query, 5) {
            Ok(hits) if hits.is_empty() => self.note("nothing found in the knowledge base"),
            Ok(hits) => {
                let text = hits
                    .iter()
                    .map(crate::cli::kb::hit_text)
                    .collect::<Vec<_>>()
                    .join("\n\n");
                self.say(&text);
            }
            Err(e) => self.warn(&format!("knowledge base search failed: {e}")),
        }
    }

    fn budget_command(&mut self, arg: &str) {
        let mut words = arg.split_whitespace();
        match (words.next(), words.next()) {
            (None, _) => {}
            (Some("steps"), Some(n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => self.settings.max_steps = n,
                _ => return self.warn("steps must be a whole number of at least 1"),
            },
            (Some("tokens"), Some(n)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => self.settings.max_tokens = n,
                _ => return self.warn("tokens must be a whole number of at least 1"),
            },
            (Some("time"), Some(d)) => match parse_duration(d) {
                Ok(secs) => self.settings.timeout_secs = secs,
                Err(e) => return self.warn(&e),
            },
            _ => return self.warn("usage: /budget [steps N | tokens N | time DURATION]"),
        }
        let s = &self.settings;
        let text = format!(
            "each goal: at most {} steps, {} tokens, {} s · spent in this session: {} tokens",
            s.max_steps, s.max_tokens, s.timeout_secs, self.tokens
        );
        self.say(&text);
    }

    fn save_command(&mut self, arg: &str) -> anyhow::Result<()> {
        if arg.is_empty() {
            self.warn("usage: /save FILE (the conversation as Markdown)");
            return Ok(());
        }
        let mut turns = Vec::new();
        for t in &self.saved.turns {
            let record = self.session.journal.get(&t.run_id)?;
            let steps = self
                .session
                .journal
                .steps(&t.run_id)?
                .into_iter()
                .map(|s| TranscriptStep {
                    thought: s.thought.unwrap_or_default(),
                    tool: s.tool,
                    args: s.args,
                    observation: s.observation,
                })
                .collect();
            turns.push(TranscriptTurn {
                goal: t.goal.clone(),
                run_id: t.run_id.clone(),
                status: t.status.clone(),
                answer: record.and_then(|r| r.answer),
                steps,
            });
        }
        let md = repl::transcript_markdown(&self.saved.id, &turns);
        let path = PathBuf::from(arg);
        match std::fs::write(&path, md) {
            Ok(()) => self.say(&format!(
                "saved {} exchanges to {}",
                turns.len(),
                path.display()
            )),
            Err(e) => self.warn(&format!("cannot write {}: {e}", path.display())),
        }
        Ok(())
    }
}

//! Loop guards: repetition and invalid-output streaks.
//!
//! Measured here: the 135M default model, left alone, repeats its first
//! action forever. The guard answers a repeated action (same tool, same
//! arguments) without running it again and nudges the model; a further
//! repeat gets a last warning; the next one stops the run. Invalid outputs
//! (unparseable, unknown tool, bad arguments) stop the run after three in a
//! row. Ping-pong loops (A, B, A, B, ...) are caught by counting how often an
//! action occurred at all.

/// Consecutive invalid outputs that stop a run.
pub const MAX_INVALID_STREAK: u32 = 3;
/// Total occurrences of one action that stop a run (even non-consecutive).
pub const MAX_OCCURRENCES: u32 = 5;

/// What to do with an action the model just chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New enough: run it.
    Run,
    /// Repeated: do not run; tell the model this.
    Nudge(String),
    /// Repeated too often: stop the run with this reason.
    Stop(String),
}

/// Tracks recent actions of one run.
#[derive(Debug, Default, Clone)]
pub struct LoopGuard {
    history: Vec<(String, u32)>,
    last: Option<String>,
    consecutive: u32,
    invalid_streak: u32,
}

/// Canonical key of an action: tool plus arguments with sorted keys.
pub fn action_key(tool: &str, args: &serde_json::Value) -> String {
    fn canon(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), canon(&m[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(canon).collect()),
            other => other.clone(),
        }
    }
    format!("{tool} {}", canon(args))
}

impl LoopGuard {
    /// A fresh guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Judge a valid action taken at `step`.
    pub fn check(&mut self, step: u32, key: &str) -> Verdict {
        self.invalid_streak = 0;
        if self.last.as_deref() == Some(key) {
            self.consecutive += 1;
        } else {
            self.consecutive = 1;
            self.last = Some(key.to_string());
        }
        let earlier: Vec<u32> = self
            .history
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| *s)
            .collect();
        self.history.push((key.to_string(), step));
        let first = earlier.first().copied().unwrap_or(step);
        let occurrences = earlier.len() as u32 + 1;
        match self.consecutive {
            1 if occurrences >= MAX_OCCURRENCES => Verdict::Stop(format!(
                "the same action was chosen {occurrences} times (first at step {first}); the agent is going in circles"
            )),
            1 if occurrences >= 3 => Verdict::Nudge(format!(
                "You have now chosen this exact action {occurrences} times (first at step {first}) and its result has not changed. \
                 You are going in circles: use what you learned and try a different approach, or call finish."
            )),
            1 => Verdict::Run,
            2 => Verdict::Nudge(format!(
                "You just did exactly this (step {first}); its result is above, so it was not run again. \
                 Do something different, or call finish with your answer."
            )),
            3 => Verdict::Nudge(
                "This is the third identical action in a row. Choose a different action or call finish now; \
                 one more repeat stops the run."
                    .into(),
            ),
            n => Verdict::Stop(format!("the same action was repeated {n} times in a row despite warnings")),
        }
    }

    /// Whether [`Self::check`] would refuse `key` now (a repeat it would
    /// nudge about or stop at), without recording anything.
    pub fn would_refuse(&self, key: &str) -> bool {
        self.last.as_deref() == Some(key)
            || self.history.iter().filter(|(k, _)| k == key).count() >= 2
    }

    /// Record an invalid output; `Some(reason)` when the run must stop.
    pub fn invalid(&mut self) -> Option<String> {
        self.invalid_streak += 1;
        self.last = None;
        self.consecutive = 0;
        (self.invalid_streak >= MAX_INVALID_STREAK)
            .then(|| format!("the model produced {MAX_INVALID_STREAK} invalid actions in a row"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argument_order_does_not_hide_a_repeat() {
        assert_eq!(
            action_key("t", &json!({"a": 1, "b": {"y": 2, "x": 1}})),
            action_key("t", &json!({"b": {"x": 1, "y": 2}, "a": 1}))
        );
    }

    #[test]
    fn would_refuse_foretells_check_without_recording() {
        let mut g = LoopGuard::new();
        assert!(!g.would_refuse("a"));
        assert_eq!(g.check(1, "a"), Verdict::Run);
        assert!(g.would_refuse("a") && !g.would_refuse("b"));
        assert_eq!(g.check(2, "b"), Verdict::Run);
        // Twice before, not in a row: the third is nudged.
        assert_eq!(g.check(3, "a"), Verdict::Run);
        assert_eq!(g.check(4, "b"), Verdict::Run);
        assert!(g.would_refuse("a"));
        assert!(matches!(g.check(5, "a"), Verdict::Nudge(_)));
    }

    #[test]
    fn consecutive_repeats_nudge_warn_then_stop() {
        let mut g = LoopGuard::new();
        assert_eq!(g.check(1, "a"), Verdict::Run);
        assert!(matches!(g.check(2, "a"), Verdict::Nudge(m) if m.contains("step 1")));
        assert!(matches!(g.check(3, "a"), Verdict::Nudge(m) if m.contains("third")));
        assert!(matches!(g.check(4, "a"), Verdict::Stop(_)));
    }

    #[test]
    fn ping_pong_is_caught_by_occurrence_count() {
        let mut g = LoopGuard::new();
        let verdicts: Vec<Verdict> = (1..=10)
            .map(|s| g.check(s, if s % 2 == 0 { "a" } else { "b" }))
            .collect();
        assert_eq!(verdicts[0], Verdict::Run);
        assert!(matches!(verdicts[4], Verdict::Nudge(_)), "{verdicts:?}");
        assert!(
            verdicts.iter().any(|v| matches!(v, Verdict::Stop(_))),
            "{verdicts:?}"
        );
    }

    #[test]
    fn three_invalid_in_a_row_stop_but_a_valid_action_resets() {
        let mut g = LoopGuard::new();
        assert!(g.invalid().is_none());
        assert!(g.invalid().is_none());
        g.check(1, "x");
        assert!(g.invalid().is_none());
        assert!(g.invalid().is_none());
        assert!(g.invalid().is_some());
    }
}

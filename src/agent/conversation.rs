//! The conversation a run continues, as chat messages.
//!
//! A follow-up in the REPL ("and twice that?") is its own run whose `goal`
//! is the user's words; the earlier exchanges travel beside it
//! (`RunRecord::earlier`) and reach the model as messages before the goal:
//! the user's earlier request, then what came of it. Memory recall,
//! reflection, the planner and the plan reviewer all see the request itself,
//! not prose about the conversation.
//!
//! Decisions:
//! - The messages are counted against the context window: the newest
//!   exchanges that fit in the share a strategy gives them are kept, and a
//!   note says how many older ones are not shown. Each request and answer is
//!   cut to [`CARRIED_CHARS`] first, so one long answer cannot crowd out the
//!   rest. Steps of earlier runs are not carried: the answer is what the user
//!   saw, and the journal keeps the rest.
//! - The earlier answer is plain text, not an action: the planner and the
//!   ReAct loop read the same messages, and each answers in its own format.

use crate::memory::sessions::Exchange;
use crate::model::{self, ChatMessage, MESSAGE_OVERHEAD, ModelBackend};
use crate::sanitize;

/// Longest request or answer carried, in characters.
pub const CARRIED_CHARS: usize = 2000;

/// The earlier exchanges that fit, as messages.
#[derive(Debug, Clone, Default)]
pub struct Earlier {
    /// User and assistant messages, oldest first; empty when nothing fits.
    pub messages: Vec<ChatMessage>,
    /// Exchanges left out because they did not fit (the oldest ones).
    pub left_out: usize,
    /// Tokens the messages take, overhead included.
    pub tokens: usize,
}

/// The newest of `earlier` that fit in `budget` tokens, as messages.
pub fn earlier_messages(earlier: &[Exchange], model: &dyn ModelBackend, budget: usize) -> Earlier {
    let mut kept: Vec<[ChatMessage; 2]> = Vec::new();
    let mut tokens = 0;
    for exchange in earlier.iter().rev() {
        let pair = pair(exchange);
        let cost = pair
            .iter()
            .map(|m| model::count_tokens(model, &m.content) + MESSAGE_OVERHEAD)
            .sum::<usize>();
        if tokens + cost > budget {
            break;
        }
        tokens += cost;
        kept.push(pair);
    }
    let left_out = earlier.len() - kept.len();
    let mut messages: Vec<ChatMessage> = kept.into_iter().rev().flatten().collect();
    if left_out > 0
        && let Some(first) = messages.first_mut()
    {
        first.content = format!(
            "({left_out} earlier exchanges of this conversation are not shown.)\n{}",
            first.content
        );
    }
    Earlier {
        messages,
        left_out,
        tokens,
    }
}

/// The user's request and what came of it.
fn pair(exchange: &Exchange) -> [ChatMessage; 2] {
    let request = sanitize::cap_head_tail(&exchange.goal, CARRIED_CHARS);
    let outcome = sanitize::cap_head_tail(&exchange.outcome, CARRIED_CHARS);
    let reply = if exchange.status == "finished" {
        outcome
    } else {
        format!("(This was not finished: {}.) {outcome}", exchange.status)
    };
    [ChatMessage::user(request), ChatMessage::assistant(reply)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::model::scripted::ScriptedBackend;

    fn exchange(goal: &str, status: &str, outcome: &str) -> Exchange {
        Exchange {
            goal: goal.into(),
            status: status.into(),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn earlier_exchanges_become_request_and_answer_messages() {
        let model = ScriptedBackend::from_texts(Vec::<String>::new());
        let earlier = [
            exchange("what is in notes.md?", "finished", "A shopping list."),
            exchange("delete it", "cancelled", "cancelled by the user"),
        ];
        let e = earlier_messages(&earlier, &model, 10_000);
        assert_eq!(e.left_out, 0);
        assert_eq!(e.messages.len(), 4);
        assert_eq!(e.messages[0].role, Role::User);
        assert_eq!(e.messages[0].content, "what is in notes.md?");
        assert_eq!(e.messages[1].role, Role::Assistant);
        assert_eq!(e.messages[1].content, "A shopping list.");
        assert!(
            e.messages[3].content.contains("not finished: cancelled"),
            "{}",
            e.messages[3].content
        );
        assert!(e.tokens > 0);
        assert!(earlier_messages(&[], &model, 10_000).messages.is_empty());
    }

    #[test]
    fn the_newest_exchanges_that_fit_are_kept_and_the_rest_counted() {
        let model = ScriptedBackend::from_texts(Vec::<String>::new());
        let many: Vec<Exchange> = (0..10)
            .map(|i| exchange(&format!("goal {i}"), "finished", &"x".repeat(5000)))
            .collect();
        let one = earlier_messages(&many[9..], &model, usize::MAX).tokens;
        let e = earlier_messages(&many, &model, one * 3 + one / 2);
        assert_eq!(e.left_out, 7);
        assert_eq!(e.messages.len(), 6);
        assert!(e.tokens <= one * 3 + one / 2);
        assert!(e.messages[0].content.starts_with("(7 earlier exchanges"));
        assert!(e.messages[0].content.ends_with("goal 7"));
        assert!(e.messages[5].content.len() < 2 * CARRIED_CHARS);
        // Nothing fits: nothing is sent, and everything is counted as left out.
        let none = earlier_messages(&many, &model, 3);
        assert!(none.messages.is_empty());
        assert_eq!(none.left_out, 10);
    }
}

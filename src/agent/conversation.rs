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
//!   exchanges that fit in the share a strategy gives them are kept whole;
//!   older ones are compacted into one short line each (the request and how
//!   it ended, at most [`COMPACTED_LINES`] of them, newest kept) at the head
//!   of the first message. Each request and answer is cut to
//!   [`CARRIED_CHARS`] first, so one long answer cannot crowd out the rest.
//!   Steps of earlier runs are not carried: the answer is what the user saw,
//!   and the journal keeps the rest.
//! - The earlier answer is plain text, not an action: the planner and the
//!   ReAct loop read the same messages, and each answers in its own format.

use crate::memory::sessions::Exchange;
use crate::model::{self, ChatMessage, MESSAGE_OVERHEAD, ModelBackend};
use crate::sanitize;

/// Longest request or answer carried, in characters.
pub const CARRIED_CHARS: usize = 2000;
/// Most older exchanges listed, one line each, when they do not fit whole.
pub const COMPACTED_LINES: usize = 8;
/// Longest request in such a line, in characters.
const COMPACTED_CHARS: usize = 100;

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

/// The newest of `earlier` that fit in `budget` tokens, as messages, the
/// older ones compacted into short lines; never more than `budget` tokens.
pub fn earlier_messages(earlier: &[Exchange], model: &dyn ModelBackend, budget: usize) -> Earlier {
    let cost = |m: &ChatMessage| model::count_tokens(model, &m.content) + MESSAGE_OVERHEAD;
    let pairs: Vec<[ChatMessage; 2]> = earlier.iter().map(pair).collect();
    let costs: Vec<usize> = pairs.iter().map(|p| p.iter().map(cost).sum()).collect();
    // The newest that fit whole, then fewer while the note on the older
    // ones does not fit beside them.
    let mut keep = 0;
    let mut used = 0;
    for c in costs.iter().rev() {
        if used + c > budget {
            break;
        }
        used += c;
        keep += 1;
    }
    let n = earlier.len();
    let mut note = None;
    loop {
        let left_out = n - keep;
        let whole: usize = costs[left_out..].iter().sum();
        let text = (left_out > 0).then(|| compacted(&earlier[..left_out]));
        // Alone, the note needs a message pair of its own.
        let extra = match &text {
            None => 0,
            Some(t) if keep > 0 => model::count_tokens(model, t) + 2,
            Some(t) => model::count_tokens(model, t) + 2 * MESSAGE_OVERHEAD + 2,
        };
        if whole + extra <= budget {
            note = text.map(|t| (t, extra));
            break;
        }
        if keep == 0 {
            break;
        }
        keep -= 1;
    }
    let left_out = n - keep;
    let mut tokens: usize = costs[left_out..].iter().sum();
    let mut messages: Vec<ChatMessage> = pairs.into_iter().skip(left_out).flatten().collect();
    if let Some((text, extra)) = note {
        tokens += extra;
        match messages.first_mut() {
            Some(first) => first.content = format!("{text}\n\n{}", first.content),
            None => {
                messages.push(ChatMessage::user(text));
                messages.push(ChatMessage::assistant("Noted.".to_string()));
            }
        }
    }
    Earlier {
        messages,
        left_out,
        tokens,
    }
}

/// Older exchanges as one line each (request and how it ended), newest kept.
fn compacted(older: &[Exchange]) -> String {
    let skip = older.len().saturating_sub(COMPACTED_LINES);
    let mut note = format!(
        "Earlier in this conversation ({} exchanges, shown in short):",
        older.len()
    );
    if skip > 0 {
        note.push_str(&format!("\n- ({skip} more, not shown)"));
    }
    for e in &older[skip..] {
        note.push_str(&format!(
            "\n- {} ({})",
            sanitize::one_line(&e.goal, COMPACTED_CHARS),
            e.status
        ));
    }
    note
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
        // The older seven are one short line each, at the head.
        let head = &e.messages[0].content;
        assert!(
            head.starts_with("Earlier in this conversation (7 exchanges"),
            "{head}"
        );
        assert!(head.contains("\n- goal 0 (finished)") && head.contains("\n- goal 6 (finished)"));
        assert!(head.ends_with("goal 7"), "{head}");
        assert!(e.messages[5].content.len() < 2 * CARRIED_CHARS);
        // Beyond COMPACTED_LINES, the oldest are counted, not listed.
        let lots: Vec<Exchange> = (0..30)
            .map(|i| exchange(&format!("goal {i}"), "finished", &"x".repeat(5000)))
            .collect();
        let e = earlier_messages(&lots, &model, one * 2);
        let head = &e.messages[0].content;
        let more = format!("({} more, not shown)", e.left_out - COMPACTED_LINES);
        assert!(
            head.contains(&more) && !head.contains("- goal 0 ("),
            "{head}"
        );
        assert!(e.tokens <= one * 2);
        // Nothing fits whole: the short lines are all that is sent.
        let small = earlier_messages(&many, &model, 300);
        assert_eq!(small.left_out, 10);
        assert_eq!(small.messages.len(), 2);
        assert!(small.messages[0].content.contains("- goal 9 (finished)"));
        assert!(small.tokens <= 300);
        // Not even that fits: nothing is sent.
        let none = earlier_messages(&many, &model, 3);
        assert!(none.messages.is_empty());
        assert_eq!(none.tokens, 0);
    }
}

//! Conversations: the earlier exchanges a run continues, and the REPL's
//! saved sessions (the store's `sessions` tree) that hold them.
//!
//! Decisions:
//! - An exchange is the user's words, how the run ended and its answer; not
//!   the steps. A run that continues a conversation keeps its exchanges in
//!   its [`crate::memory::RunRecord`] (`earlier`), so `agent runs resume`
//!   gives the model the same conversation, and the run's `goal` stays the
//!   user's own request.
//! - A session is saved after every goal and flushed, so `agent chat
//!   --resume` finds it even after a crash. Unreadable records are skipped
//!   when listing (one bad record must not hide the others).

use serde::{Deserialize, Serialize};

use super::journal::{new_run_id, now_rfc3339};
use super::store::{Store, StoreError};

/// One earlier exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// What the user asked, in their words.
    pub goal: String,
    /// How the run ended (`finished`, `cancelled`, ...).
    pub status: String,
    /// The answer, or why it stopped when there was none.
    pub outcome: String,
}

/// A saved session: its exchanges, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSession {
    /// Session id (time-sortable).
    pub id: String,
    /// When it began (RFC 3339).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Each goal, its run and its outcome.
    pub turns: Vec<SavedTurn>,
    /// The untrusted content the conversation has read and no person has
    /// approved an action since: the next run starts from it, since the
    /// earlier answers it sees may carry that content's words (case 39).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tainted: Option<String>,
}

/// One exchange of a saved session, with the run that answered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedTurn {
    /// The user's words.
    pub goal: String,
    /// The run in the journal.
    pub run_id: String,
    /// How it ended.
    pub status: String,
    /// The answer, or why it stopped.
    pub outcome: String,
}

impl SavedSession {
    /// A new, empty session, created now.
    pub fn new() -> Self {
        let now = now_rfc3339();
        Self {
            id: new_run_id(),
            created_at: now.clone(),
            updated_at: now,
            turns: Vec::new(),
            tainted: None,
        }
    }

    /// The exchanges so far, oldest first.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.turns
            .iter()
            .map(|t| Exchange {
                goal: t.goal.clone(),
                status: t.status.clone(),
                outcome: t.outcome.clone(),
            })
            .collect()
    }
}

impl Default for SavedSession {
    fn default() -> Self {
        Self::new()
    }
}

/// Failure finding or saving a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("there is no saved session yet; start one with `agent chat`")]
    NoneYet,
    #[error("no session `{0}`; `agent chat --resume` continues the latest one")]
    NotFound(String),
    #[error("`{query}` matches {count} sessions; give more of the id")]
    Ambiguous { query: String, count: usize },
    #[error("cannot save the session in the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot encode the session: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Saved sessions in the store's `sessions` tree.
pub struct Sessions(sled::Tree);

impl Sessions {
    /// The sessions of `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self(store.tree("sessions")?))
    }

    /// Save (replace) `session`, flushed before returning.
    pub fn save(&self, session: &SavedSession) -> Result<(), SessionError> {
        self.0
            .insert(session.id.as_bytes(), serde_json::to_vec(session)?)
            .map_err(StoreError::from)?;
        self.0.flush().map_err(StoreError::from)?;
        Ok(())
    }

    /// Every readable session, in id order.
    pub fn all(&self) -> Vec<SavedSession> {
        self.0
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// `last` (the most recently changed), an id, or a unique id prefix.
    pub fn find(&self, query: &str) -> Result<SavedSession, SessionError> {
        let all = self.all();
        if query == "last" {
            return all
                .into_iter()
                .max_by(|a, b| a.updated_at.cmp(&b.updated_at).then(a.id.cmp(&b.id)))
                .ok_or(SessionError::NoneYet);
        }
        let mut found: Vec<SavedSession> = all
            .into_iter()
            .filter(|s| s.id.starts_with(query))
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(SessionError::NotFound(query.to_string())),
            count => Err(SessionError::Ambiguous {
                query: query.to_string(),
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_last_id_or_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let sessions = Sessions::open(&store).unwrap();
        assert!(matches!(sessions.find("last"), Err(SessionError::NoneYet)));
        let mut a = SavedSession::new();
        a.id = "20260101-000000-aaaa".into();
        a.updated_at = "2026-01-01T00:00:00Z".into();
        let mut b = SavedSession::new();
        b.id = "20250101-000000-bbbb".into();
        b.updated_at = "2026-02-01T00:00:00Z".into();
        b.turns.push(SavedTurn {
            goal: "g".into(),
            run_id: "r".into(),
            status: "finished".into(),
            outcome: "o".into(),
        });
        sessions.save(&a).unwrap();
        sessions.save(&b).unwrap();
        assert_eq!(sessions.find("last").unwrap().id, b.id);
        assert_eq!(sessions.find("2026").unwrap().id, a.id);
        assert!(
            sessions
                .find("2")
                .unwrap_err()
                .to_string()
                .contains("matches 2")
        );
        assert!(matches!(
            sessions.find("nope"),
            Err(SessionError::NotFound(_))
        ));
        assert_eq!(sessions.find(&b.id).unwrap().exchanges()[0].outcome, "o");
    }
}

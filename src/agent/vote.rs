//! Several candidates, one action (`--samples N`): a step samples N
//! constrained actions at `sample_temperature` and takes the one that more
//! than half of them agree on, compared as (tool, arguments with sorted
//! keys); without such a majority it falls back to the greedy answer
//! (temperature 0). The ballots go into the step's journal record
//! ([`Votes`]), so `agent runs show` says how each action was chosen.
//!
//! Every candidate is already valid JSON for the live tool schema (the
//! grammar sees to that on local models), so what differs between them is
//! the choice: which tool, which file, which code. A small model's greedy
//! choice is one draw; the majority of several is a steadier one. It costs
//! N model calls per step (N+1 without a majority).

use crate::memory::journal::{Ballot, Votes};

/// The ballots of `candidates` (each the action key of a valid candidate,
/// `None` for an invalid one), most votes first, ties in the order first
/// seen.
pub fn tally(candidates: &[Option<String>]) -> (Vec<Ballot>, u32) {
    let mut ballots: Vec<Ballot> = Vec::new();
    let mut invalid = 0;
    for candidate in candidates {
        match candidate {
            None => invalid += 1,
            Some(key) => match ballots.iter_mut().find(|b| &b.action == key) {
                Some(b) => b.votes += 1,
                None => ballots.push(Ballot {
                    action: key.clone(),
                    votes: 1,
                }),
            },
        }
    }
    // Stable: equal counts keep the order they were first seen in.
    ballots.sort_by_key(|b| std::cmp::Reverse(b.votes));
    (ballots, invalid)
}

/// The action more than half of `samples` candidates chose, if one did.
pub fn majority(ballots: &[Ballot], samples: u32) -> Option<&str> {
    ballots
        .first()
        .filter(|b| b.votes * 2 > samples)
        .map(|b| b.action.as_str())
}

/// The record of a step's vote.
pub fn votes(samples: u32, temperature: f32, ballots: Vec<Ballot>, invalid: u32) -> Votes {
    let chosen = if majority(&ballots, samples).is_some() {
        "majority"
    } else {
        "greedy"
    };
    Votes {
        samples,
        temperature,
        ballots,
        invalid,
        chosen: chosen.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[Option<&str>]) -> Vec<Option<String>> {
        k.iter().map(|k| k.map(String::from)).collect()
    }

    #[test]
    fn the_action_more_than_half_agree_on_wins() {
        let (ballots, invalid) = tally(&keys(&[Some("a"), Some("b"), Some("a"), None]));
        assert_eq!(invalid, 1);
        assert_eq!(ballots[0].action, "a");
        assert_eq!(ballots[0].votes, 2);
        // 2 of 4 is not more than half.
        assert_eq!(majority(&ballots, 4), None);
        assert_eq!(majority(&ballots, 3), Some("a"));
        assert_eq!(votes(3, 0.7, ballots, invalid).chosen, "majority");
        let (ballots, _) = tally(&keys(&[Some("a"), Some("b"), Some("c")]));
        assert_eq!(majority(&ballots, 3), None);
        assert_eq!(votes(3, 0.7, ballots, 0).chosen, "greedy");
    }
}

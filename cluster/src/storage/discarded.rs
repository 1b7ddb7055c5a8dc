//! What a member keeps of the log it discards when it yields after a split
//! brain: every entry it held, decoded, and the snapshot it held, so that
//! an operator can see (and redo by hand) what only this member had
//! committed. [`Disk::keep_discarded`](super::Disk) makes it durable before
//! anything is discarded.

use serde::{Deserialize, Serialize};

/// What [`DiscardedLog::format`] says, so that a tool knows what it reads.
pub const DISCARDED_FORMAT: &str = "vipool-yield-1";

/// The log a yielding member discarded, as kept (JSON) for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardedLog {
    /// [`DISCARDED_FORMAT`].
    pub format: String,
    /// The member that yielded.
    pub member: u64,
    /// The member whose log was kept.
    pub winner: u64,
    /// The yielding member's term.
    pub term: u64,
    /// The winner's term, as its message said.
    pub winner_term: u64,
    /// When the record was written (milliseconds since the Unix epoch; 0
    /// where no clock was asked, in the simulation).
    pub yielded_at_unix_ms: u64,
    /// The yielding member's commit index: entries at or below it were
    /// committed (by this member alone, after its takeover).
    pub commit: u64,
    /// The voters of its configuration (itself alone, after its takeover).
    pub voters: Vec<u64>,
    /// Its learners (the peer it took over from).
    pub learners: Vec<u64>,
    /// The index at which that configuration took effect: the takeover,
    /// unless the configuration changed since.
    pub conf_index: u64,
    /// How many of [`DiscardedLog::entries`] were committed.
    pub committed_entries: u64,
    /// The snapshot it held: its takeover point, or a later compaction
    /// that covers entries no longer listed one by one.
    pub snapshot: Option<DiscardedSnapshot>,
    /// Every entry it held after its snapshot, in order.
    pub entries: Vec<DiscardedEntry>,
}

/// A snapshot a yielding member held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardedSnapshot {
    /// The last entry it covers.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The state machine's snapshot bytes, hex.
    pub data_hex: String,
}

/// One discarded entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardedEntry {
    /// Log index.
    pub index: u64,
    /// Term it was appended in.
    pub term: u64,
    /// raft's entry type (`EntryNormal`, `EntryConfChangeV2`, ...).
    pub entry_type: String,
    /// Whether it was committed (index at or below the commit index).
    pub committed: bool,
    /// The command as the state machine describes it
    /// ([`StateMachine::describe`](crate::StateMachine::describe)), or the
    /// membership change.
    pub decoded: String,
    /// The entry's data as stored in the log, hex.
    pub data_hex: String,
}

impl DiscardedLog {
    /// The committed entries, described, one per line, at most `max`; then
    /// how many more there are.
    pub fn committed_summary(&self, max: usize) -> (Vec<String>, usize) {
        let committed: Vec<&DiscardedEntry> = self.entries.iter().filter(|e| e.committed).collect();
        let shown = committed
            .iter()
            .take(max)
            .map(|e| format!("#{} (term {}) {}", e.index, e.term, e.decoded))
            .collect();
        (shown, committed.len().saturating_sub(max))
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, committed: bool) -> DiscardedEntry {
        DiscardedEntry {
            index,
            term: 2,
            entry_type: "EntryNormal".into(),
            committed,
            decoded: format!("cmd {index}"),
            data_hex: hex(&[index as u8, 0xab]),
        }
    }

    #[test]
    fn summary_lists_committed_entries_up_to_the_cap() {
        let log = DiscardedLog {
            format: DISCARDED_FORMAT.into(),
            member: 2,
            winner: 1,
            term: 3,
            winner_term: 4,
            yielded_at_unix_ms: 0,
            commit: 4,
            voters: vec![2],
            learners: vec![1],
            conf_index: 1,
            committed_entries: 4,
            snapshot: None,
            entries: (1..=5).map(|i| entry(i, i <= 4)).collect(),
        };
        let (shown, more) = log.committed_summary(3);
        assert_eq!(
            shown,
            vec!["#1 (term 2) cmd 1", "#2 (term 2) cmd 2", "#3 (term 2) cmd 3"]
        );
        assert_eq!(more, 1, "entry 4 is committed and not shown; 5 is not committed");
        let text = serde_json::to_string(&log).unwrap();
        assert!(text.contains("\"data_hex\":\"01ab\""), "{text}");
        assert_eq!(serde_json::from_str::<DiscardedLog>(&text).unwrap(), log);
    }
}

//! The contract between the replicated log and what it replicates.

/// A deterministic state machine replicated by the log.
///
/// `apply` must depend only on the current state, the index and the command:
/// no clock, no randomness, no iteration order that can differ between
/// nodes (use `BTreeMap`). Anything time-dependent is stamped into the
/// command by the proposer (the leader).
pub trait StateMachine: Send + 'static {
    /// A command as proposed; the log stores it serialized with serde.
    type Command: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static;
    /// What applying a command returns to its proposer.
    type Response: Send + 'static;

    /// Applies the committed command at log `index` (strictly increasing).
    fn apply(&mut self, index: u64, command: Self::Command) -> Self::Response;

    /// The index of the last applied entry; stored with the state, so it
    /// survives snapshot and restore.
    fn applied_index(&self) -> u64;

    /// The whole state, applied index included, as bytes.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a snapshot taken by [`StateMachine::snapshot`].
    ///
    /// # Errors
    /// The bytes are not a snapshot this version can read; the state is
    /// left unchanged.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError>;

    /// One line an operator can read, for a command the log holds: what a
    /// member that yields after a split brain logs and keeps of the entries
    /// it discards. The default is the command's `Debug`.
    fn describe(command: &Self::Command) -> String {
        format!("{command:?}")
    }
}

/// A snapshot that cannot be restored: the state machine's own error.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore snapshot: {0}")]
pub struct SnapshotError(pub Box<dyn std::error::Error + Send + Sync>);

impl SnapshotError {
    /// Wraps the state machine's error (or a message).
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(e.into())
    }
}

//! The member's log on disk: entries, hard state, conf state and the last
//! snapshot, behind [`raft::Storage`].
//!
//! [`LogStore`] keeps an in-memory mirror that raft reads from, and writes
//! every change to a [`Disk`] in ordered batches; `LogStore::flush` makes a
//! batch durable before the member acknowledges anything that depends on
//! it. Two disks exist: [`Disk::open`] / [`Disk::create`] (redb on a file,
//! the real one; every value checksummed, see [`disk`](self::Disk)) and
//! [`Disk::memory`] (a shared in-memory image that outlives a simulated
//! crash, for the deterministic harness).
//!
//! A store is created explicitly ([`Disk::create`]); opening never creates
//! one, so a lost or emptied file is an error rather than a new, empty
//! member.

mod discarded;
mod disk;
mod flush_times;
#[cfg(test)]
mod sweep;

use std::path::PathBuf;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

pub(crate) use discarded::hex;
pub use discarded::{DiscardedEntry, DiscardedLog, DiscardedSnapshot, DISCARDED_FORMAT};
pub use disk::{Disk, WriteFault};
pub use flush_times::{FlushSnapshot, FlushTimes, FLUSH_BUCKETS};

/// Why the log store cannot be used. Every one is fatal for the member.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// There is no store at this path.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The store's file.
        path: PathBuf,
    },
    /// The file is there but empty (zero length): it never held a store, or
    /// lost everything.
    #[error("{} is empty (zero length)", path.display())]
    ZeroLength {
        /// The store's file.
        path: PathBuf,
    },
    /// A store is created only where nothing is.
    #[error("{} already exists", path.display())]
    Exists {
        /// What is in the way.
        path: PathBuf,
    },
    /// Another process has the store open (a member already running on it).
    #[error("{} is in use by another process", path.display())]
    InUse {
        /// The store's file.
        path: PathBuf,
    },
    /// A file or directory operation failed (permissions, a full disk).
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// To what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The embedded database failed (I/O, or its own checksums found damage).
    #[error("log store database error: {0}")]
    Db(#[from] redb::Error),
    /// The embedded database crashed on the file: it is damaged in a way
    /// its checks did not catch.
    #[error("the database library crashed reading the log store ({0}): the file is damaged")]
    Panicked(String),
    /// A record does not match its checksum: its content changed, or it was
    /// moved to another key.
    #[error("log store record {record} is damaged: {detail}")]
    Checksum {
        /// `table/key` of the record.
        record: String,
        /// What the check found.
        detail: String,
    },
    /// The store opened but its content is not a log this member can trust.
    #[error("log store is corrupt: {0}")]
    Corrupt(String),
    /// The store was written by an incompatible layout.
    #[error("log store has format {found:?}, this build reads {expected:?}")]
    Format {
        /// What the store says.
        found: String,
        /// What this build writes.
        expected: String,
    },
}

impl StoreError {
    /// Whether the file is there but cannot be trusted as this member's log:
    /// damaged, not a log store, or of another format. Such a member can
    /// only be rebuilt from its peer. Missing, empty, busy or unreadable
    /// files are not damage: they have other remedies.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Missing { .. }
            | StoreError::ZeroLength { .. }
            | StoreError::Exists { .. }
            | StoreError::InUse { .. }
            | StoreError::Io { .. } => false,
            StoreError::Db(_)
            | StoreError::Panicked(_)
            | StoreError::Checksum { .. }
            | StoreError::Corrupt(_)
            | StoreError::Format { .. } => true,
        }
    }
}

/// One change to the durable log; a batch applies them in order.
#[derive(Debug, Clone)]
enum Op {
    /// Record this build's format (a new store).
    Format,
    /// Delete every entry with index >= this.
    Truncate(u64),
    Put(Entry),
    /// Delete every entry with index <= this.
    CompactTo(u64),
    HardState(HardState),
    Conf(ConfState, u64),
    Snapshot(Snapshot),
    /// Set (or, with `None`, drop) why this store waits for the leader's snapshot.
    Rebuild(Option<String>),
    /// Forget everything (a yielding member rebuilds from its peer).
    Clear,
}

/// What a disk holds, loaded at start.
#[derive(Debug, Clone, Default, PartialEq)]
struct Image {
    entries: std::collections::BTreeMap<u64, Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    conf_index: u64,
    snapshot: Snapshot,
    rebuild: Option<String>,
}

impl Image {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Format => {}
            Op::Truncate(from) => {
                self.entries.split_off(from);
            }
            Op::Put(e) => {
                self.entries.insert(e.index, e.clone());
            }
            Op::CompactTo(to) => {
                self.entries = self.entries.split_off(&(to + 1));
            }
            Op::HardState(hs) => self.hard_state = hs.clone(),
            Op::Conf(cs, i) => {
                self.conf_state = cs.clone();
                self.conf_index = *i;
            }
            Op::Snapshot(s) => self.snapshot = s.clone(),
            Op::Rebuild(why) => self.rebuild.clone_from(why),
            Op::Clear => *self = Image::default(),
        }
    }
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("protobuf encoding of a raft message cannot fail")
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M, StoreError> {
    M::parse_from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("cannot decode {what}: {e}")))
}

/// The log as raft sees it, mirrored in memory and written through to a [`Disk`].
pub struct LogStore {
    disk: Disk,
    /// Entries `snapshot.index + 1 ..= last`, contiguous.
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    conf_index: u64,
    snapshot: Snapshot,
    /// Why this (empty) store waits for the leader's snapshot, if it does.
    rebuild: Option<String>,
    pending: Vec<Op>,
    /// Raft asked for a snapshot the stored one cannot serve (too old, or
    /// from before the recipient joined); the member makes a fresh one.
    snapshot_wanted: std::cell::Cell<bool>,
    /// How long each durable write took (see [`LogStore::flush_times`]).
    flush_times: std::sync::Arc<FlushTimes>,
    /// Limits the warnings about very slow flushes.
    log: crate::ratelog::RateLimiter,
}

/// A durable write this slow is worth a warning (rate-limited), not only
/// a debug line: it holds up everything on the member's thread.
const SLOW_FLUSH_WARNING: std::time::Duration = std::time::Duration::from_millis(250);

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("disk", &self.disk)
            .field("first", &self.first())
            .field("last", &self.last())
            .field("hard_state", &self.hard_state)
            .finish()
    }
}

impl LogStore {
    /// Loads the log from `disk` and checks that it is one raft can trust.
    ///
    /// # Errors
    /// The disk cannot be read, or what it holds is inconsistent (a gap in the
    /// entries, a commit index past the log, entries that do not follow the
    /// snapshot).
    pub fn open(disk: Disk) -> Result<LogStore, StoreError> {
        let image = disk.load()?;
        let snap_index = image.snapshot.get_metadata().index;
        let mut entries = Vec::with_capacity(image.entries.len());
        let mut expect = snap_index + 1;
        for (i, e) in image.entries {
            if i != expect {
                return Err(StoreError::Corrupt(format!(
                    "log has a gap: expected entry {expect}, found {i} (snapshot at {snap_index})"
                )));
            }
            if e.term
                < entries
                    .last()
                    .map_or(image.snapshot.get_metadata().term, |p: &Entry| p.term)
            {
                return Err(StoreError::Corrupt(format!(
                    "entry {i} has a term lower than its predecessor"
                )));
            }
            entries.push(e);
            expect += 1;
        }
        let last = expect - 1;
        if image.hard_state.commit > last {
            return Err(StoreError::Corrupt(format!(
                "commit index {} is past the last entry {last}",
                image.hard_state.commit
            )));
        }
        if image.hard_state.commit < snap_index {
            return Err(StoreError::Corrupt(format!(
                "commit index {} is before the snapshot {snap_index}",
                image.hard_state.commit
            )));
        }
        Ok(LogStore {
            disk,
            entries,
            hard_state: image.hard_state,
            conf_state: image.conf_state,
            conf_index: image.conf_index,
            snapshot: image.snapshot,
            rebuild: image.rebuild,
            pending: Vec::new(),
            snapshot_wanted: std::cell::Cell::new(false),
            flush_times: std::sync::Arc::default(),
            log: crate::ratelog::RateLimiter::default(),
        })
    }

    /// How long this store's durable writes take: a handle to read from
    /// anywhere (a node's metrics) while the member owns the store.
    pub fn flush_times(&self) -> std::sync::Arc<FlushTimes> {
        std::sync::Arc::clone(&self.flush_times)
    }

    /// Goes on recording into `times` (a store reopened in place of this
    /// one keeps its history).
    pub(crate) fn keep_flush_times(&mut self, times: std::sync::Arc<FlushTimes>) {
        self.flush_times = times;
    }

    /// Whether raft asked for a fresher snapshot since the last call.
    pub(crate) fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    pub(crate) fn disk(&self) -> Disk {
        self.disk.clone()
    }

    /// Why this store waits for a snapshot from the leader, when it was
    /// emptied on purpose ([`LogStore::mark_rebuilding`]) and has not
    /// received one yet.
    pub fn rebuilding(&self) -> Option<&str> {
        self.rebuild.as_deref()
    }

    /// Records, with the next flush, why this empty store waits for the
    /// leader's snapshot (a rejoin, a yield): a member that restarts before
    /// the snapshot arrives can tell an emptied store from one that lost
    /// its content. Installing a snapshot drops the mark.
    pub fn mark_rebuilding(&mut self, why: String) {
        self.rebuild = Some(why.clone());
        self.pending.push(Op::Rebuild(Some(why)));
    }

    /// Whether the store holds no log at all: brand new, or emptied to
    /// rebuild from the leader.
    pub fn is_empty(&self) -> bool {
        self.last() == 0
            && self.hard_state == HardState::default()
            && self.conf_state == ConfState::default()
            && self.snapshot.get_metadata().index == 0
    }

    pub(crate) fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    pub(crate) fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    /// The last snapshot (empty metadata index 0 if none was taken).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether the stored snapshot carries the current configuration: no
    /// membership change was applied (nor a takeover made) after it.
    pub fn snapshot_is_current(&self) -> bool {
        self.snapshot.get_metadata().get_conf_state() == &self.conf_state
    }

    /// The current hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The conf state and the index of the entry that produced it.
    pub fn conf(&self) -> (&ConfState, u64) {
        (&self.conf_state, self.conf_index)
    }

    /// The stored entries (everything after the snapshot).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn append(&mut self, ents: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = ents.first() else { return Ok(()) };
        if first.index < self.first() {
            return Err(StoreError::Corrupt(format!(
                "raft asked to append entry {} before the first index {}",
                first.index,
                self.first()
            )));
        }
        if first.index > self.last() + 1 {
            return Err(StoreError::Corrupt(format!(
                "raft asked to append entry {} after a gap (last {})",
                first.index,
                self.last()
            )));
        }
        let keep = (first.index - self.first()) as usize;
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.pending.push(Op::Truncate(first.index));
        }
        for e in ents {
            self.entries.push(e.clone());
            self.pending.push(Op::Put(e.clone()));
        }
        Ok(())
    }

    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        if hs != self.hard_state {
            self.hard_state = hs.clone();
            self.pending.push(Op::HardState(hs));
        }
    }

    pub(crate) fn set_commit(&mut self, commit: u64) {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(hs);
    }

    pub(crate) fn set_conf(&mut self, cs: ConfState, index: u64) {
        self.conf_state = cs.clone();
        self.conf_index = index;
        self.pending.push(Op::Conf(cs, index));
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub(crate) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), StoreError> {
        let meta = snap.get_metadata();
        if meta.index < self.snapshot.get_metadata().index {
            return Err(StoreError::Corrupt(format!(
                "raft asked to install snapshot {} older than the stored {}",
                meta.index,
                self.snapshot.get_metadata().index
            )));
        }
        self.entries.clear();
        self.pending.push(Op::Truncate(0));
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        self.set_hard_state(hs);
        self.set_conf(meta.get_conf_state().clone(), meta.index);
        self.snapshot = snap.clone();
        self.pending.push(Op::Snapshot(snap));
        if self.rebuild.take().is_some() {
            self.pending.push(Op::Rebuild(None));
        }
        Ok(())
    }

    /// Writes the founding state of a brand-new member into this empty
    /// store (durable with the next flush): a snapshot at index 1 (term 1)
    /// of the state machine before anything was applied (`initial_state`),
    /// whose configuration is `voters`. Every founding member bootstraps
    /// with the same voters and the same state.
    ///
    /// Founders start from a snapshot rather than from entries: a member
    /// added later has nothing at or below 1, so the leader must send it a
    /// snapshot. raft-rs cannot apply a membership change to a member that
    /// has no configuration yet, which replaying entries from 1 would need.
    ///
    /// # Errors
    /// The store is not empty, or `voters` is.
    pub fn bootstrap(&mut self, voters: &[u64], initial_state: Vec<u8>) -> Result<(), StoreError> {
        if !self.is_empty() || voters.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "cannot bootstrap {} with voters {voters:?}",
                if self.is_empty() {
                    "a store"
                } else {
                    "a store that holds a log"
                }
            )));
        }
        let mut snap = Snapshot::default();
        snap.set_data(initial_state.into());
        let meta = snap.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.mut_conf_state().voters = voters.to_vec();
        self.install_snapshot(snap)
    }

    /// Records a snapshot of the applied state at `index` and drops the
    /// entries it covers.
    ///
    /// A snapshot at the index of the stored one replaces it when the
    /// configuration differs: a takeover changes the configuration without
    /// an entry, and the snapshot a rebuilding peer receives must say who
    /// votes as of its index (see [`LogStore::snapshot_is_current`]).
    pub(crate) fn compact(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let stored = self.snapshot.get_metadata();
        if index < stored.index || (index == stored.index && stored.get_conf_state() == &conf_state) {
            return Ok(());
        }
        let term = raft::Storage::term(self, index)
            .map_err(|e| StoreError::Corrupt(format!("compacting to {index}: {e}")))?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        let drop = (index + 1 - self.first()) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = snap.clone();
        self.pending.push(Op::Snapshot(snap));
        self.pending.push(Op::CompactTo(index));
        Ok(())
    }

    /// Forgets the whole log (the member yields to its peer and rebuilds).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.hard_state = HardState::default();
        self.conf_state = ConfState::default();
        self.conf_index = 0;
        self.snapshot = Snapshot::default();
        self.rebuild = None;
        self.pending.clear();
        self.pending.push(Op::Clear);
    }

    /// Writes every change since the last flush to disk, durably.
    ///
    /// # Errors
    /// The disk write failed; the member must stop.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        let started = std::time::Instant::now();
        let written = self.disk.write(&ops);
        // Every election, vote and append waits for this: a slow disk shows
        // up as slow leadership changes, and here is where to see it.
        let took = started.elapsed();
        if took >= SLOW_FLUSH_WARNING {
            // The member's thread waited that long for the disk: whatever
            // else runs on it (in a node: the license server's raft side,
            // the pair's beacons) waited too.
            crate::warn_limited!(
                self.log,
                "slow flush",
                ms = took.as_secs_f64() * 1e3,
                ops = ops.len(),
                "slow log flush: the disk held the raft member up"
            );
        } else if took >= std::time::Duration::from_millis(5) {
            tracing::debug!(ms = took.as_secs_f64() * 1e3, ops = ops.len(), "slow log flush");
        }
        if written.is_ok() {
            self.flush_times.record(took);
        }
        written
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < snap.index {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self.snapshot.get_metadata().get_conf_state();
        let knows_to = cs.voters.contains(&to) || cs.learners.contains(&to);
        if self.snapshot.get_metadata().index < request_index || !knows_to || !self.snapshot_is_current() {
            // raft-rs refuses a snapshot whose configuration lacks the
            // recipient; a snapshot from before the last membership change
            // makes the recipient believe an old configuration until the
            // entries after it arrive (one that says it took over as sole
            // voter takes our next append for a split brain). Ask the
            // member for a fresh one and let raft retry.
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    use super::*;
    use raft::Storage as _;
    use redb::ReadableTable as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3].into(),
            ..Default::default()
        }
    }

    fn reopen(disk: &Disk) -> LogStore {
        LogStore::open(disk.clone()).expect("reopen")
    }

    fn open_path(path: &Path) -> Result<LogStore, StoreError> {
        Disk::open(path).and_then(LogStore::open)
    }

    /// A store on disk with entries 1..=4 (term 1), hard state, conf state
    /// and index, and a snapshot at 1.
    fn written(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("log.redb");
        let mut s = LogStore::open(Disk::create(&path).unwrap()).unwrap();
        s.append(&(1..=4).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        s.set_hard_state(HardState {
            term: 1,
            vote: 1,
            commit: 3,
            ..Default::default()
        });
        let cs = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        s.set_conf(cs.clone(), 1);
        s.compact(1, cs, b"state@1".to_vec()).unwrap();
        s.flush().unwrap();
        path
    }

    #[test]
    fn redb_restart_resumes_entries_hard_state_conf_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let disk = Disk::create(&path).unwrap();
            let mut s = LogStore::open(disk).unwrap();
            assert!(s.is_empty());
            s.append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
                .unwrap();
            // Overwrite a conflicting suffix.
            s.append(&[entry(8, 2), entry(9, 2)]).unwrap();
            s.set_hard_state(HardState {
                term: 2,
                vote: 1,
                commit: 7,
                ..Default::default()
            });
            let cs = ConfState {
                voters: vec![1, 2],
                ..Default::default()
            };
            s.set_conf(cs.clone(), 3);
            s.compact(5, cs, b"state@5".to_vec()).unwrap();
            s.flush().unwrap();
        }
        let s = open_path(&path).unwrap();
        assert_eq!(s.first(), 6);
        assert_eq!(s.last(), 9);
        assert_eq!(s.term(5).unwrap(), 1);
        assert_eq!(s.term(9).unwrap(), 2);
        assert_eq!(s.hard_state().commit, 7);
        assert_eq!(s.hard_state().vote, 1);
        assert_eq!(s.conf().0.voters, vec![1, 2]);
        assert_eq!(s.conf().1, 3);
        assert_eq!(s.snapshot_ref().get_data(), b"state@5");
        assert!(matches!(
            s.entries(5, 7, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(RaftStorageError::Compacted))
        ));
        let got = s.entries(6, 10, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(
            got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(6, 1), (7, 1), (8, 2), (9, 2)]
        );
    }

    #[test]
    fn unflushed_changes_are_not_on_disk() {
        let disk = Disk::memory();
        let mut s = LogStore::open(disk.clone()).unwrap();
        s.append(&[entry(1, 1)]).unwrap();
        s.flush().unwrap();
        s.append(&[entry(2, 1)]).unwrap();
        drop(s);
        assert_eq!(reopen(&disk).last(), 1);
    }

    #[test]
    fn installed_snapshot_replaces_the_log_and_ends_a_rebuild() {
        let disk = Disk::memory();
        let mut s = LogStore::open(disk.clone()).unwrap();
        s.mark_rebuilding("rejoin at 5".into());
        s.flush().unwrap();
        assert_eq!(reopen(&disk).rebuilding(), Some("rejoin at 5"));
        s.append(&(1..=4).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 20;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().mut_conf_state().voters = vec![1];
        snap.set_data(b"x".to_vec().into());
        s.install_snapshot(snap).unwrap();
        s.flush().unwrap();
        let s = reopen(&disk);
        assert_eq!((s.first(), s.last()), (21, 20));
        assert_eq!(s.term(20).unwrap(), 3);
        assert_eq!(s.hard_state().commit, 20);
        assert_eq!(
            s.conf(),
            (&s.snapshot_ref().get_metadata().get_conf_state().clone(), 20)
        );
        assert_eq!(s.rebuilding(), None, "the snapshot ends the rebuild");
    }

    /// A snapshot from before the last membership change is not sent: a
    /// peer rebuilding from it would believe the old configuration (see
    /// `sim::rebuild`). Raft is told to retry; a snapshot at the same
    /// index with the configuration now applied replaces it.
    #[test]
    fn a_snapshot_from_before_a_membership_change_is_remade_before_it_is_sent() {
        let disk = Disk::memory();
        let mut s = LogStore::open(disk.clone()).unwrap();
        s.append(&(1..=4).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        s.set_commit(4);
        let old = ConfState {
            voters: vec![2],
            learners: vec![1],
            ..Default::default()
        };
        s.set_conf(old.clone(), 2);
        s.compact(3, old, b"state@3".to_vec()).unwrap();
        assert!(s.snapshot_is_current());
        assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 3);
        // 1 is promoted back to voter (applied at 4, no snapshot since).
        let now = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        s.set_conf(now.clone(), 4);
        assert!(!s.snapshot_is_current());
        assert!(matches!(
            s.snapshot(0, 2),
            Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert!(s.take_snapshot_wanted(), "the member is asked for a fresh one");
        // A takeover changes the configuration without an entry: a snapshot
        // at the stored one's index is remade when it differs, not kept.
        s.compact(3, now.clone(), b"state@3".to_vec()).unwrap();
        assert_eq!(s.snapshot_ref().get_metadata().get_conf_state(), &now);
        assert!(s.snapshot_is_current());
        let sent = s.snapshot(0, 2).unwrap();
        assert_eq!(
            (sent.get_metadata().index, sent.get_metadata().get_conf_state()),
            (3, &now)
        );
        s.flush().unwrap();
        assert_eq!(reopen(&disk).snapshot_ref().get_metadata().get_conf_state(), &now);
    }

    #[test]
    fn open_never_creates_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let err = Disk::open(&path).expect_err("missing");
        assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
        assert!(!err.is_damage());
        assert_eq!(err.to_string(), format!("{} does not exist", path.display()));
        assert!(!path.exists(), "open created the file");

        std::fs::write(&path, b"").unwrap();
        let err = Disk::open(&path).expect_err("zero length");
        assert!(matches!(err, StoreError::ZeroLength { .. }), "{err:?}");
        assert!(err.to_string().contains("empty (zero length)"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "open wrote to it");

        let err = Disk::create(&path).expect_err("exists");
        assert!(matches!(err, StoreError::Exists { .. }), "{err:?}");
        std::fs::remove_file(&path).unwrap();
        drop(Disk::create(&path).unwrap());
        let s = open_path(&path).unwrap();
        assert!(s.is_empty() && s.rebuilding().is_none());
    }

    #[test]
    fn a_created_store_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        drop(Disk::create(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }

    #[test]
    fn a_store_in_use_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        assert!(!Disk::in_use(&path));
        let held = Disk::open(&path).unwrap();
        assert!(Disk::in_use(&path));
        let err = Disk::open(&path).expect_err("in use");
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
        assert!(!err.is_damage());
        drop(held);
        assert!(!Disk::in_use(&path));
        assert!(!Disk::in_use(dir.path().join("missing.redb")));
    }

    #[test]
    fn bootstrap_only_fills_an_empty_store() {
        let mut s = LogStore::open(Disk::memory()).unwrap();
        assert!(s.bootstrap(&[], vec![]).is_err(), "no voters");
        s.bootstrap(&[1, 2], b"empty table".to_vec()).unwrap();
        s.flush().unwrap();
        assert_eq!(s.snapshot_ref().get_metadata().index, 1);
        assert_eq!(
            s.conf(),
            (
                &ConfState {
                    voters: vec![1, 2],
                    ..Default::default()
                },
                1
            )
        );
        assert_eq!(s.snapshot_ref().get_data(), b"empty table");
        let err = s.bootstrap(&[1, 2], vec![]).expect_err("twice");
        assert!(err.to_string().contains("holds a log"), "{err}");
    }

    #[test]
    fn garbage_file_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        let err = Disk::open(&path).expect_err("garbage must not open");
        assert!(matches!(err, StoreError::Db(_)), "{err:?}");
        assert!(err.is_damage());
        assert!(err.to_string().contains("log store database error"), "{err}");
    }

    /// Runs `damage` on the raw tables of a written store and returns the
    /// error its load gives.
    fn damaged(
        damage: impl FnOnce(
            &mut redb::Table<'_, u64, &'static [u8]>,
            &mut redb::Table<'_, &'static str, &'static [u8]>,
        ),
    ) -> StoreError {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        disk::raw::with_tables(&path, damage);
        let err = open_path(&path).expect_err("damage must be refused");
        assert!(err.is_damage(), "{err:?}");
        err
    }

    fn flip_last_byte(raw: &[u8]) -> Vec<u8> {
        let mut v = raw.to_vec();
        *v.last_mut().unwrap() ^= 0x01;
        v
    }

    #[test]
    fn a_changed_entry_fails_its_checksum() {
        let err = damaged(|entries, _| {
            let v = flip_last_byte(entries.get(3).unwrap().unwrap().value());
            entries.insert(3, v.as_slice()).unwrap();
        });
        assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("log store record entries/3 is damaged: stored checksum"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_moved_to_another_index_fails_its_checksum() {
        // A valid record, under the wrong key: the content alone checks out.
        let err = damaged(|entries, _| {
            let v = entries.get(2).unwrap().unwrap().value().to_vec();
            entries.insert(3, v.as_slice()).unwrap();
        });
        assert!(
            err.to_string()
                .starts_with("log store record entries/3 is damaged"),
            "{err}"
        );
    }

    #[test]
    fn a_meta_record_moved_to_another_key_fails_its_checksum() {
        let err = damaged(|_, meta| {
            let v = meta.get("conf_index").unwrap().unwrap().value().to_vec();
            // conf index (8 bytes) where the hard state was.
            meta.insert("hard_state", v.as_slice()).unwrap();
        });
        assert!(
            err.to_string()
                .starts_with("log store record meta/hard_state is damaged"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_hard_state_fails_its_checksum() {
        let err = damaged(|_, meta| {
            let v = flip_last_byte(meta.get("hard_state").unwrap().unwrap().value());
            meta.insert("hard_state", v.as_slice()).unwrap();
        });
        assert!(
            err.to_string()
                .starts_with("log store record meta/hard_state is damaged"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_snapshot_fails_its_checksum() {
        let err = damaged(|_, meta| {
            let v = flip_last_byte(meta.get("snapshot").unwrap().unwrap().value());
            meta.insert("snapshot", v.as_slice()).unwrap();
        });
        assert!(
            err.to_string()
                .starts_with("log store record meta/snapshot is damaged"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_conf_state_or_index_fails_its_checksum() {
        for key in ["conf_state", "conf_index"] {
            let err = damaged(|_, meta| {
                let v = flip_last_byte(meta.get(key).unwrap().unwrap().value());
                meta.insert(key, v.as_slice()).unwrap();
            });
            assert!(
                err.to_string()
                    .starts_with(&format!("log store record meta/{key} is damaged")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_record_too_short_for_its_checksum_is_refused() {
        let err = damaged(|entries, _| {
            entries.insert(2, [1u8, 2].as_slice()).unwrap();
        });
        assert!(err.to_string().contains("too short to hold a checksum"), "{err}");
    }

    #[test]
    fn an_unknown_record_is_refused() {
        let err = damaged(|_, meta| {
            let v = disk::raw::sealed_meta("hard_statf", b"x");
            meta.insert("hard_statf", v.as_slice()).unwrap();
        });
        assert!(
            err.to_string().contains("unexpected record meta/\"hard_statf\""),
            "{err}"
        );
    }

    #[test]
    fn sound_records_that_break_the_log_are_refused() {
        // Records with valid checksums whose content is not a usable log.
        let err = damaged(|entries, _| {
            entries.remove(3).unwrap();
        });
        assert!(err.to_string().contains("gap"), "{err}");

        let err = damaged(|_, meta| {
            let v = disk::raw::sealed_meta("snapshot", b"\xff\xff\xff not protobuf");
            meta.insert("snapshot", v.as_slice()).unwrap();
        });
        assert!(err.to_string().contains("cannot decode snapshot"), "{err}");
    }

    #[test]
    fn other_formats_are_refused() {
        for (stored, found) in [
            // Format 1 wrote the name bare, and no checksums.
            (b"vipool-cluster-log-1".to_vec(), "vipool-cluster-log-1"),
            (
                disk::raw::sealed_meta("format", b"vipool-cluster-log-3"),
                "vipool-cluster-log-3",
            ),
        ] {
            let err = damaged(|_, meta| {
                meta.insert("format", stored.as_slice()).unwrap();
            });
            assert!(
                matches!(&err, StoreError::Format { found: f, .. } if f == found),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("log store has format {found:?}, this build reads \"vipool-cluster-log-2\"")
            );
        }
        let err = damaged(|_, meta| {
            meta.insert("format", b"something-else".as_slice()).unwrap();
        });
        assert!(
            err.to_string()
                .starts_with("log store record meta/format is damaged"),
            "{err}"
        );
    }

    #[test]
    fn commit_past_the_log_is_refused() {
        let disk = Disk::memory();
        let mut s = LogStore::open(disk.clone()).unwrap();
        s.append(&[entry(1, 1)]).unwrap();
        s.set_commit(5);
        s.flush().unwrap();
        let err = LogStore::open(disk).expect_err("commit past log");
        assert!(err.to_string().contains("past the last entry"), "{err}");
    }

    #[test]
    fn clear_forgets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        let mut s = open_path(&path).unwrap();
        assert!(!s.is_empty());
        s.clear();
        s.mark_rebuilding("yielded".into());
        s.flush().unwrap();
        drop(s);
        let s = open_path(&path).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.rebuilding(), Some("yielded"));
    }

    #[test]
    fn kept_discarded_log_is_a_private_file_beside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path());
        let disk = Disk::open(&path).unwrap();
        let log = DiscardedLog {
            format: DISCARDED_FORMAT.into(),
            member: 2,
            winner: 1,
            term: 7,
            winner_term: 8,
            yielded_at_unix_ms: 0,
            commit: 3,
            voters: vec![2],
            learners: vec![1],
            conf_index: 1,
            committed_entries: 0,
            snapshot: None,
            entries: Vec::new(),
        };
        let first = std::path::PathBuf::from(disk.keep_discarded(&log).unwrap());
        let second = std::path::PathBuf::from(disk.keep_discarded(&log).unwrap());
        assert_ne!(first, second, "a second yield never overwrites the first");
        for kept in [&first, &second] {
            assert_eq!(kept.parent(), Some(dir.path()));
            let name = kept.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("yielded-") && name.contains("-term7"), "{name}");
            let mode = std::fs::metadata(kept).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "mode {mode:o}");
            let back: DiscardedLog = serde_json::from_slice(&std::fs::read(kept).unwrap()).unwrap();
            assert!(back.yielded_at_unix_ms > 0, "the disk stamps the time");
            assert_eq!(
                DiscardedLog {
                    yielded_at_unix_ms: 0,
                    ..back
                },
                log
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

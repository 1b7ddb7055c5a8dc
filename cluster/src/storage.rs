//! The member's log on disk: entries, hard state, conf state and the last
//! snapshot, behind [`raft::Storage`].
//!
//! [`LogStore`] keeps an in-memory mirror that raft reads from, and writes
//! every change to a [`Disk`] in ordered batches; `LogStore::flush` makes a
//! batch durable (one fsync) before the member acknowledges anything that
//! depends on it. Two disks exist: [`Disk::open`] (redb on a file, the real
//! one) and [`Disk::memory`] (a shared in-memory image that outlives a
//! simulated crash, for the deterministic harness).

use std::path::Path;
use std::sync::{Arc, Mutex};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// Bumped when the on-disk layout changes; a store of another layout is refused.
const FORMAT: &[u8] = b"vipool-cluster-log-1";

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const K_FORMAT: &str = "format";
const K_HARD_STATE: &str = "hard_state";
const K_CONF_STATE: &str = "conf_state";
const K_CONF_INDEX: &str = "conf_index";
const K_SNAPSHOT: &str = "snapshot";

/// Why the log store cannot be used. Every one is fatal for the member.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed (I/O, or its own checksums found damage).
    #[error("log store database error: {0}")]
    Db(#[from] redb::Error),
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

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// One change to the durable log; a batch applies them in order.
#[derive(Debug, Clone)]
enum Op {
    /// Delete every entry with index >= this.
    Truncate(u64),
    Put(Entry),
    /// Delete every entry with index <= this.
    CompactTo(u64),
    HardState(HardState),
    Conf(ConfState, u64),
    Snapshot(Snapshot),
    /// Forget everything (a yielding member rebuilds from its peer).
    Clear,
}

/// What a disk holds, loaded at start.
#[derive(Debug, Clone, Default)]
struct Image {
    /// Test hook: every write fails (a dying disk).
    broken: bool,
    entries: std::collections::BTreeMap<u64, Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    conf_index: u64,
    snapshot: Snapshot,
}

impl Image {
    fn apply(&mut self, op: &Op) {
        match op {
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
            Op::Clear => {
                *self = Image {
                    broken: self.broken,
                    ..Image::default()
                };
            }
        }
    }
}

/// Where a [`LogStore`] keeps its durable copy.
#[derive(Clone)]
pub struct Disk(DiskKind);

#[derive(Clone)]
enum DiskKind {
    Redb(Arc<redb::Database>),
    Memory(Arc<Mutex<Image>>),
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            DiskKind::Redb(_) => f.write_str("Disk::Redb"),
            DiskKind::Memory(_) => f.write_str("Disk::Memory"),
        }
    }
}

impl Disk {
    /// Opens (or creates) the redb file at `path`.
    ///
    /// # Errors
    /// The file cannot be opened, is not a redb database, is damaged, or holds
    /// a log of another format.
    pub fn open(path: impl AsRef<Path>) -> Result<Disk, StoreError> {
        let database = redb::Database::create(path.as_ref()).map_err(db)?;
        let txn = database.begin_write().map_err(db)?;
        {
            let mut meta = txn.open_table(META).map_err(db)?;
            let found = meta.get(K_FORMAT).map_err(db)?.map(|v| v.value().to_vec());
            match found {
                None => {
                    meta.insert(K_FORMAT, FORMAT).map_err(db)?;
                }
                Some(f) if f == FORMAT => {}
                Some(f) => {
                    return Err(StoreError::Format {
                        found: String::from_utf8_lossy(&f).into_owned(),
                        expected: String::from_utf8_lossy(FORMAT).into_owned(),
                    })
                }
            }
            txn.open_table(ENTRIES).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(Disk(DiskKind::Redb(Arc::new(database))))
    }

    /// An empty in-memory disk. Clones share it, so a simulated member can
    /// crash (drop its [`LogStore`]) and restart from what it had flushed.
    pub fn memory() -> Disk {
        Disk(DiskKind::Memory(Arc::new(Mutex::new(Image::default()))))
    }

    /// Makes every later write to this in-memory disk fail, as a dying disk
    /// would (for tests of the fatal path).
    #[cfg(test)]
    pub(crate) fn break_writes(&self) {
        if let DiskKind::Memory(m) = &self.0 {
            m.lock().expect("disk image lock").broken = true;
        }
    }

    fn load(&self) -> Result<Image, StoreError> {
        match &self.0 {
            DiskKind::Memory(m) => Ok(m.lock().expect("disk image lock").clone()),
            DiskKind::Redb(database) => {
                let txn = database.begin_read().map_err(db)?;
                let meta = txn.open_table(META).map_err(db)?;
                let mut image = Image::default();
                if let Some(v) = meta.get(K_HARD_STATE).map_err(db)? {
                    image.hard_state = decode(v.value(), "hard state")?;
                }
                if let Some(v) = meta.get(K_CONF_STATE).map_err(db)? {
                    image.conf_state = decode(v.value(), "conf state")?;
                }
                if let Some(v) = meta.get(K_CONF_INDEX).map_err(db)? {
                    let b: [u8; 8] = v
                        .value()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("conf index is not 8 bytes".into()))?;
                    image.conf_index = u64::from_be_bytes(b);
                }
                if let Some(v) = meta.get(K_SNAPSHOT).map_err(db)? {
                    image.snapshot = decode(v.value(), "snapshot")?;
                }
                let entries = txn.open_table(ENTRIES).map_err(db)?;
                for row in entries.iter().map_err(db)? {
                    let (k, v) = row.map_err(db)?;
                    let e: Entry = decode(v.value(), "entry")?;
                    if e.index != k.value() {
                        return Err(StoreError::Corrupt(format!(
                            "entry stored under index {} says index {}",
                            k.value(),
                            e.index
                        )));
                    }
                    image.entries.insert(e.index, e);
                }
                Ok(image)
            }
        }
    }

    fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        match &self.0 {
            DiskKind::Memory(m) => {
                let mut image = m.lock().expect("disk image lock");
                if image.broken {
                    return Err(StoreError::Db(redb::Error::Io(std::io::Error::other(
                        "disk is broken",
                    ))));
                }
                for op in ops {
                    image.apply(op);
                }
                Ok(())
            }
            DiskKind::Redb(database) => {
                // Durability::Immediate is redb's default: commit() returns
                // after the data and the new root are fsynced.
                let txn = database.begin_write().map_err(db)?;
                {
                    let mut entries = txn.open_table(ENTRIES).map_err(db)?;
                    let mut meta = txn.open_table(META).map_err(db)?;
                    for op in ops {
                        match op {
                            Op::Truncate(from) => {
                                entries.retain_in(*from.., |_, _| false).map_err(db)?;
                            }
                            Op::Put(e) => {
                                entries.insert(e.index, encode(e).as_slice()).map_err(db)?;
                            }
                            Op::CompactTo(to) => {
                                entries.retain_in(..=*to, |_, _| false).map_err(db)?;
                            }
                            Op::HardState(hs) => {
                                meta.insert(K_HARD_STATE, encode(hs).as_slice()).map_err(db)?;
                            }
                            Op::Conf(cs, i) => {
                                meta.insert(K_CONF_STATE, encode(cs).as_slice()).map_err(db)?;
                                meta.insert(K_CONF_INDEX, i.to_be_bytes().as_slice())
                                    .map_err(db)?;
                            }
                            Op::Snapshot(s) => {
                                meta.insert(K_SNAPSHOT, encode(s).as_slice()).map_err(db)?;
                            }
                            Op::Clear => {
                                entries.retain(|_, _| false).map_err(db)?;
                                for k in [K_HARD_STATE, K_CONF_STATE, K_CONF_INDEX, K_SNAPSHOT] {
                                    meta.remove(k).map_err(db)?;
                                }
                            }
                        }
                    }
                }
                txn.commit().map_err(db)?;
                Ok(())
            }
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
    pending: Vec<Op>,
    /// Raft asked for a snapshot the stored one cannot serve (too old, or
    /// from before the recipient joined); the member makes a fresh one.
    snapshot_wanted: std::cell::Cell<bool>,
}

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
            pending: Vec::new(),
            snapshot_wanted: std::cell::Cell::new(false),
        })
    }

    /// Whether raft asked for a fresher snapshot since the last call.
    pub(crate) fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    pub(crate) fn disk(&self) -> Disk {
        self.disk.clone()
    }

    /// Whether the store has never been written (a brand-new member).
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
        Ok(())
    }

    /// Records a snapshot of the applied state at `index` and drops the
    /// entries it covers.
    pub(crate) fn compact(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        if index <= self.snapshot.get_metadata().index {
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
        self.pending.clear();
        self.pending.push(Op::Clear);
    }

    /// Writes every change since the last flush to disk, durably.
    ///
    /// # Errors
    /// The disk write failed; the member must stop.
    pub(crate) fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        self.disk.write(&ops)
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
        if self.snapshot.get_metadata().index < request_index || !knows_to {
            // raft-rs refuses a snapshot whose configuration lacks the
            // recipient; ask the member for a fresh one and let raft retry.
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
    use super::*;
    use raft::Storage as _;

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

    #[test]
    fn redb_restart_resumes_entries_hard_state_conf_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let disk = Disk::open(&path).unwrap();
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
        let s = LogStore::open(Disk::open(&path).unwrap()).unwrap();
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
    fn installed_snapshot_replaces_the_log() {
        let disk = Disk::memory();
        let mut s = LogStore::open(disk.clone()).unwrap();
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
    }

    #[test]
    fn garbage_file_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        let err = Disk::open(&path).expect_err("garbage must not open");
        assert!(matches!(err, StoreError::Db(_)), "{err:?}");
        assert!(err.to_string().contains("log store database error"), "{err}");
    }

    #[test]
    fn damaged_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let database = redb::Database::create(&path).unwrap();
            let txn = database.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(K_FORMAT, FORMAT).unwrap();
                let mut entries = txn.open_table(ENTRIES).unwrap();
                entries.insert(1, encode(&entry(1, 1)).as_slice()).unwrap();
                entries.insert(3, encode(&entry(3, 1)).as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = LogStore::open(Disk::open(&path).unwrap()).expect_err("gap");
        assert!(err.to_string().contains("gap"), "{err}");

        {
            let database = redb::Database::create(&path).unwrap();
            let txn = database.begin_write().unwrap();
            {
                let mut entries = txn.open_table(ENTRIES).unwrap();
                entries
                    .insert(2, b"\xff\xff\xff not protobuf".as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let err = LogStore::open(Disk::open(&path).unwrap()).expect_err("undecodable");
        assert!(err.to_string().contains("cannot decode entry"), "{err}");
    }

    #[test]
    fn other_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let database = redb::Database::create(&path).unwrap();
            let txn = database.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(K_FORMAT, b"something-else".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Disk::open(&path).expect_err("format");
        assert!(matches!(err, StoreError::Format { .. }), "{err:?}");
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
        let path = dir.path().join("log.redb");
        let disk = Disk::open(&path).unwrap();
        let mut s = LogStore::open(disk.clone()).unwrap();
        s.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        s.set_commit(2);
        s.flush().unwrap();
        s.clear();
        s.flush().unwrap();
        drop(s);
        assert!(reopen(&disk).is_empty());
    }
}

//! Where a [`LogStore`](super::LogStore) keeps its durable copy: a redb file
//! (the real one) or a shared in-memory image (the simulation's).
//!
//! # Records
//!
//! The file holds two redb tables, `entries` (index → entry) and `meta`
//! (name → value). Every value is a *record*: a CRC-32 over the table name,
//! the key and the payload, then the payload. The checksum binds the payload
//! to its place, so a value that changed, or a valid value that ended up
//! under another key or in another table, fails its check. Records are
//! checked when the store is loaded, which is the only time this module
//! reads from disk.
//!
//! # What redb does with a damaged file, and what we do about it
//!
//! Found by flipping every byte of small stores (see `storage::sweep`):
//!
//! - A plain `Database::open` trusts a file that was closed cleanly: it loads
//!   a changed value silently, and damage to a page of its B-trees makes it
//!   panic (`unreachable`, slice ranges, assertions) in the open or in the
//!   first read. We open with `set_check_integrity_on_open`, which verifies
//!   every page against redb's own checksums before anything is read. The
//!   open and every read and write also run under `catch_unwind`
//!   ([`guarded`]): should a damaged file still reach a panic inside redb, it
//!   becomes [`StoreError::Panicked`] instead of a crash loop.
//! - redb keeps two commit slots. When the newest one does not verify (a
//!   crash in the middle of a commit, or damage), its repair falls back to
//!   the previous commit *silently*; the same happens when damage flips the
//!   header byte that names the newest slot. After a single commit per batch
//!   the previous commit is the previous batch: the last durable batch (say
//!   a vote, or entries the leader counted as stored here) would be gone
//!   without a word. So [`Disk::write`] commits every batch twice, the
//!   second time with no change: once a batch is durable (and only then is
//!   anything that depends on it sent), both slots point at the same tables,
//!   and a fallback can only land on the same log. The fallback of the
//!   repair is logged, as it means a crash in the middle of a write or
//!   damage; the slot swap redb makes while reading the header (the newest
//!   slot's own checksum fails) it does not report, and it is as harmless.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use raft::eraftpb::Entry;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::discarded::DiscardedLog;
use super::{decode, encode, Image, Op, StoreError};

/// Bumped when the on-disk layout changes; a store of another layout is refused.
/// 2: every value is a checksummed record; the `rebuild` record.
pub(super) const FORMAT: &[u8] = b"vipool-cluster-log-2";
/// What the name of every format starts with (format 1 stored it bare).
const FORMAT_PREFIX: &[u8] = b"vipool-cluster-log-";

const ENTRIES_NAME: &str = "entries";
const META_NAME: &str = "meta";
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new(ENTRIES_NAME);
const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_NAME);

const K_FORMAT: &str = "format";
const K_HARD_STATE: &str = "hard_state";
const K_CONF_STATE: &str = "conf_state";
const K_CONF_INDEX: &str = "conf_index";
const K_SNAPSHOT: &str = "snapshot";
/// Why an empty store waits for a snapshot from the leader (rejoin, yield).
const K_REBUILD: &str = "rebuild";

/// Mode of every file this module creates: the log holds the license table.
const FILE_MODE: u32 = 0o600;

/// The checksum of a record: it covers where the record is as well as what
/// it holds.
fn record_crc(table: &str, key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(table.as_bytes());
    h.update(&[0]);
    h.update(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// A record as stored: checksum (little-endian), then the payload.
pub(super) fn seal(table: &str, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&record_crc(table, key, payload).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// The payload of a stored record, once its checksum matches its place.
pub(super) fn unseal<'a>(
    table: &'static str,
    key: &[u8],
    raw: &'a [u8],
    name: impl FnOnce() -> String,
) -> Result<&'a [u8], StoreError> {
    let Some((crc, payload)) = raw.split_first_chunk::<4>() else {
        return Err(StoreError::Checksum {
            record: format!("{table}/{}", name()),
            detail: format!("{} bytes, too short to hold a checksum", raw.len()),
        });
    };
    let stored = u32::from_le_bytes(*crc);
    let computed = record_crc(table, key, payload);
    if stored != computed {
        return Err(StoreError::Checksum {
            record: format!("{table}/{}", name()),
            detail: format!("stored checksum {stored:08x}, content and place give {computed:08x}"),
        });
    }
    Ok(payload)
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `f`, turning a panic into [`StoreError::Panicked`].
///
/// redb panics on some damaged files (see the module docs); a panic would
/// take the daemon down in a crash loop with nothing but a line of redb's
/// source in the log, where the operator needs "this file is damaged, here
/// is the way out". `AssertUnwindSafe` is sound here because nothing `f`
/// touched is used after a panic: an open drops the half-built database, and
/// a failed write is fatal for the member, which stops without touching the
/// store again.
fn guarded<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(StoreError::Panicked(text))
    })
}

/// fsyncs a directory, so that a file created or renamed in it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Creates `path` (which must not exist) with mode 0600, set explicitly:
/// the umask of whoever starts us is not ours to trust.
fn create_private(path: &Path) -> Result<fs::File, StoreError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::Exists {
                path: path.to_path_buf(),
            },
            _ => StoreError::Io {
                what: "creating",
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(io("setting permissions of", path))?;
    Ok(file)
}

/// How redb is opened: every page verified against its checksums first
/// (see the module docs), and a fallback to the previous commit noticed.
fn builder(fell_back: &Arc<AtomicBool>) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_check_integrity_on_open(true);
    // The log store keeps the whole log in memory and reads the file only
    // when it loads; redb's cache serves the pages a write touches. Its 1 GiB
    // default only makes each open slower.
    b.set_cache_size(32 * 1024 * 1024);
    let flag = Arc::clone(fell_back);
    // redb reports its repair in steps; the step at 0.3 is taken only when
    // the newest commit does not verify and it falls back to the previous
    // one (redb 4 `Database::do_repair`). Only used for a warning: should
    // redb change its steps, the warning is lost, not the log.
    b.set_repair_callback(move |session| {
        if (session.progress() - 0.3).abs() < 1e-6 {
            flag.store(true, Ordering::SeqCst);
        }
    });
    b
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_path_buf(),
        },
        e => db(e),
    }
}

/// The shared image of an in-memory disk.
#[derive(Debug, Default)]
struct Memory {
    image: Image,
    /// Test hook: every write fails (a dying disk).
    broken: bool,
    /// What the next write does instead of succeeding, once.
    fault: Option<WriteFault>,
    /// What yields kept, by name.
    kept: Vec<(String, DiscardedLog)>,
    /// Test hook: how long each write blocks its writer (a slow disk).
    write_time: std::time::Duration,
}

/// What the next write to an in-memory disk does instead of succeeding
/// ([`Disk::inject_write_fault`]), for simulations of a host whose disk
/// fails or whose power goes while it writes. Either way the writer gets
/// an error, and a member stops on a storage error: what differs is what
/// the disk holds when it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// The write fails and nothing of the batch is on the disk (an I/O
    /// error).
    Fail,
    /// The power goes inside the write and the batch is lost: redb falls
    /// back to the commit before (see the module docs; a batch never
    /// lands in part).
    TornLost,
    /// The power goes inside the write after the batch became durable:
    /// it is on the disk, but the writer never learned it.
    TornLanded,
}

/// Where a [`LogStore`](super::LogStore) keeps its durable copy.
#[derive(Clone)]
pub struct Disk(DiskKind);

#[derive(Clone)]
enum DiskKind {
    Redb {
        database: Arc<redb::Database>,
        path: PathBuf,
    },
    Memory(Arc<Mutex<Memory>>),
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            DiskKind::Redb { path, .. } => write!(f, "Disk::Redb({})", path.display()),
            DiskKind::Memory(_) => f.write_str("Disk::Memory"),
        }
    }
}

impl Disk {
    /// Opens the existing store at `path`, after redb has verified every
    /// page of it. It never creates one: see [`Disk::create`].
    ///
    /// # Errors
    /// [`StoreError::Missing`] or [`StoreError::ZeroLength`] for a file that
    /// is not there or holds nothing; [`StoreError::InUse`] when another
    /// process has it open; otherwise the file is damaged, not a log store,
    /// or of another format (see [`StoreError::is_damage`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Disk, StoreError> {
        let path = path.as_ref().to_path_buf();
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path });
            }
            Err(e) => return Err(io("reading", &path)(e)),
            Ok(m) if !m.is_file() => {
                return Err(StoreError::Io {
                    what: "opening",
                    source: std::io::Error::other("not a regular file"),
                    path,
                })
            }
            Ok(m) if m.len() == 0 => return Err(StoreError::ZeroLength { path }),
            Ok(_) => {}
        }
        let fell_back = Arc::new(AtomicBool::new(false));
        let database = guarded(|| {
            let database = builder(&fell_back)
                .open(&path)
                .map_err(|e| open_error(&path, e))?;
            check_format(&database)?;
            Ok(database)
        })?;
        if fell_back.load(Ordering::SeqCst) {
            tracing::warn!(
                store = %path.display(),
                "the newest commit of the log store did not verify and the database fell back to \
                 the one before (a crash in the middle of a write, or damage); every batch is \
                 committed twice, so that commit holds every batch whose write completed"
            );
        }
        Ok(Disk(DiskKind::Redb {
            database: Arc::new(database),
            path,
        }))
    }

    /// Creates a new, empty store at `path` (mode 0600) and opens it.
    ///
    /// A crash in the middle leaves a partial file at `path`: create under a
    /// temporary name and rename it into place once the store holds what it
    /// should.
    ///
    /// # Errors
    /// [`StoreError::Exists`] if anything is at `path`; the directory cannot
    /// be written; the database cannot be initialized.
    pub fn create(path: impl AsRef<Path>) -> Result<Disk, StoreError> {
        let path = path.as_ref().to_path_buf();
        drop(create_private(&path)?);
        let fell_back = Arc::new(AtomicBool::new(false));
        // redb initializes an empty file in place, keeping its mode.
        let database = guarded(|| {
            builder(&fell_back)
                .create(&path)
                .map_err(|e| open_error(&path, e))
        })?;
        let disk = Disk(DiskKind::Redb {
            database: Arc::new(database),
            path: path.clone(),
        });
        disk.write(&[Op::Format])?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        Ok(disk)
    }

    /// Whether another process (a running member) has the store at `path`
    /// open. Asked without opening it for writing, so that a member about to
    /// set a store aside (`--rejoin`) does not pull it from under a running
    /// one. A file that is missing or cannot be read is not in use.
    pub fn in_use(path: impl AsRef<Path>) -> bool {
        let path = path.as_ref();
        let probe = guarded(|| {
            redb::Builder::new()
                .open_read_only(path)
                .map(drop)
                .map_err(|e| open_error(path, e))
        });
        matches!(probe, Err(StoreError::InUse { .. }))
    }

    /// An empty in-memory disk. Clones share it, so a simulated member can
    /// crash (drop its [`LogStore`](super::LogStore)) and restart from what
    /// it had flushed.
    pub fn memory() -> Disk {
        Disk(DiskKind::Memory(Arc::new(Mutex::new(Memory::default()))))
    }

    /// The file behind a redb disk.
    pub fn path(&self) -> Option<&Path> {
        match &self.0 {
            DiskKind::Redb { path, .. } => Some(path),
            DiskKind::Memory(_) => None,
        }
    }

    /// Makes every later write to this in-memory disk fail, as a dying disk
    /// would (for tests of the fatal path).
    #[cfg(test)]
    pub(crate) fn break_writes(&self) {
        if let DiskKind::Memory(m) = &self.0 {
            m.lock().expect("disk image lock").broken = true;
        }
    }

    /// Makes every later write to this in-memory disk block its writer for
    /// `write_time`, as an fsync on a slow disk does (a no-op on a redb
    /// disk).
    #[cfg(test)]
    pub(crate) fn slow_writes(&self, write_time: std::time::Duration) {
        if let DiskKind::Memory(m) = &self.0 {
            m.lock().expect("disk image lock").write_time = write_time;
        }
    }

    /// Makes the next write to this in-memory disk fail as `fault` says
    /// (a no-op on a redb disk). A simulation's hook: the member writing
    /// gets a storage error and stops, as on a real disk.
    pub fn inject_write_fault(&self, fault: WriteFault) {
        if let DiskKind::Memory(m) = &self.0 {
            m.lock().expect("disk image lock").fault = Some(fault);
        }
    }

    /// The write fault armed on this in-memory disk that no write has
    /// struck yet (always `None` on a redb disk).
    pub fn armed_write_fault(&self) -> Option<WriteFault> {
        match &self.0 {
            DiskKind::Memory(m) => m.lock().expect("disk image lock").fault,
            DiskKind::Redb { .. } => None,
        }
    }

    /// What yields kept on this in-memory disk, by name (empty for a redb
    /// disk, whose records are files: see [`Disk::keep_discarded`]).
    pub fn kept_discarded(&self) -> Vec<(String, DiscardedLog)> {
        match &self.0 {
            DiskKind::Memory(m) => m.lock().expect("disk image lock").kept.clone(),
            DiskKind::Redb { .. } => Vec::new(),
        }
    }

    pub(super) fn load(&self) -> Result<Image, StoreError> {
        match &self.0 {
            DiskKind::Memory(m) => Ok(m.lock().expect("disk image lock").image.clone()),
            DiskKind::Redb { database, .. } => guarded(|| load_redb(database)),
        }
    }

    pub(super) fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        match &self.0 {
            DiskKind::Memory(m) => {
                let write_time = m.lock().expect("disk image lock").write_time;
                if !write_time.is_zero() {
                    std::thread::sleep(write_time);
                }
                let mut m = m.lock().expect("disk image lock");
                if m.broken {
                    return Err(StoreError::Db(redb::Error::Io(std::io::Error::other(
                        "disk is broken",
                    ))));
                }
                let fault = m.fault.take();
                if matches!(fault, None | Some(WriteFault::TornLanded)) {
                    for op in ops {
                        m.image.apply(op);
                    }
                }
                match fault {
                    None => Ok(()),
                    Some(f) => Err(StoreError::Db(redb::Error::Io(std::io::Error::other(format!(
                        "injected write fault: {f:?}"
                    ))))),
                }
            }
            DiskKind::Redb { database, .. } => guarded(|| {
                // Durability::Immediate is redb's default: commit() returns
                // after the data and the new root are fsynced.
                let txn = database.begin_write().map_err(db)?;
                {
                    let mut entries = txn.open_table(ENTRIES).map_err(db)?;
                    let mut meta = txn.open_table(META).map_err(db)?;
                    for op in ops {
                        write_op(&mut entries, &mut meta, op)?;
                    }
                }
                txn.commit().map_err(db)?;
                // The second commit of the batch, with no change: both commit
                // slots now hold this batch, so that a fallback of redb's
                // repair cannot silently lose it (see the module docs).
                database.begin_write().map_err(db)?.commit().map_err(db)?;
                Ok(())
            }),
        }
    }

    /// Keeps, durably, what a yielding member is about to discard: for a
    /// redb disk a file `yielded-<unix-ms>-term<T>.json` (mode 0600) next to
    /// the store, written, fsynced and renamed into place, its directory
    /// fsynced; for an in-memory disk a record beside the image. Returns
    /// where it went (the file's path).
    ///
    /// # Errors
    /// The file cannot be written; the caller must not discard anything.
    pub(crate) fn keep_discarded(&self, log: &DiscardedLog) -> Result<String, StoreError> {
        match &self.0 {
            DiskKind::Memory(m) => {
                let mut m = m.lock().expect("disk image lock");
                if m.broken {
                    return Err(StoreError::Db(redb::Error::Io(std::io::Error::other(
                        "disk is broken",
                    ))));
                }
                let name = format!("yielded-{}-term{}.json", m.kept.len() + 1, log.term);
                m.kept.push((name.clone(), log.clone()));
                Ok(name)
            }
            DiskKind::Redb { path, .. } => {
                let dir = path.parent().unwrap_or(Path::new("."));
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let mut log = log.clone();
                log.yielded_at_unix_ms = now_ms;
                let stem = format!("yielded-{now_ms}-term{}", log.term);
                let mut target = dir.join(format!("{stem}.json"));
                let mut n = 1;
                while target.exists() {
                    n += 1;
                    target = dir.join(format!("{stem}-{n}.json"));
                }
                let tmp = dir.join(format!(".{stem}.json.tmp"));
                let _ = fs::remove_file(&tmp);
                let mut file = create_private(&tmp)?;
                let text = serde_json::to_vec_pretty(&log).map_err(|e| StoreError::Io {
                    what: "encoding",
                    path: tmp.clone(),
                    source: e.into(),
                })?;
                file.write_all(&text)
                    .and_then(|()| file.write_all(b"\n"))
                    .and_then(|()| file.sync_all())
                    .map_err(io("writing", &tmp))?;
                drop(file);
                fs::rename(&tmp, &target).map_err(io("renaming into place", &target))?;
                sync_dir(dir)?;
                Ok(target.display().to_string())
            }
        }
    }
}

/// The format record is checked before anything else, so that a store of
/// another layout is reported as such rather than as damage.
fn check_format(database: &redb::Database) -> Result<(), StoreError> {
    let txn = database.begin_read().map_err(db)?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(StoreError::Corrupt(
                "it has no meta table: not a vipool log store".into(),
            ))
        }
        Err(e) => return Err(db(e)),
    };
    let Some(raw) = meta.get(K_FORMAT).map_err(db)? else {
        return Err(StoreError::Corrupt(
            "it has no format record: not a vipool log store".into(),
        ));
    };
    let raw = raw.value();
    let found = match unseal(META_NAME, K_FORMAT.as_bytes(), raw, || K_FORMAT.into()) {
        Ok(payload) => payload,
        // Format 1 wrote its name bare. A sealed record starts with its
        // checksum, so a damaged one is reported as damage, not as a format.
        Err(_) if raw.starts_with(FORMAT_PREFIX) => raw,
        Err(e) => return Err(e),
    };
    if found != FORMAT {
        return Err(StoreError::Format {
            found: String::from_utf8_lossy(found).into_owned(),
            expected: String::from_utf8_lossy(FORMAT).into_owned(),
        });
    }
    Ok(())
}

fn load_redb(database: &redb::Database) -> Result<Image, StoreError> {
    let txn = database.begin_read().map_err(db)?;
    let missing = |name: &str| StoreError::Corrupt(format!("its {name} table is missing"));
    let meta = txn.open_table(META).map_err(|e| match e {
        redb::TableError::TableDoesNotExist(_) => missing(META_NAME),
        e => db(e),
    })?;
    let mut image = Image::default();
    for row in meta.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        let (key, raw) = (k.value(), v.value());
        if key == K_FORMAT {
            // Checked at open.
            continue;
        }
        let payload = unseal(META_NAME, key.as_bytes(), raw, || key.to_string())?;
        match key {
            K_HARD_STATE => image.hard_state = decode(payload, "hard state")?,
            K_CONF_STATE => image.conf_state = decode(payload, "conf state")?,
            K_CONF_INDEX => {
                let b: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("conf index is not 8 bytes".into()))?;
                image.conf_index = u64::from_be_bytes(b);
            }
            K_SNAPSHOT => image.snapshot = decode(payload, "snapshot")?,
            K_REBUILD => {
                image.rebuild = Some(
                    String::from_utf8(payload.to_vec())
                        .map_err(|_| StoreError::Corrupt("the rebuild record is not text".into()))?,
                );
            }
            other => return Err(StoreError::Corrupt(format!("unexpected record meta/{other:?}"))),
        }
    }
    let entries = txn.open_table(ENTRIES).map_err(|e| match e {
        redb::TableError::TableDoesNotExist(_) => missing(ENTRIES_NAME),
        e => db(e),
    })?;
    for row in entries.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        let index = k.value();
        let payload = unseal(ENTRIES_NAME, &index.to_be_bytes(), v.value(), || {
            index.to_string()
        })?;
        let e: Entry = decode(payload, "entry")?;
        if e.index != index {
            return Err(StoreError::Corrupt(format!(
                "entry stored under index {index} says index {}",
                e.index
            )));
        }
        image.entries.insert(index, e);
    }
    Ok(image)
}

fn put_meta(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &'static str,
    payload: &[u8],
) -> Result<(), StoreError> {
    meta.insert(key, seal(META_NAME, key.as_bytes(), payload).as_slice())
        .map_err(db)?;
    Ok(())
}

fn write_op(
    entries: &mut redb::Table<'_, u64, &'static [u8]>,
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    op: &Op,
) -> Result<(), StoreError> {
    match op {
        Op::Format => put_meta(meta, K_FORMAT, FORMAT)?,
        Op::Truncate(from) => {
            entries.retain_in(*from.., |_, _| false).map_err(db)?;
        }
        Op::Put(e) => {
            let record = seal(ENTRIES_NAME, &e.index.to_be_bytes(), &encode(e));
            entries.insert(e.index, record.as_slice()).map_err(db)?;
        }
        Op::CompactTo(to) => {
            entries.retain_in(..=*to, |_, _| false).map_err(db)?;
        }
        Op::HardState(hs) => put_meta(meta, K_HARD_STATE, &encode(hs))?,
        Op::Conf(cs, i) => {
            put_meta(meta, K_CONF_STATE, &encode(cs))?;
            put_meta(meta, K_CONF_INDEX, &i.to_be_bytes())?;
        }
        Op::Snapshot(s) => put_meta(meta, K_SNAPSHOT, &encode(s))?,
        Op::Rebuild(Some(why)) => put_meta(meta, K_REBUILD, why.as_bytes())?,
        Op::Rebuild(None) => {
            meta.remove(K_REBUILD).map_err(db)?;
        }
        Op::Clear => {
            entries.retain(|_, _| false).map_err(db)?;
            for k in [K_HARD_STATE, K_CONF_STATE, K_CONF_INDEX, K_SNAPSHOT, K_REBUILD] {
                meta.remove(k).map_err(db)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_database_becomes_an_error() {
        // What a damaged page did to redb before the integrity check on
        // open (e.g. "range end index 63834 out of range for slice of
        // length 4096" in a btree page): the sweeps find none left, and
        // should one remain, this is what the member reports.
        let err = guarded::<()>(|| panic!("range end index 63834 out of range for slice of length 4096"))
            .expect_err("caught");
        assert!(matches!(err, StoreError::Panicked(_)), "{err:?}");
        assert!(err.is_damage());
        assert_eq!(
            err.to_string(),
            "the database library crashed reading the log store (range end index 63834 out of range \
             for slice of length 4096): the file is damaged"
        );
        let owned = guarded::<()>(|| panic!("{}", String::from("owned message"))).expect_err("caught");
        assert!(owned.to_string().contains("(owned message)"), "{owned}");
    }
}

/// Test access to the raw tables, to damage a store the way a disk would.
#[cfg(test)]
pub(crate) mod raw {
    use super::*;

    /// Runs `f` on the raw `entries` and `meta` tables of the store at
    /// `path` (no checksums: it writes what it is given).
    pub(crate) fn with_tables(
        path: &Path,
        f: impl FnOnce(
            &mut redb::Table<'_, u64, &'static [u8]>,
            &mut redb::Table<'_, &'static str, &'static [u8]>,
        ),
    ) {
        let database = redb::Database::open(path).expect("open raw");
        let txn = database.begin_write().unwrap();
        {
            let mut entries = txn.open_table(ENTRIES).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            f(&mut entries, &mut meta);
        }
        txn.commit().unwrap();
    }

    /// A sealed record, as [`Disk::write`] stores it.
    pub(crate) fn sealed_meta(key: &str, payload: &[u8]) -> Vec<u8> {
        seal(META_NAME, key.as_bytes(), payload)
    }
}

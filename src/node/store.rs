//! A member's raft log on disk, as the daemon uses it: `data_dir/raft.redb`.
//!
//! - `vipool init --config FILE` creates it, once, for a brand-new pair
//!   ([`init`]): bootstrapped with the configured members as voters.
//! - `vipool node|witness --config FILE` opens it ([`open_log`]) and refuses
//!   to start when it is missing, empty or damaged, naming the file and the
//!   way out: a member never starts as a new, empty member by accident.
//! - `--rejoin` ([`Start::rejoin`]) moves the store aside (renamed, never
//!   deleted) and starts with an empty one that waits for the leader's
//!   snapshot: how a member whose store was lost or damaged rebuilds from
//!   its peer.
//!
//! The data dir is created 0700 and every file 0600, whatever the umask;
//! an existing data dir or store that others can read is warned about.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use cluster::{Disk, LogStore, StoreError};
use tracing::{error, info, warn};

use super::NodeError;
use crate::clock::now_ms;
use crate::config::{AnyConfig, NodeSection, Role};

/// The raft log's file name in the data dir.
pub const STORE_FILE: &str = "raft.redb";

/// How a member was started, for opening its log and for the way out an
/// error names.
#[derive(Debug, Clone)]
pub struct Start {
    /// The configuration file, as given on the command line.
    pub config_file: PathBuf,
    /// `--rejoin`: set the store aside and rebuild from the peer.
    pub rejoin: bool,
}

impl Start {
    /// A plain start from `config_file`.
    pub fn new(config_file: impl Into<PathBuf>) -> Start {
        Start {
            config_file: config_file.into(),
            rejoin: false,
        }
    }

    fn run_command(&self, role: Role) -> String {
        let cmd = match role {
            Role::Server => "node",
            Role::Witness => "witness",
        };
        format!("vipool {cmd} --config {}", self.config_file.display())
    }

    /// What to do about a store that is missing or empty.
    fn remedy_missing(&self, role: Role) -> String {
        format!(
            "A brand-new pair: create the store on each member first, once: `vipool init --config {}`. \
             A member that lost its store: start it empty to rebuild from its peer: `{} --rejoin`.",
            self.config_file.display(),
            self.run_command(role)
        )
    }

    /// What to do about a store that cannot be trusted.
    fn remedy_damaged(&self, role: Role) -> String {
        format!(
            "This member's log cannot be trusted. Start it empty to rebuild from its peer \
             (the file is moved aside, not deleted): `{} --rejoin`.",
            self.run_command(role)
        )
    }

    fn remedy(&self, role: Role, e: &StoreError) -> String {
        match e {
            StoreError::Missing { .. } | StoreError::ZeroLength { .. } => self.remedy_missing(role),
            StoreError::InUse { .. } => {
                "Another vipool process runs on this store (this member is already running?); stop it first."
                    .into()
            }
            StoreError::Io { .. } | StoreError::Exists { .. } => {
                "Check the data dir, its owner and permissions, and the disk.".into()
            }
            // Damaged, not a log store, or of another format.
            _ => self.remedy_damaged(role),
        }
    }
}

/// The store's path in `node`'s data dir.
pub fn store_path(node: &NodeSection) -> PathBuf {
    node.data_dir.join(STORE_FILE)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    super::io(what)
}

/// Creates the data dir (and any missing parent) with mode 0700, set
/// explicitly; an existing one is left as it is (and warned about if
/// others can read it).
fn ensure_data_dir(dir: &Path) -> Result<(), NodeError> {
    if dir.is_dir() {
        warn_if_shared(dir, "data dir", 0o700);
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("creating data dir {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("setting permissions of {}", dir.display())))?;
    info!(dir = %dir.display(), "created the data dir (mode 0700)");
    Ok(())
}

/// Warns when group or others have any access to `path`: the raft log
/// holds the license table.
fn warn_if_shared(path: &Path, what: &str, want: u32) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the {what} can be read by other users (mode {mode:o}); it holds the license table: \
                 `chmod {want:o} {}`",
                path.display()
            );
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing directory {}", dir.display())))
}

/// Creates a store under a temporary name, lets `fill` write its first
/// content, and only then puts it in place at `path` (which must still be
/// free): a crash leaves no half-made store where a member would open it.
fn create_in_place(
    path: &Path,
    fill: impl FnOnce(&mut LogStore) -> Result<(), StoreError>,
) -> Result<(), NodeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!("{STORE_FILE}.new"));
    let store_error = |source: StoreError| NodeError::Store {
        path: path.to_path_buf(),
        source: Box::new(source),
        remedy: "Check the data dir, its owner and permissions, and the disk.".into(),
    };
    // Ours, from a create that did not finish: never a store in use.
    match fs::remove_file(&tmp) {
        Ok(()) => warn!(file = %tmp.display(), "removed an unfinished store left by an earlier attempt"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing {}", tmp.display()))(e)),
    }
    {
        let mut store = Disk::create(&tmp).and_then(LogStore::open).map_err(store_error)?;
        fill(&mut store).map_err(store_error)?;
        store.flush().map_err(store_error)?;
    }
    // A hard link never replaces what is there: a store that appeared
    // meanwhile is kept, and this attempt fails.
    fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => NodeError::AlreadyInitialized {
            path: path.to_path_buf(),
        },
        _ => io(format!("putting the new store in place at {}", path.display()))(e),
    })?;
    fs::remove_file(&tmp).map_err(io(format!("removing {}", tmp.display())))?;
    sync_dir(dir)
}

/// `vipool init`: creates the store of a member of a brand-new pair,
/// bootstrapped with every configured member as a voter (the same on each
/// member), and returns its path.
///
/// # Errors
/// A store (or any file) is already there ([`NodeError::AlreadyInitialized`]),
/// or the data dir or the store cannot be written.
pub fn init(config: &AnyConfig) -> Result<PathBuf, NodeError> {
    let node = config.node();
    let path = store_path(node);
    ensure_data_dir(&node.data_dir)?;
    if fs::symlink_metadata(&path).is_ok() {
        return Err(NodeError::AlreadyInitialized { path });
    }
    let voters = config.cluster().initial_voters();
    // The table before anything was applied: the same on every member
    // whatever its configuration (a snapshot holds state, not settings).
    let initial = crate::table::LicenseTable::new(Default::default()).snapshot();
    create_in_place(&path, |store| store.bootstrap(&voters, initial))?;
    info!(
        store = %path.display(), id = node.id, cluster = node.cluster_id, ?voters,
        "created the raft log of a brand-new pair"
    );
    Ok(path)
}

/// Opens this member's log for `run`: the existing store, checked; with
/// `--rejoin`, a fresh, empty one in place of whatever was there.
///
/// # Errors
/// The store is missing, empty (and not waiting for a snapshot), damaged,
/// in use, or cannot be read; each error names the file and the way out.
pub(crate) fn open_log(node: &NodeSection, role: Role, start: &Start) -> Result<LogStore, NodeError> {
    let path = store_path(node);
    if start.rejoin {
        ensure_data_dir(&node.data_dir)?;
        rejoin(&path)?;
    } else {
        warn_if_shared(&node.data_dir, "data dir", 0o700);
    }
    let refused = |source: StoreError| NodeError::Store {
        path: path.clone(),
        remedy: start.remedy(role, &source),
        source: Box::new(source),
    };
    let disk = Disk::open(&path).map_err(refused)?;
    warn_if_shared(&path, "raft log", 0o600);
    let store = LogStore::open(disk).map_err(refused)?;
    if store.is_empty() {
        match store.rebuilding() {
            Some(why) => warn!(
                store = %path.display(),
                "the raft log is empty and waits for the leader's snapshot ({why}): this member \
                 neither votes nor leads until it has rebuilt from its peer"
            ),
            None => {
                return Err(NodeError::StoreEmpty {
                    path: path.clone(),
                    remedy: start.remedy_missing(role),
                })
            }
        }
    } else {
        let (cs, _) = store.conf();
        info!(
            store = %path.display(),
            snapshot = store.snapshot_ref().get_metadata().index,
            entries = store.all_entries().len(),
            commit = store.hard_state().commit,
            term = store.hard_state().term,
            voters = ?cs.voters,
            learners = ?cs.learners,
            "raft log open"
        );
    }
    Ok(store)
}

/// Moves the store at `path` aside (if there is one) and puts an empty
/// store marked as rebuilding in its place.
fn rejoin(path: &Path) -> Result<(), NodeError> {
    if Disk::in_use(path) {
        return Err(NodeError::Store {
            path: path.to_path_buf(),
            source: Box::new(StoreError::InUse {
                path: path.to_path_buf(),
            }),
            remedy: "Another vipool process runs on this store; stop it before --rejoin.".into(),
        });
    }
    let now = now_ms();
    let aside = match fs::symlink_metadata(path) {
        Ok(_) => {
            let aside = path.with_file_name(format!("{STORE_FILE}.aside-{now}"));
            fs::rename(path, &aside).map_err(io(format!(
                "moving {} aside to {}",
                path.display(),
                aside.display()
            )))?;
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
            Some(aside)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    let why = match &aside {
        Some(a) => format!(
            "rejoin at unix ms {now}; the previous store was moved to {}",
            a.display()
        ),
        None => format!("rejoin at unix ms {now}; there was no previous store"),
    };
    create_in_place(path, |store| {
        store.mark_rebuilding(why.clone());
        Ok(())
    })?;
    error!(
        store = %path.display(),
        moved_to = ?aside,
        "REJOIN: {}; started an empty raft log: this member rebuilds from its peer's snapshot, \
         and neither votes nor leads until then",
        match &aside {
            Some(a) => format!("moved the previous store to {}", a.display()),
            None => "there was no previous store".into(),
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dir: &Path) -> NodeSection {
        NodeSection {
            name: "primary".into(),
            id: 1,
            cluster_id: 7,
            data_dir: dir.join("data"),
            require_release: None,
            log: None,
            serial: None,
        }
    }

    fn config(dir: &Path) -> AnyConfig {
        let text = format!(
            r#"
[node]
name = "primary"
id = 1
cluster_id = 7
serial = "CV1"
data_dir = "{}"

[vrrp]
interface = "eth0"
vrid = 51
priority = 200
vips = ["192.0.2.100/24"]

[cluster]
peers = [
    {{ id = 1, name = "primary", address = "192.0.2.1:4335" }},
    {{ id = 2, name = "backup", address = "192.0.2.2:4335" }},
]
"#,
            dir.join("data").display()
        );
        text.parse().expect("test config")
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_creates_a_private_bootstrapped_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let path = init(&config).unwrap();
        assert_eq!(path, dir.path().join("data").join(STORE_FILE));
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path().join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STORE_FILE], "no temporary file left");
        let store = open_log(config.node(), Role::Server, &Start::new("/etc/vipool/node.toml")).unwrap();
        assert_eq!(store.snapshot_ref().get_metadata().index, 1);
        assert_eq!(store.conf().0.voters, vec![1, 2]);
        drop(store);

        let err = init(&config).expect_err("a second init");
        assert!(matches!(err, NodeError::AlreadyInitialized { .. }), "{err:?}");
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn a_missing_or_zero_length_store_refuses_to_start_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path());
        let start = Start::new("/etc/vipool/node.toml");
        let err = open_log(&node, Role::Server, &start).expect_err("missing");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{} does not exist", store_path(&node).display())),
            "{text}"
        );
        assert!(
            text.contains("`vipool init --config /etc/vipool/node.toml`"),
            "{text}"
        );
        assert!(
            text.contains("`vipool node --config /etc/vipool/node.toml --rejoin`"),
            "{text}"
        );
        assert!(!node.data_dir.exists(), "a refused start creates nothing");

        fs::create_dir(&node.data_dir).unwrap();
        fs::write(store_path(&node), b"").unwrap();
        let err = open_log(&node, Role::Witness, &start).expect_err("zero length");
        let text = err.to_string();
        assert!(text.contains("is empty (zero length)"), "{text}");
        assert!(
            text.contains("`vipool witness --config /etc/vipool/node.toml --rejoin`"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_store_not_waiting_for_a_snapshot_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path());
        fs::create_dir(&node.data_dir).unwrap();
        drop(Disk::create(store_path(&node)).unwrap());
        let err = open_log(&node, Role::Server, &Start::new("n.toml")).expect_err("empty");
        assert!(matches!(err, NodeError::StoreEmpty { .. }), "{err:?}");
        assert!(err.to_string().contains("holds no log"), "{err}");
    }

    #[test]
    fn a_damaged_store_names_the_file_and_rejoin() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let path = init(&config).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        for b in &mut bytes[512..] {
            *b ^= 0x5a;
        }
        fs::write(&path, &bytes).unwrap();
        let err = open_log(config.node(), Role::Server, &Start::new("n.toml")).expect_err("damaged");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("raft log {}: ", path.display())),
            "{text}"
        );
        assert!(text.contains("cannot be trusted"), "{text}");
        assert!(text.contains("`vipool node --config n.toml --rejoin`"), "{text}");
    }

    #[test]
    fn rejoin_moves_the_store_aside_and_starts_empty_and_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let path = init(&config).unwrap();
        fs::write(&path, b"damaged beyond repair").unwrap();
        let start = Start {
            config_file: "n.toml".into(),
            rejoin: true,
        };
        let store = open_log(config.node(), Role::Server, &start).unwrap();
        assert!(store.is_empty());
        let why = store.rebuilding().expect("marked as rebuilding").to_string();
        assert!(why.contains("the previous store was moved to"), "{why}");
        drop(store);
        assert_eq!(mode(&path), 0o600);
        let aside: Vec<PathBuf> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".aside-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            fs::read(&aside[0]).unwrap(),
            b"damaged beyond repair",
            "kept, not deleted"
        );
        assert!(why.contains(&aside[0].display().to_string()), "{why}");

        // A restart before the snapshot arrives keeps waiting.
        let again = open_log(config.node(), Role::Server, &Start::new("n.toml")).unwrap();
        assert!(again.is_empty() && again.rebuilding().is_some());
    }

    #[test]
    fn rejoin_without_a_store_or_data_dir_creates_both_privately() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path());
        let start = Start {
            config_file: "n.toml".into(),
            rejoin: true,
        };
        let store = open_log(&node, Role::Witness, &start).unwrap();
        assert!(store
            .rebuilding()
            .unwrap()
            .contains("there was no previous store"));
        assert_eq!(mode(&node.data_dir), 0o700);
        assert_eq!(mode(&store_path(&node)), 0o600);
    }

    #[test]
    fn rejoin_leaves_a_store_in_use_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let path = init(&config).unwrap();
        let _running = Disk::open(&path).unwrap();
        let start = Start {
            config_file: "n.toml".into(),
            rejoin: true,
        };
        let err = open_log(config.node(), Role::Server, &start).expect_err("in use");
        assert!(err.to_string().contains("stop it before --rejoin"), "{err}");
        assert!(path.exists());
    }
}

//! `[notify]`: scripts run on each state change, as keepalived's
//! `notify_master` and friends (see `node::notify` for how they run).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Problem, Report};

/// The default of `notify.timeout_ms`.
pub const DEFAULT_NOTIFY_TIMEOUT_MS: u64 = 5000;

/// `[notify]`: a script per state change, each optional. A script runs
/// with the arguments `vipool STATE NODE VIP` (STATE is MASTER, BACKUP,
/// FAULT, SERVING or STOPPED) and the environment `VIPOOL_STATE`,
/// `VIPOOL_NODE`, `VIPOOL_VIP`, `VIPOOL_PRIORITY` and `VIPOOL_REASON` (the
/// last two where known); one run at a time per script, killed after
/// `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// Run when this node becomes VRRP master (it holds the VIP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<PathBuf>,
    /// Run when this node becomes VRRP backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// Run when a tracker without a weight puts the node in fault (it
    /// gives up the VIP; see `[track]`), and when the node stops on a
    /// failure (the VRRP speaker or the cluster member failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<PathBuf>,
    /// Run when the license server starts answering on the VIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<PathBuf>,
    /// Run when the license server stops answering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<PathBuf>,
    /// How long a script may run before it is killed (with every process
    /// it started in its process group).
    pub timeout_ms: u64,
}

impl Default for NotifySection {
    fn default() -> Self {
        NotifySection {
            master: None,
            backup: None,
            fault: None,
            serving: None,
            stopped: None,
            timeout_ms: DEFAULT_NOTIFY_TIMEOUT_MS,
        }
    }
}

impl NotifySection {
    /// Whether there is nothing to print (no script, default timeout).
    pub fn is_off(&self) -> bool {
        *self == NotifySection::default()
    }

    /// The configured scripts with their key (`master`, ...).
    pub fn scripts(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            ("master", &self.master),
            ("backup", &self.backup),
            ("fault", &self.fault),
            ("serving", &self.serving),
            ("stopped", &self.stopped),
        ]
        .into_iter()
        .filter_map(|(key, path)| path.as_deref().map(|p| (key, p)))
    }

    /// The file's own rules: absolute paths, a sane timeout.
    pub(super) fn check(&self, r: &mut Report) {
        for (key, path) in self.scripts() {
            if !path.is_absolute() {
                r.add(
                    format!("notify.{key}"),
                    format!("{:?}", path.display().to_string()),
                    "must be an absolute path, e.g. \"/etc/vipool/notify.sh\"",
                );
            }
        }
        if !(100..=600_000).contains(&self.timeout_ms) {
            r.add(
                "notify.timeout_ms",
                self.timeout_ms,
                "must be between 100 and 600000 (10 minutes); the default is 5000",
            );
        }
    }

    /// The scripts on this host: each must be a regular file, executable,
    /// and not writable by every user (the node runs it as its own user,
    /// usually root). `vipool check-config` and the node at start check this.
    ///
    /// # Errors
    /// Every script that cannot be used, each naming its field and saying
    /// what to do.
    pub fn check_files(&self) -> Result<(), Vec<Problem>> {
        let mut r = Report::default();
        for (key, path) in self.scripts().filter(|(_, p)| p.is_absolute()) {
            let field = format!("notify.{key}");
            let shown = format!("{:?}", path.display().to_string());
            match std::fs::metadata(path) {
                Err(e) => r.add(
                    field,
                    shown,
                    format!("cannot be read ({e}): install the script there or remove the line"),
                ),
                Ok(m) if !m.is_file() => r.add(field, shown, "is not a regular file: name the script itself"),
                Ok(m) if m.permissions().mode() & 0o111 == 0 => r.add(
                    field,
                    shown,
                    format!("is not executable: `chmod 755 {}`", path.display()),
                ),
                Ok(m) if m.permissions().mode() & 0o002 != 0 => r.add(
                    field,
                    shown,
                    format!(
                        "is writable by every user, who could make this node run anything: `chmod o-w {}`",
                        path.display()
                    ),
                ),
                Ok(_) => {}
            }
        }
        r.finish().map_err(|e| e.problems().to_vec())
    }
}

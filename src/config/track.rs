//! `[[track.interface]]` and `[[track.script]]`: what lowers this node's
//! VRRP priority, or puts it in fault, while it fails, as keepalived's
//! `track_interface` and `vrrp_script` / `track_script` (see `node::track`
//! for how they run).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Problem, Report};

/// The default of `track.script[].interval_ms`.
pub const DEFAULT_TRACK_INTERVAL_MS: u64 = 1000;
/// The default of `track.script[].timeout_ms`.
pub const DEFAULT_TRACK_TIMEOUT_MS: u64 = 1000;
/// The largest weight: a priority moves within 1..=254.
pub const MAX_TRACK_WEIGHT: i16 = 253;

/// `[track]`: interfaces and scripts this node depends on (none unless
/// configured).
///
/// A tracker with a `weight` changes the priority this node advertises:
/// a negative weight is subtracted while the tracker is down, a positive
/// weight is added while it is up (keepalived's rule); the result stays
/// within 1..=254, and the address owner's 255 never changes. A tracker
/// without a weight (or with weight 0) puts the node in fault while it is
/// down: it gives up the VIP at once (one priority-0 advert, so the peer
/// takes over without waiting) and does not contend until every such
/// tracker is up again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackSection {
    /// Interfaces: up while administratively up with a carrier.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interface: Vec<TrackInterface>,
    /// Scripts: up while their command succeeds (exit status 0 within the timeout).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<TrackScript>,
}

/// One `[[track.interface]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackInterface {
    /// The interface's name (`ip link`). An interface that does not exist
    /// counts as down (it may appear later: a VLAN, a bond).
    pub name: String,
    /// See [`TrackSection`]; none: fault while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i16>,
}

/// One `[[track.script]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackScript {
    /// A name for logs, `vipool show status` and the metrics.
    pub name: String,
    /// The program and its arguments, run without a shell; the program by
    /// absolute path. Run as the node's user.
    pub command: Vec<String>,
    /// How often it runs (one run at a time: the next starts `interval_ms`
    /// after the previous one started, or when it ended if it took longer).
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// A run still going after this long is killed (with its process
    /// group) and counts as a failure.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Failures in a row that take an up tracker down.
    #[serde(default = "one")]
    pub fall: u32,
    /// Successes in a row that bring a down tracker up.
    #[serde(default = "one")]
    pub rise: u32,
    /// See [`TrackSection`]; none: fault while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i16>,
}

fn default_interval() -> u64 {
    DEFAULT_TRACK_INTERVAL_MS
}

fn default_timeout() -> u64 {
    DEFAULT_TRACK_TIMEOUT_MS
}

fn one() -> u32 {
    1
}

/// Whether an interface name is one Linux could have (IFNAMSIZ, no `/`,
/// no whitespace, not `.` or `..`).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Whether a script's name is fit for a log line and a metric label.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TrackSection {
    /// Whether nothing is tracked.
    pub fn is_off(&self) -> bool {
        self.interface.is_empty() && self.script.is_empty()
    }

    /// The file's own rules; `priority` is `vrrp.priority`.
    pub(super) fn check(&self, priority: u8, r: &mut Report) {
        let weighted = self
            .interface
            .iter()
            .map(|t| t.weight)
            .chain(self.script.iter().map(|s| s.weight));
        if priority == 255 && weighted.flatten().any(|w| w != 0) {
            r.add(
                "vrrp.priority",
                priority,
                "the address owner's priority 255 never changes, so a tracker's weight would do nothing: \
                 leave the weights out (fault while down) or use a priority of 254 or less",
            );
        }
        let weight = |r: &mut Report, field: String, w: Option<i16>| {
            if let Some(w) = w.filter(|w| !(-MAX_TRACK_WEIGHT..=MAX_TRACK_WEIGHT).contains(w)) {
                r.add(
                    field,
                    w,
                    "must be between -253 and 253 (negative: lowered by that much while down; \
                     positive: raised while up; leave it out for fault while down)",
                );
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.interface.iter().enumerate() {
            let field = format!("track.interface[{i}]");
            if !valid_ifname(&t.name) {
                r.add(
                    format!("{field}.name"),
                    format!("{:?}", t.name),
                    "must be an interface name (1 to 15 characters, no '/', ':' or spaces), e.g. \"eth1\"",
                );
            } else if !seen.insert(t.name.as_str()) {
                r.add(
                    format!("{field}.name"),
                    format!("{:?}", t.name),
                    "is tracked twice: keep one entry",
                );
            }
            weight(r, format!("{field}.weight"), t.weight);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.script.iter().enumerate() {
            let field = format!("track.script[{i}]");
            if !valid_name(&s.name) {
                r.add(
                    format!("{field}.name"),
                    format!("{:?}", s.name),
                    "must be 1 to 64 letters, digits, '-', '_' or '.', e.g. \"gateway\"",
                );
            } else if !seen.insert(s.name.as_str()) {
                r.add(
                    format!("{field}.name"),
                    format!("{:?}", s.name),
                    "names another script too: give each its own name",
                );
            }
            match s.command.first() {
                None => r.add_field(
                    format!("{field}.command"),
                    "must name a program and its arguments, e.g. [\"/usr/bin/ping\", \"-c1\", \"-W1\", \"192.0.2.1\"]",
                ),
                Some(p) if !Path::new(p).is_absolute() => r.add(
                    format!("{field}.command"),
                    format!("{p:?}"),
                    "the program must be an absolute path (it runs without a shell or PATH), \
                     e.g. \"/usr/bin/ping\"",
                ),
                Some(_) => {}
            }
            if !(100..=3_600_000).contains(&s.interval_ms) {
                r.add(
                    format!("{field}.interval_ms"),
                    s.interval_ms,
                    "must be between 100 and 3600000 (an hour); the default is 1000",
                );
            }
            if !(10..=600_000).contains(&s.timeout_ms) {
                r.add(
                    format!("{field}.timeout_ms"),
                    s.timeout_ms,
                    "must be between 10 and 600000 (10 minutes); the default is 1000",
                );
            }
            for (key, n) in [("fall", s.fall), ("rise", s.rise)] {
                if !(1..=100).contains(&n) {
                    r.add(
                        format!("{field}.{key}"),
                        n,
                        "must be between 1 and 100; the default is 1",
                    );
                }
            }
            weight(r, format!("{field}.weight"), s.weight);
        }
    }

    /// The scripts on this host (each program a regular file, executable,
    /// not writable by every user: the node runs it as its own user), and
    /// the interfaces. `vipool check-config` and the node at start check
    /// the programs; an interface that is missing is only a warning (it
    /// may appear later, and counts as down until it does).
    ///
    /// # Errors
    /// Every program that cannot be run, each naming its field and saying
    /// what to do.
    pub fn check_files(&self) -> Result<Vec<String>, Vec<Problem>> {
        let mut r = Report::default();
        for (i, s) in self.script.iter().enumerate() {
            let Some(program) = s.command.first().map(Path::new).filter(|p| p.is_absolute()) else {
                continue;
            };
            let field = format!("track.script[{i}].command");
            let shown = format!("{:?}", program.display().to_string());
            match std::fs::metadata(program) {
                Err(e) => r.add(
                    field,
                    shown,
                    format!("cannot be read ({e}): install the program there or fix the path"),
                ),
                Ok(m) if !m.is_file() => {
                    r.add(field, shown, "is not a regular file: name the program itself")
                }
                Ok(m) if m.permissions().mode() & 0o111 == 0 => r.add(
                    field,
                    shown,
                    format!("is not executable: `chmod 755 {}`", program.display()),
                ),
                Ok(m) if m.permissions().mode() & 0o002 != 0 => r.add(
                    field,
                    shown,
                    format!(
                        "is writable by every user, who could make this node run anything: `chmod o-w {}`",
                        program.display()
                    ),
                ),
                Ok(_) => {}
            }
        }
        r.finish().map_err(|e| e.problems().to_vec())?;
        Ok(self
            .interface
            .iter()
            .enumerate()
            .filter(|(_, t)| valid_ifname(&t.name) && !Path::new("/sys/class/net").join(&t.name).exists())
            .map(|(i, t)| {
                format!(
                    "track.interface[{i}].name = {:?}: no such interface on this host now; \
                     it counts as down until it appears",
                    t.name
                )
            })
            .collect())
    }
}

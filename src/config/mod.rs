//! The node configuration: one TOML file per host.
//!
//! A server (`vipool node --config node.toml`) has four sections:
//! `[node]` (who it is, with its serial number), `[vrrp]` (the virtual
//! router that owns the VIP), `[cluster]` (the raft members) and
//! `[license]` (the license service: the issuers it trusts, its signed key
//! files, the types and timers). A witness (`vipool witness --config
//! witness.toml`) has only `[node]` and `[cluster]`: it never holds the VIP
//! and never answers clients.
//!
//! Loading checks every field and every rule that ties fields together, and
//! reports every problem at once, each naming its field, saying what is wrong
//! and what to do. Defaults follow SPEC.md; after loading, the defaults that
//! depend on other fields (the raft listen address, the operator endpoint)
//! are filled in, so that printing a loaded configuration shows exactly what
//! the node runs with (`vipool check-config`).
//!
//! ```
//! use vipool::config::Config;
//!
//! let config: Config = r#"
//!     [node]
//!     name = "primary"
//!     id = 1
//!     cluster_id = 7
//!     serial = "CV0012345"
//!
//!     [vrrp]
//!     interface = "eth0"
//!     vrid = 10
//!     priority = 200
//!     vips = ["192.0.2.100/24"]
//!
//!     [cluster]
//!     peers = [
//!         { id = 1, name = "primary", address = "192.0.2.11:4335" },
//!         { id = 2, name = "backup", address = "192.0.2.12:4335" },
//!     ]
//!
//!     [license]
//!     issuers = ["/etc/vipool/issuers/acme.pub"]
//!     key_files = ["/etc/vipool/keys/primary.keys"]
//! "#
//! .parse()
//! .unwrap();
//! assert_eq!(config.vrrp.advert_interval_ms, 1000);
//! assert_eq!(config.license.heartbeat_interval_ms, 30_000);
//! assert_eq!(config.speaker_config().vrrp.priority, 200);
//! assert_eq!(config.license.operator_listen.unwrap().to_string(), "127.0.0.1:4334");
//! assert_eq!(config.serial(), "CV0012345");
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod convert;
mod notify;
pub mod reload;
mod sections;
#[cfg(test)]
mod tests;
mod track;
mod validate;

pub use notify::*;
pub use sections::*;
pub use track::*;
use validate::*;

/// TCP port license clients connect to on the VIP, unless `license.client_port` says otherwise.
pub const DEFAULT_CLIENT_PORT: u16 = 4333;
/// Port of the operator endpoint, unless `license.operator_listen` says otherwise.
pub const DEFAULT_OPERATOR_PORT: u16 = 4334;
/// Where the node keeps its raft log and snapshots, unless `node.data_dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/vipool";

/// The configuration of a server: one of the pair that holds the VIP in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node is.
    pub node: NodeSection,
    /// The VRRP instance that elects the VIP holder.
    pub vrrp: VrrpSection,
    /// The raft members that replicate the license table.
    pub cluster: ClusterSection,
    /// Credentials of the cluster link.
    #[serde(default)]
    pub tls: TlsSection,
    /// The license service.
    #[serde(default)]
    pub license: LicenseSection,
    /// The metrics endpoint and status page (off unless `listen` is set).
    #[serde(default, skip_serializing_if = "MetricsSection::is_off")]
    pub metrics: MetricsSection,
    /// Scripts run on state changes (none unless configured).
    #[serde(default, skip_serializing_if = "NotifySection::is_off")]
    pub notify: NotifySection,
    /// Interfaces and scripts that lower the priority or put the node in
    /// fault while they fail (none unless configured).
    #[serde(default, skip_serializing_if = "TrackSection::is_off")]
    pub track: TrackSection,
}

/// The configuration of a witness: a vote-only third raft member. It has
/// no `[vrrp]` and no `[license]`: it never holds the VIP and never answers clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Who this node is.
    pub node: NodeSection,
    /// The raft members; this node's entry has `role = "witness"`.
    pub cluster: ClusterSection,
    /// Credentials of the cluster link.
    #[serde(default)]
    pub tls: TlsSection,
    /// The witness's own settings.
    #[serde(default)]
    pub witness: WitnessSection,
}

/// `[witness]`: what only a witness has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSection {
    /// The operator endpoint (`vipool show status --server`; operator
    /// certificates only): raft role, term, commit and warnings such as a
    /// peer refused for its release. It answers no license request.
    /// Default: loopback only, 127.0.0.1:4334.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_listen: Option<std::net::SocketAddr>,
}

/// A configuration file of either kind, told apart by its sections and by
/// this node's `role` in `cluster.peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per process, read once at start: a box would only add noise at every match"
)]
pub enum AnyConfig {
    /// A server's configuration.
    Server(Config),
    /// A witness's configuration.
    Witness(WitnessConfig),
}
/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as written in the file: `vrrp.priority`, `cluster.peers[1].address`.
    pub field: String,
    /// The offending value as written, when one field holds it.
    pub value: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{} = {}: {}", self.field, value, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, a field of the wrong type, a missing or unknown field; the
    /// message shows the line.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// Well-formed but wrong: every problem found, each naming its field.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] configuration (empty otherwise).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, problem) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems as validation goes.
#[derive(Default)]
struct Report(Vec<Problem>);

impl Report {
    fn add(&mut self, field: impl Into<String>, value: impl fmt::Display, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            value: Some(value.to_string()),
            message: message.into(),
        });
    }

    fn add_field(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            value: None,
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}
/// Whether two listeners on these addresses would take the same port.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

impl FromStr for Config {
    type Err = ConfigError;

    /// Parses and validates a server's configuration, filling in defaults.
    fn from_str(s: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(s)?;
        config.validate()?;
        config.fill_defaults();
        Ok(config)
    }
}

impl WitnessConfig {
    /// Reads, parses and validates a witness's configuration file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML for this shape, or breaks a rule.
    pub fn load(path: impl AsRef<Path>) -> Result<WitnessConfig, ConfigError> {
        read(path.as_ref())?.parse()
    }

    /// Checks every field and the rules between them.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut report = Report::default();
        check_common(&self.node, &self.cluster, Role::Witness, &mut report);
        if let Some(me) = self.cluster.peer(self.node.id) {
            let raft = self.cluster.listen.unwrap_or(me.address);
            let operator = self.operator_address();
            if operator.port() == 0 {
                report.add(
                    "witness.operator_listen",
                    operator,
                    "needs a port operators can be told, e.g. 4334",
                );
            } else if operator.port() == raft.port() && overlaps(operator.ip(), raft.ip()) {
                report.add(
                    "witness.operator_listen",
                    operator,
                    format!("is also the raft address of this node ({raft}): use another port"),
                );
            }
        }
        report.finish()
    }

    /// The operator endpoint's address (filled in by loading).
    pub fn operator_address(&self) -> std::net::SocketAddr {
        self.witness.operator_listen.unwrap_or_else(|| {
            std::net::SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), DEFAULT_OPERATOR_PORT)
        })
    }
}

impl FromStr for WitnessConfig {
    type Err = ConfigError;

    /// Parses and validates a witness's configuration, filling in defaults.
    fn from_str(s: &str) -> Result<WitnessConfig, ConfigError> {
        let mut config: WitnessConfig = toml::from_str(s)?;
        config.validate()?;
        config.cluster.fill_defaults(config.node.id);
        config.tls.fill_defaults(&config.node.name);
        config.witness.operator_listen = Some(config.operator_address());
        Ok(config)
    }
}

impl AnyConfig {
    /// Reads a configuration file of either kind (see [`AnyConfig::from_str`]).
    ///
    /// # Errors
    /// As [`Config::load`] or [`WitnessConfig::load`].
    pub fn load(path: impl AsRef<Path>) -> Result<AnyConfig, ConfigError> {
        read(path.as_ref())?.parse()
    }

    /// This node's `[node]` section.
    pub fn node(&self) -> &NodeSection {
        match self {
            AnyConfig::Server(c) => &c.node,
            AnyConfig::Witness(c) => &c.node,
        }
    }

    /// This node's `[tls]` section.
    pub fn tls(&self) -> &TlsSection {
        match self {
            AnyConfig::Server(c) => &c.tls,
            AnyConfig::Witness(c) => &c.tls,
        }
    }

    /// The `[cluster]` section.
    pub fn cluster(&self) -> &ClusterSection {
        match self {
            AnyConfig::Server(c) => &c.cluster,
            AnyConfig::Witness(c) => &c.cluster,
        }
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        match self {
            AnyConfig::Server(_) => Role::Server,
            AnyConfig::Witness(_) => Role::Witness,
        }
    }

    /// The configuration as TOML, every default written out.
    pub fn to_toml(&self) -> String {
        let out = match self {
            AnyConfig::Server(c) => toml::to_string_pretty(c),
            AnyConfig::Witness(c) => toml::to_string_pretty(c),
        };
        // Every field is a string, a number, a bool, an array or a table.
        out.expect("a configuration always serializes")
    }
}

impl FromStr for AnyConfig {
    type Err = ConfigError;

    /// A file with `[vrrp]` or `[license]` is a server's; otherwise it is a
    /// witness's when this node's entry in `cluster.peers` says
    /// `role = "witness"`, and a server's (missing its `[vrrp]`) when not.
    fn from_str(s: &str) -> Result<AnyConfig, ConfigError> {
        let table: toml::Table = toml::from_str(s)?;
        let server_sections = table.contains_key("vrrp") || table.contains_key("license");
        if !server_sections && own_role(&table) == Some(Role::Witness) {
            Ok(AnyConfig::Witness(s.parse()?))
        } else {
            Ok(AnyConfig::Server(s.parse()?))
        }
    }
}

/// This node's role as the raw file says, if it says.
fn own_role(table: &toml::Table) -> Option<Role> {
    let id = table.get("node")?.get("id")?.as_integer()?;
    let peers = table.get("cluster")?.get("peers")?.as_array()?;
    let me = peers
        .iter()
        .find(|p| p.get("id").and_then(|i| i.as_integer()) == Some(id))?;
    match me.get("role").map(|r| r.as_str()) {
        None => Some(Role::Server),
        Some(Some("server")) => Some(Role::Server),
        Some(Some("witness")) => Some(Role::Witness),
        Some(_) => None,
    }
}

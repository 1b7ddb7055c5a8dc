//! From a checked configuration to what each part of the node runs with:
//! loading (defaults filled in), the VRRP speaker's and the license
//! server's configurations, the table's settings, the server's own keys.
//! The rules a configuration must meet are in `validate`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use vrrp::proto::Config as VrrpConfig;
use vrrp::sys::{GarpConfig, SpeakerConfig};
use vrrp::wire::{Auth, Version};

use crate::license::{load_server_keys, ServerKeyEntry, ServerKeysError, TrustedIssuers};
use crate::server::request::RequestLimits;
use crate::server::ServerConfig;
use crate::table::{LicenseType, TableConfig, TypeKind};

use super::*;

impl Config {
    /// Reads, parses and validates a server's configuration file, and fills
    /// in the defaults that depend on other fields.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML for this shape, or breaks a rule.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        read(path.as_ref())?.parse()
    }

    /// This node's entry in `cluster.peers`.
    ///
    /// # Panics
    /// On a configuration that did not pass [`Config::validate`] and lacks the entry.
    pub fn me(&self) -> &Peer {
        self.cluster
            .peer(self.node.id)
            .expect("validated: own entry in cluster.peers")
    }

    /// The other server of the pair.
    ///
    /// # Panics
    /// On a configuration that did not pass [`Config::validate`].
    pub fn pair_peer(&self) -> &Peer {
        self.cluster
            .peers
            .iter()
            .find(|p| p.role == Role::Server && p.id != self.node.id)
            .expect("validated: two servers")
    }

    /// The address the other server's adverts come from: `vrrp.peer_address`,
    /// or else the IP of its entry in `cluster.peers` when that is IPv4.
    pub fn vrrp_peer_address(&self) -> Option<Ipv4Addr> {
        self.vrrp.peer_address.or_else(|| {
            let peer = self
                .cluster
                .peers
                .iter()
                .find(|p| p.role == Role::Server && p.id != self.node.id)?;
            match peer.address.ip() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }
        })
    }

    /// The VRRP instance for the speaker. `primary_address` is `vrrp.source`,
    /// or for the address owner (priority 255) the owned VIP, or else
    /// unspecified so that the speaker takes the interface's own address.
    /// The speaker trusts adverts only from [`Config::vrrp_peer_address`].
    pub fn vrrp_config(&self) -> VrrpConfig {
        let v = &self.vrrp;
        let addresses: Vec<Ipv4Addr> = v.vips.iter().map(|vip| vip.address).collect();
        let primary_address = match (v.source, self.own_v4()) {
            (Some(source), _) => source,
            (None, Some(own)) if v.priority == 255 && addresses.contains(&own) => own,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        VrrpConfig {
            version: Version::from(v.version),
            vrid: v.vrid,
            priority: v.priority,
            advert_interval_cs: u16::try_from(v.advert_interval_ms / 10).unwrap_or(u16::MAX),
            preempt: v.preempt,
            preempt_delay: Duration::from_millis(v.preempt_delay_ms),
            accept_mode: v.accept_mode,
            addresses,
            primary_address,
            auth: match &v.auth_pass {
                Some(pass) => Auth::simple_text(pass.as_bytes()).unwrap_or(Auth::None),
                None => Auth::None,
            },
            v3_checksum: v.v3_checksum.into(),
            unicast_peers: v.unicast_peers.clone(),
            trusted_sources: self.vrrp_peer_address().into_iter().collect(),
            pair_handoff: v.pair_handoff,
        }
    }

    /// Everything the VRRP speaker needs.
    pub fn speaker_config(&self) -> SpeakerConfig {
        let garp = &self.vrrp.garp;
        SpeakerConfig {
            interface: self.vrrp.interface.clone(),
            vrrp: self.vrrp_config(),
            prefix_len: self.vrrp.vips.first().map_or(32, |v| v.prefix_len),
            garp: GarpConfig {
                count: garp.count,
                interval: Duration::from_millis(garp.interval_ms),
                repeat_after: garp
                    .repeat_after_ms
                    .iter()
                    .map(|&ms| Duration::from_millis(ms))
                    .collect(),
                refresh: garp.refresh_s.map(Duration::from_secs),
            },
            virtual_mac: self.vrrp.vmac,
        }
    }

    /// The VIP license clients connect to: the first of `vrrp.vips`.
    ///
    /// # Panics
    /// On a configuration that did not pass [`Config::validate`] (no VIP).
    pub fn client_vip(&self) -> Ipv4Addr {
        self.vrrp.vips[0].address
    }

    /// Where license clients connect: the first VIP, `license.client_port`.
    pub fn client_address(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.client_vip()), self.license.client_port)
    }

    /// The license server's settings; it answers clients only on the VIP.
    pub fn server_config(&self) -> ServerConfig {
        let l = &self.license;
        ServerConfig {
            node: self.node.name.clone(),
            vip: Some(IpAddr::V4(self.client_vip())),
            max_frame: l.max_frame,
            max_connections: l.max_connections,
            sweep_interval: Duration::from_millis(l.sweep_interval_ms),
            push_delay: Duration::from_millis(l.push_delay_ms),
            expiry_warning: Duration::from_secs(l.expiry_warning_s),
            max_connections_per_address: l.max_connections_per_address,
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
            frame_timeout: Duration::from_millis(l.frame_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            // The node adds its certificate (see `node::run`).
            tls: None,
            // Read from files: `Config::load_server_keys` gives them.
            trusted: TrustedIssuers::new(),
            limits: RequestLimits {
                max_clients_per_source: l.max_clients_per_source,
                registrations_per_s_per_source: l.registrations_per_s_per_source,
                requests_per_s_per_client: l.requests_per_s_per_client,
                request_burst_per_client: l.request_burst_per_client,
            },
            connection_threads: l.connection_threads,
        }
    }

    /// The usage log's file and rotation, if `license.usage_log` is set.
    pub fn usage_config(&self) -> Option<crate::usage::UsageConfig> {
        let l = &self.license;
        l.usage_log.as_ref().map(|path| crate::usage::UsageConfig {
            path: path.clone(),
            max_bytes: l.usage_log_max_bytes,
            keep: l.usage_log_keep,
        })
    }

    /// The replicated table's settings: license types and client timers.
    pub fn table_config(&self) -> TableConfig {
        let l = &self.license;
        let types = l
            .poolable
            .iter()
            .map(|t| (LicenseType::new(t), TypeKind::Poolable))
            .chain(
                l.switch_specific
                    .iter()
                    .map(|t| (LicenseType::new(t), TypeKind::SwitchSpecific)),
            )
            .collect();
        TableConfig {
            types,
            heartbeat_interval_ms: l.heartbeat_interval_ms,
            missed_heartbeats_down: l.missed_heartbeats,
            silence_remove_ms: l.silence_remove_s.saturating_mul(1000),
        }
    }

    /// This server's serial (`node.serial`; validation insists on it).
    pub fn serial(&self) -> &str {
        self.node.serial.as_deref().unwrap_or_default()
    }

    /// Reads the trusted issuers (`license.issuers`) and this server's key
    /// files (`license.key_files`), and verifies each key's issuer,
    /// signature and binding to `node.serial`. Whether each key is valid
    /// now is [`ServerKeyEntry::counts_at`]'s to say.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem, each naming its field,
    /// file and line.
    pub fn load_server_keys(&self) -> Result<(TrustedIssuers, Vec<ServerKeyEntry>), ConfigError> {
        let l = &self.license;
        load_server_keys(&l.issuers, &l.key_files, self.serial()).map_err(|errors| {
            let problems = errors
                .into_iter()
                .map(|e| {
                    let field = match &e {
                        ServerKeysError::Issuers { index, .. } => format!("license.issuers[{index}]"),
                        ServerKeysError::File { index, .. }
                        | ServerKeysError::Key { index, .. }
                        | ServerKeysError::Duplicate { index, .. } => format!("license.key_files[{index}]"),
                    };
                    Problem {
                        field,
                        value: None,
                        message: e.to_string(),
                    }
                })
                .collect();
            ConfigError::Invalid(problems)
        })
    }

    /// The operator endpoint's address (filled in by loading).
    pub fn operator_address(&self) -> SocketAddr {
        self.license
            .operator_listen
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_OPERATOR_PORT))
    }

    pub(super) fn fill_defaults(&mut self) {
        self.vrrp.peer_address = self.vrrp_peer_address();
        self.cluster.fill_defaults(self.node.id);
        self.tls.fill_defaults(&self.node.name);
        self.license.operator_listen = Some(self.operator_address());
        for t in self
            .license
            .poolable
            .iter_mut()
            .chain(self.license.switch_specific.iter_mut())
        {
            *t = LicenseType::new(&*t).to_string();
        }
    }
}

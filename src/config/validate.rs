//! The rules a whole configuration file must meet, each broken rule
//! reported with its field, its value and what to do (`Report`). What a
//! checked configuration becomes is in `convert`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use vrrp::proto::{Config as VrrpConfig, ConfigError as VrrpError, Instance};
use vrrp::wire::Version;

use crate::proto::frame;
use crate::table::{limits, LicenseType};

use super::*;

/// The most threads `license.connection_threads` may ask for: more than a
/// server has cores only adds switching.
const MAX_CONNECTION_THREADS: usize = 256;

impl Config {
    /// Checks every field and the rules between them.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut report = Report::default();
        check_common(&self.node, &self.cluster, Role::Server, &mut report);
        self.check_vrrp(&mut report);
        self.check_failover_timers(&mut report);
        self.check_license(&mut report);
        self.check_ports(&mut report);
        self.check_metrics(&mut report);
        self.notify.check(&mut report);
        self.track.check(self.vrrp.priority, &mut report);
        report.finish()
    }

    /// This node's own IPv4 address, if its raft address is one.
    pub(super) fn own_v4(&self) -> Option<Ipv4Addr> {
        self.vrrp
            .source
            .or(match self.cluster.peer(self.node.id)?.address.ip() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
    }

    pub(super) fn check_vrrp(&self, r: &mut Report) {
        let v = &self.vrrp;
        if v.interface.is_empty()
            || v.interface.len() > 15
            || v.interface.contains(|c: char| c == '/' || c.is_whitespace())
        {
            r.add(
                "vrrp.interface",
                format!("{:?}", v.interface),
                "must be a Linux interface name (1 to 15 characters, no '/' or spaces), e.g. \"eth0\"",
            );
        }
        if v.vrid == 0 {
            r.add("vrrp.vrid", 0, "must be 1-255, the same on both servers");
        }
        let own = self.own_v4();
        let owns_a_vip = own.is_some_and(|a| v.vips.iter().any(|vip| vip.address == a));
        if v.priority == 0 || (v.priority == 255 && !owns_a_vip) {
            r.add(
                "vrrp.priority",
                v.priority,
                "must be 1-254 (255 only if a vip is this node's own address)",
            );
        }
        if v.vips.is_empty() {
            r.add_field(
                "vrrp.vips",
                "at least one VIP is needed, e.g. vips = [\"192.0.2.100/24\"]",
            );
        } else if v.vips.len() > 255 {
            r.add_field("vrrp.vips", "at most 255 VIPs fit an advertisement");
        }
        if let Some(first) = v.vips.first() {
            if v.vips.iter().any(|vip| vip.prefix_len != first.prefix_len) {
                r.add_field(
                    "vrrp.vips",
                    format!(
                        "every VIP must have the prefix length of the first (/{})",
                        first.prefix_len
                    ),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (n, vip) in v.vips.iter().enumerate() {
            let field = format!("vrrp.vips[{n}]");
            let a = vip.address;
            if !seen.insert(a) {
                r.add(&field, vip, "listed twice: remove one");
            }
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
                r.add(
                    &field,
                    vip,
                    "must be a unicast address on the servers' shared network",
                );
            }
            // One mistake, one line: a VIP that is this node's own address
            // is usually vrrp.source too; the member check below says it.
            let mut own_member = false;
            for peer in &self.cluster.peers {
                if peer.address.ip() != IpAddr::V4(a) {
                    continue;
                }
                own_member |= peer.id == self.node.id;
                if peer.id != self.node.id {
                    r.add(
                        &field,
                        vip,
                        format!(
                            "is the address of {} {} (id {}): a VIP must be an address no member owns",
                            peer.role, peer.name, peer.id
                        ),
                    );
                } else if v.priority != 255 {
                    r.add(
                        &field,
                        vip,
                        "is this node's own address: a VIP must be an address no member owns, \
                         or set vrrp.priority = 255 to make this node its owner",
                    );
                }
            }
            if Some(a) == v.source && v.priority != 255 && !own_member {
                r.add(
                    &field,
                    vip,
                    "is vrrp.source, this node's own address: use an address no host owns, \
                     or set vrrp.priority = 255 to make this node its owner",
                );
            }
        }
        if !v.advert_interval_ms.is_multiple_of(10) || v.advert_interval_ms / 10 > u32::from(u16::MAX) {
            r.add(
                "vrrp.advert_interval_ms",
                v.advert_interval_ms,
                "must be a multiple of 10 (VRRP counts centiseconds), at most 40950 for v3 and 255000 for v2",
            );
        }
        if v.version != 2 && v.version != 3 {
            r.add("vrrp.version", v.version, "must be 3 (RFC 5798) or 2 (RFC 3768)");
        }
        if let Some(pass) = &v.auth_pass {
            if pass.is_empty() || pass.len() > 8 {
                r.add(
                    "vrrp.auth_pass",
                    "\"…\"",
                    "must be 1 to 8 bytes (VRRPv2 simple-text password)",
                );
            } else if v.version == 3 {
                r.add(
                    "vrrp.auth_pass",
                    "\"…\"",
                    "VRRPv3 has no authentication (RFC 5798 §9): remove it, or set vrrp.version = 2",
                );
            }
        }
        if let Some(source) = v.source {
            if source.is_unspecified() || source.is_multicast() || source.is_broadcast() {
                r.add(
                    "vrrp.source",
                    source,
                    "must be this node's own unicast address on vrrp.interface, or left out",
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (n, peer) in v.unicast_peers.iter().enumerate() {
            let field = format!("vrrp.unicast_peers[{n}]");
            if !seen.insert(*peer) {
                r.add(&field, peer, "listed twice: remove one");
            }
            if peer.is_unspecified() || peer.is_multicast() || peer.is_broadcast() {
                r.add(&field, peer, "must be the unicast address of the other server");
            } else if Some(*peer) == own {
                r.add(
                    &field,
                    peer,
                    "is this node's own address: list the other server's address",
                );
            } else if v.vips.iter().any(|vip| vip.address == *peer) {
                r.add(&field, peer, "is a VIP: list the other server's own address");
            }
        }
        self.check_peer_address(own, r);
        if v.garp.count > 100 {
            r.add(
                "vrrp.garp.count",
                v.garp.count,
                "must be 0 to 100 (0 disables gratuitous ARP)",
            );
        }
        if v.garp.count > 1 && v.garp.interval_ms == 0 {
            r.add(
                "vrrp.garp.interval_ms",
                0,
                "must be at least 1 when vrrp.garp.count sends more than one request",
            );
        }
        if v.garp.repeat_after_ms.len() > 10
            || v.garp.repeat_after_ms.iter().any(|&ms| ms == 0 || ms > 60_000)
        {
            r.add(
                "vrrp.garp.repeat_after_ms",
                format!("{:?}", v.garp.repeat_after_ms),
                "at most 10 delays of 1 to 60000 ms each, e.g. [1000, 2000]",
            );
        }
        if v.garp.refresh_s == Some(0) {
            r.add(
                "vrrp.garp.refresh_s",
                0,
                "must be at least 1, or left out to never refresh",
            );
        }
        // The VRRP crate's own rules, on the instance the speaker will run, so
        // that nothing passes here that the speaker would refuse. Problems
        // already reported above are not repeated.
        let reported: BTreeSet<String> = r.0.iter().map(|p| p.field.clone()).collect();
        let mut probe = self.vrrp_config();
        if probe.primary_address.is_unspecified() {
            // Resolved from the interface at start; any unicast address that
            // is not the peer's will do here.
            probe.primary_address = probe_address(&probe);
        }
        if let Err(e) = probe.validate() {
            let (field, value) = match e {
                VrrpError::Vrid => ("vrrp.vrid", v.vrid.to_string()),
                VrrpError::Priority => ("vrrp.priority", v.priority.to_string()),
                VrrpError::Interval(_) => ("vrrp.advert_interval_ms", v.advert_interval_ms.to_string()),
                VrrpError::Version(n) => ("vrrp.version", n.to_string()),
                VrrpError::Auth(_) => ("vrrp.auth_pass", "\"…\"".to_owned()),
                VrrpError::Addresses(_) => ("vrrp.vips", format!("{} addresses", v.vips.len())),
                VrrpError::PrimaryAddress => (
                    "vrrp.source",
                    v.source.map_or_else(|| "(unset)".to_owned(), |s| s.to_string()),
                ),
                VrrpError::TrustedSource(source, _) => ("vrrp.peer_address", source.to_string()),
            };
            if !reported.iter().any(|f| f.starts_with(field)) {
                r.add(field, value, e.to_string());
            }
        }
    }

    /// `vrrp.peer_address`, or its default: the one source the speaker
    /// trusts, so a wrong one drops every advert of the peer and leaves
    /// both servers master.
    fn check_peer_address(&self, own: Option<Ipv4Addr>, r: &mut Report) {
        let v = &self.vrrp;
        let field = "vrrp.peer_address";
        let Some(peer) = self.vrrp_peer_address() else {
            let servers = self.cluster.peers.iter().filter(|p| p.role == Role::Server);
            if servers.count() == 2 {
                r.add_field(
                    field,
                    "the other server's address in cluster.peers is not IPv4: set \
                     vrrp.peer_address to its IPv4 address on vrrp.interface",
                );
            }
            return;
        };
        if v.peer_address.is_none() {
            // The default assumes raft and VRRP share the servers' addresses.
            // A vrrp.source other than this node's raft address says they do
            // not here, so the peer's adverts would not come from its raft
            // address either.
            let raft = self.cluster.peer(self.node.id).map(|p| p.address.ip());
            if let (Some(source), Some(raft)) = (v.source, raft) {
                if IpAddr::V4(source) != raft {
                    r.add_field(
                        field,
                        format!(
                            "not set, and vrrp.source {source} is not this node's raft address \
                             {raft}: set vrrp.peer_address to the other server's address on \
                             vrrp.interface (its vrrp.source); the default, {peer}, is its raft address"
                        ),
                    );
                    return;
                }
            }
        }
        if peer.is_unspecified() || peer.is_multicast() || peer.is_broadcast() {
            r.add(
                field,
                peer,
                "must be the other server's own unicast address on vrrp.interface",
            );
        } else if Some(peer) == own {
            r.add(
                field,
                peer,
                "is this node's own address: give the other server's address on vrrp.interface",
            );
        } else if v.vips.iter().any(|vip| vip.address == peer) {
            r.add(
                field,
                peer,
                "is a VIP: give the other server's own address on vrrp.interface",
            );
        } else if !v.unicast_peers.is_empty() && !v.unicast_peers.contains(&peer) {
            r.add(
                field,
                peer,
                "is not in vrrp.unicast_peers, so its adverts would never be heard: \
                 list it there, or correct vrrp.peer_address",
            );
        }
    }

    /// VRRP's Master_Down_Interval (three adverts plus the skew of this
    /// node's priority) must exceed two raft election timeouts: an isolated
    /// former leader steps down (check-quorum) within two election timeouts,
    /// so it has stopped serving before this node can take the VIP.
    pub(super) fn check_failover_timers(&self, r: &mut Report) {
        let c = &self.cluster;
        let election_ticks = u64::try_from(c.election_ticks).unwrap_or(u64::MAX);
        let two_elections = Duration::from_millis(c.tick_ms.saturating_mul(election_ticks).saturating_mul(2));
        let mut probe = self.vrrp_config();
        if probe.primary_address.is_unspecified() {
            probe.primary_address = probe_address(&probe);
        }
        let master_down = |probe: &VrrpConfig| {
            Instance::new(probe.clone())
                .ok()
                .map(|i| i.master_down_interval())
        };
        // An invalid VRRP instance is reported by check_vrrp already.
        let Some(mdi) = master_down(&probe) else { return };
        if mdi > two_elections {
            return;
        }
        // The shortest advert interval that passes, in the steps this VRRP
        // version allows (v2 counts whole seconds).
        let step = if probe.version == Version::V2 { 100 } else { 1 };
        let mut fix = None;
        let mut cs = probe.advert_interval_cs;
        while let Some(next) = cs.checked_add(step) {
            cs = next - next % step;
            let mut longer = probe.clone();
            longer.advert_interval_cs = cs;
            match master_down(&longer) {
                Some(d) if d > two_elections => {
                    fix = Some(u32::from(cs) * 10);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let raise = match fix {
            Some(ms) => format!("raise vrrp.advert_interval_ms to {ms} or more, or "),
            None => String::new(),
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        r.add(
            "vrrp.advert_interval_ms",
            self.vrrp.advert_interval_ms,
            format!(
                "VRRP's Master_Down_Interval (3 x vrrp.advert_interval_ms + skew for vrrp.priority {} \
                 = {:.1} ms) must exceed two raft election timeouts (2 x cluster.election_ticks {} \
                 x cluster.tick_ms {} = {} ms), so that an isolated former leader steps down \
                 (check-quorum) before this node can take the VIP: {raise}lower cluster.tick_ms \
                 or cluster.election_ticks",
                self.vrrp.priority,
                ms(mdi),
                c.election_ticks,
                c.tick_ms,
                two_elections.as_millis(),
            ),
        );
    }

    pub(super) fn check_license(&self, r: &mut Report) {
        let l = &self.license;
        let mut kinds: BTreeMap<LicenseType, &str> = BTreeMap::new();
        for (list, name) in [
            (&l.poolable, "license.poolable"),
            (&l.switch_specific, "license.switch_specific"),
        ] {
            for (n, t) in list.iter().enumerate() {
                let field = format!("{name}[{n}]");
                // The same rule as the table's (`TableConfig::check`): the
                // settings are replicated, and every member checks them.
                let valid = !t.trim().is_empty()
                    && t.trim().len() <= 32
                    && t.trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    r.add(
                        &field,
                        format!("{t:?}"),
                        "a license type is a name of 1-32 letters, digits, '_' and '-', e.g. \"AP\"",
                    );
                    continue;
                }
                if let Some(first) = kinds.insert(LicenseType::new(t), name) {
                    r.add(
                        &field,
                        format!("{t:?}"),
                        format!("already listed in {first} (types are case-insensitive): list it once"),
                    );
                }
            }
        }
        if kinds.len() > crate::table::MAX_SETTINGS_TYPES {
            r.add_field(
                "license.poolable",
                format!(
                    "{} license types: at most {} in license.poolable and license.switch_specific together",
                    kinds.len(),
                    crate::table::MAX_SETTINGS_TYPES
                ),
            );
        }
        if kinds.is_empty() {
            r.add_field(
                "license.poolable",
                "no license types at all: list at least one in license.poolable or license.switch_specific",
            );
        }
        match &self.node.serial {
            None => r.add_field(
                "node.serial",
                "a server needs its serial number, as its license keys name it, e.g. serial = \
                 \"CV0012345\"",
            ),
            Some(serial) => {
                if let Err(e) = limits::check_serial(serial) {
                    r.add("node.serial", format!("{serial:?}"), e.to_string());
                }
            }
        }
        for (list, name) in [
            (&l.issuers, "license.issuers"),
            (&l.key_files, "license.key_files"),
        ] {
            let mut seen = BTreeSet::new();
            for (n, path) in list.iter().enumerate() {
                let field = format!("{name}[{n}]");
                let shown = format!("{:?}", path.display().to_string());
                if !path.is_absolute() {
                    r.add(&field, &shown, "must be an absolute path");
                } else if !seen.insert(path) {
                    r.add(&field, &shown, "listed twice: remove one");
                }
            }
        }
        if !l.key_files.is_empty() && l.issuers.is_empty() {
            r.add_field(
                "license.issuers",
                "license.key_files has keys, but no issuer is trusted, so none would count: list \
                 the issuers' NAME.pub files (`vipool license keygen` writes them)",
            );
        }
        if let Some(path) = &l.usage_log {
            let shown = format!("{:?}", path.display().to_string());
            match path.parent() {
                _ if !path.is_absolute() => r.add("license.usage_log", &shown, "must be an absolute path"),
                Some(dir) if !dir.is_dir() => r.add(
                    "license.usage_log",
                    &shown,
                    format!(
                        "its directory {} does not exist: create it (owned by the user vipool runs as)",
                        dir.display()
                    ),
                ),
                _ if path.is_dir() => r.add("license.usage_log", &shown, "is a directory: name a file in it"),
                _ => {}
            }
        }
        if l.usage_log_max_bytes < 4096 {
            r.add(
                "license.usage_log_max_bytes",
                l.usage_log_max_bytes,
                "must be at least 4096 (default 67108864: 64 MiB)",
            );
        }
        if l.max_clients_per_source == 0 {
            r.add(
                "license.max_clients_per_source",
                0,
                "must be at least 1 (default 64)",
            );
        }
        if l.registrations_per_s_per_source == 0 {
            r.add(
                "license.registrations_per_s_per_source",
                0,
                "must be at least 1 (default 16)",
            );
        }
        if l.requests_per_s_per_client == 0 {
            r.add(
                "license.requests_per_s_per_client",
                0,
                "must be at least 1 (default 200)",
            );
        }
        if l.request_burst_per_client == 0 {
            r.add(
                "license.request_burst_per_client",
                0,
                "must be at least 1 (default 1000)",
            );
        }
        if l.heartbeat_interval_ms == 0 {
            r.add(
                "license.heartbeat_interval_ms",
                0,
                "must be at least 1 (SPEC default 30000)",
            );
        }
        if l.missed_heartbeats == 0 {
            r.add(
                "license.missed_heartbeats",
                0,
                "must be at least 1 (SPEC default 3)",
            );
        }
        let down_ms = l
            .heartbeat_interval_ms
            .saturating_mul(u64::from(l.missed_heartbeats));
        if l.silence_remove_s.saturating_mul(1000) <= down_ms {
            r.add(
                "license.silence_remove_s",
                l.silence_remove_s,
                format!(
                    "must be longer than the {down_ms} ms after which a silent client is down \
                     (heartbeat_interval_ms x missed_heartbeats), or clients lose their keys before \
                     their APs (SPEC default 30 days: 2592000)"
                ),
            );
        }
        if l.sweep_interval_ms == 0 {
            r.add(
                "license.sweep_interval_ms",
                0,
                "must be at least 1 (default 10000)",
            );
        }
        if l.max_frame < 1024 {
            r.add(
                "license.max_frame",
                l.max_frame,
                format!(
                    "must be at least 1024 bytes (default {})",
                    frame::DEFAULT_MAX_REQUEST
                ),
            );
        }
        if l.max_connections == 0 {
            r.add("license.max_connections", 0, "must be at least 1 (default 20000)");
        }
        if l.connection_threads > MAX_CONNECTION_THREADS {
            r.add(
                "license.connection_threads",
                l.connection_threads,
                format!(
                    "must be at most {MAX_CONNECTION_THREADS} (default: one per CPU, at most {}; 0 serves \
                     connections on the node's own thread)",
                    super::sections::DEFAULT_CONNECTION_THREADS_MAX
                ),
            );
        }
        // A deadline of 0 closes every connection at once (and cuts every
        // answer that has to wait for its write).
        for (field, value, default) in [
            ("license.handshake_timeout_ms", l.handshake_timeout_ms, 5000),
            ("license.frame_timeout_ms", l.frame_timeout_ms, 10000),
            ("license.idle_timeout_ms", l.idle_timeout_ms, 120000),
        ] {
            if value == 0 {
                r.add(field, 0, format!("must be at least 1 (default {default})"));
            }
        }
        if l.client_port == 0 {
            r.add(
                "license.client_port",
                0,
                format!("must be a port clients can be told (default {DEFAULT_CLIENT_PORT})"),
            );
        }
        if let Some(op) = l.operator_listen {
            if op.port() == 0 {
                r.add(
                    "license.operator_listen",
                    op,
                    "needs a port operators can be told, e.g. 4334",
                );
            }
        }
    }

    pub(super) fn check_ports(&self, r: &mut Report) {
        let Some(me) = self.cluster.peer(self.node.id) else {
            return;
        };
        let raft = self.cluster.listen.unwrap_or(me.address);
        let operator = self.operator_address();
        let client_port = self.license.client_port;
        if client_port != 0 && raft.port() == client_port {
            r.add(
                "license.client_port",
                client_port,
                format!("is also the raft port of this node ({raft}): use another port for one of them"),
            );
        }
        if operator.port() != 0 && operator.port() == client_port {
            r.add(
                "license.operator_listen",
                operator,
                "uses license.client_port: give the operator endpoint its own port",
            );
        }
        if operator.port() != 0 && operator.port() == raft.port() && overlaps(operator.ip(), raft.ip()) {
            r.add(
                "license.operator_listen",
                operator,
                format!("is also the raft address of this node ({raft}): use another port"),
            );
        }
    }
}
impl Config {
    /// `[metrics] listen`: a fixed port that no other listener of this
    /// node uses, on an address that stays on this host (not a VIP).
    pub(super) fn check_metrics(&self, r: &mut Report) {
        let Some(listen) = self.metrics.listen else {
            return;
        };
        let field = "metrics.listen";
        if listen.port() == 0 {
            r.add(
                field,
                listen,
                "port 0: give a fixed port that Prometheus can be told (9464 is customary)",
            );
            return;
        }
        if self
            .vrrp
            .vips
            .iter()
            .any(|v| IpAddr::V4(v.address) == listen.ip())
        {
            r.add(
                field,
                listen,
                "is a VIP: the backup cannot bind it, and the page would move with the VIP. Use this \
                 node's own address (or 0.0.0.0)",
            );
        }
        let client_port = self.license.client_port;
        if listen.port() == client_port {
            r.add(
                field,
                listen,
                format!("uses license.client_port ({client_port}), which listens on every address: use another port"),
            );
        }
        let operator = self.operator_address();
        if listen.port() == operator.port() && overlaps(listen.ip(), operator.ip()) {
            r.add(
                field,
                listen,
                format!("is also the operator endpoint ({operator}): use another port"),
            );
        }
        if let Some(me) = self.cluster.peer(self.node.id) {
            let raft = self.cluster.listen.unwrap_or(me.address);
            if listen.port() == raft.port() && overlaps(listen.ip(), raft.ip()) {
                r.add(
                    field,
                    listen,
                    format!("is also the raft address of this node ({raft}): use another port"),
                );
            }
        }
    }
}

/// A stand-in for a primary address resolved only at start: one that the
/// instance's other addresses do not collide with.
fn probe_address(config: &VrrpConfig) -> Ipv4Addr {
    (1..=254)
        .rev()
        .map(|n| Ipv4Addr::new(192, 0, 2, n))
        .find(|a| {
            !config.trusted_sources.contains(a)
                && !config.unicast_peers.contains(a)
                && !config.addresses.contains(a)
        })
        .unwrap_or(Ipv4Addr::new(192, 0, 2, 254))
}

/// A member name goes into its certificate as a DNS name.
pub(super) fn valid_name(name: &str) -> bool {
    name.len() <= 63 && crate::pki::member_san(name).is_ok()
}

/// The rules of `[node]` and `[cluster]`, for a node of role `expected`.
pub(super) fn check_common(node: &NodeSection, cluster: &ClusterSection, expected: Role, r: &mut Report) {
    if !valid_name(&node.name) {
        r.add(
            "node.name",
            format!("{:?}", node.name),
            "must be a DNS name of at most 63 characters (letters, digits, '-', '_', labels separated \
             by '.', not all digits), e.g. \"primary\": it goes into the member's certificate",
        );
    }
    if node.id == 0 {
        r.add(
            "node.id",
            0,
            "must be non-zero (raft reserves 0): give each member its own id, e.g. 1",
        );
    }
    if node.cluster_id == 0 {
        r.add(
            "node.cluster_id",
            0,
            "must be non-zero and the same on every member of the pair, e.g. 1",
        );
    }
    if !node.data_dir.is_absolute() {
        r.add(
            "node.data_dir",
            format!("{:?}", node.data_dir.display().to_string()),
            format!("must be an absolute path, e.g. \"{DEFAULT_DATA_DIR}\""),
        );
    }
    if let Some(release) = &node.require_release {
        let mine = env!("CARGO_PKG_VERSION");
        if release.trim() != mine {
            r.add(
                "node.require_release",
                format!("{release:?}"),
                format!("this is vipool {mine}: install vipool {release} on this host, or change the pin on every member"),
            );
        }
    }

    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (n, peer) in cluster.peers.iter().enumerate() {
        let field = |f: &str| format!("cluster.peers[{n}].{f}");
        if peer.id == 0 {
            r.add(field("id"), 0, "must be non-zero (raft reserves 0)");
        } else if !ids.insert(peer.id) {
            r.add(
                field("id"),
                peer.id,
                "is the id of another member: every member needs its own",
            );
        }
        if !valid_name(&peer.name) {
            r.add(
                field("name"),
                format!("{:?}", peer.name),
                "must be a DNS name of at most 63 characters (letters, digits, '-', '_', labels separated by '.', not all digits): it goes into the member's certificate",
            );
        } else if !names.insert(peer.name.as_str()) {
            r.add(
                field("name"),
                format!("{:?}", peer.name),
                "is the name of another member: every member needs its own",
            );
        }
        let ip = peer.address.ip();
        if ip.is_unspecified() || ip.is_multicast() || peer.address.port() == 0 {
            r.add(
                field("address"),
                peer.address,
                "must be the member's own unicast address and raft port, as the others reach it, \
                 e.g. \"192.0.2.11:4335\"",
            );
        } else if !addresses.insert(peer.address) {
            r.add(
                field("address"),
                peer.address,
                "is the address of another member: every member needs its own",
            );
        }
    }
    let servers = cluster.peers.iter().filter(|p| p.role == Role::Server).count();
    let witnesses = cluster.peers.iter().filter(|p| p.role == Role::Witness).count();
    if servers != 2 {
        r.add_field(
            "cluster.peers",
            format!(
                "lists {servers} server(s): a pair is exactly two servers (role = \"server\", the \
                 default), plus at most one witness"
            ),
        );
    }
    if witnesses > 1 {
        r.add_field(
            "cluster.peers",
            format!("lists {witnesses} witnesses: at most one witness (role = \"witness\")"),
        );
    }
    match cluster.peers.iter().find(|p| p.id == node.id) {
        None if node.id != 0 => r.add_field(
            "cluster.peers",
            format!(
                "has no entry for this node (node.id = {}): add {{ id = {}, name = {:?}, address = \
                 \"IP:PORT\" }}",
                node.id, node.id, node.name
            ),
        ),
        None => {}
        Some(me) => {
            let n = cluster.peers.iter().position(|p| p.id == node.id).unwrap_or(0);
            if me.name != node.name {
                r.add(
                    format!("cluster.peers[{n}].name"),
                    format!("{:?}", me.name),
                    format!(
                        "is this node's entry (id {}), whose name must be node.name {:?}",
                        node.id, node.name
                    ),
                );
            }
            if me.role != expected {
                let what = match expected {
                    Role::Server => {
                        "this file has [vrrp] or [license], which only a server has: set role = \
                         \"server\", or remove those sections for a witness"
                    }
                    Role::Witness => "a witness file has only [node] and [cluster]",
                };
                r.add(
                    format!("cluster.peers[{n}].role"),
                    format!("\"{}\"", me.role),
                    format!("is this node's entry (id {}), but {what}", node.id),
                );
            }
        }
    }
    if let Some(listen) = cluster.listen {
        if listen.port() == 0 {
            r.add(
                "cluster.listen",
                listen,
                "needs the raft port the other members connect to",
            );
        }
    }
    if cluster.tick_ms == 0 || cluster.tick_ms > 10_000 {
        r.add(
            "cluster.tick_ms",
            cluster.tick_ms,
            "must be 1 to 10000 (default 100)",
        );
    }
    if cluster.heartbeat_ticks == 0 {
        r.add("cluster.heartbeat_ticks", 0, "must be at least 1 (default 3)");
    }
    if cluster.election_ticks <= cluster.heartbeat_ticks {
        r.add(
            "cluster.election_ticks",
            cluster.election_ticks,
            format!(
                "must be more than cluster.heartbeat_ticks ({}), or followers campaign between \
                 heartbeats (default 10)",
                cluster.heartbeat_ticks
            ),
        );
    }
    if cluster.snapshot_interval == 0 {
        r.add(
            "cluster.snapshot_interval",
            0,
            "must be at least 1 entry (default 10000)",
        );
    }
    let election_ms = cluster
        .tick_ms
        .saturating_mul(u64::try_from(cluster.election_ticks).unwrap_or(u64::MAX));
    if cluster.request_timeout_ms <= election_ms {
        r.add(
            "cluster.request_timeout_ms",
            cluster.request_timeout_ms,
            format!(
                "must be longer than one election (tick_ms x election_ticks = {election_ms} ms), \
                 or every failover fails the changes in flight (default 5000)"
            ),
        );
    }
    if cluster.max_frame < 1024 * 1024 {
        r.add(
            "cluster.max_frame",
            cluster.max_frame,
            "must be at least 1048576 (1 MiB): raft appends travel in one frame",
        );
    }
    if cluster.max_message < u64::from(cluster.max_frame) {
        r.add(
            "cluster.max_message",
            cluster.max_message,
            format!(
                "must be at least cluster.max_frame ({}): it bounds a snapshot, which may need several frames",
                cluster.max_frame
            ),
        );
    }
}

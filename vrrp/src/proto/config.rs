//! Configuration of one virtual router instance.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::wire::{Auth, Version, V3_MAX_INTERVAL_CS};

/// How VRRPv3 checksums are computed and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum V3Checksum {
    /// RFC 5798 §5.2.8: over the IPv4 pseudo-header and the message.
    #[default]
    PseudoHeader,
    /// Over the message only, as VRRPv2 does; for older VRRPv3 peers.
    MessageOnly,
}

/// One virtual router instance (RFC 9568 §6.1 "Parameters per Virtual Router").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Protocol version spoken and accepted.
    pub version: Version,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Priority, 1..=255; 255 means this router owns the virtual addresses.
    pub priority: u8,
    /// Advertisement interval in centiseconds. v3: 1..=4095; v2: whole
    /// seconds (a multiple of 100, 100..=25500).
    pub advert_interval_cs: u16,
    /// Preempt_Mode: a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// With preemption on, how long a backup that outranks the master keeps
    /// deferring to it before taking over. Zero preempts at the next
    /// Master_Down timeout, as the RFC does.
    pub preempt_delay: Duration,
    /// Accept_Mode: whether a non-owner master accepts traffic addressed to
    /// the virtual addresses. Reported through [`super::Instance::accepts_vip_traffic`].
    pub accept_mode: bool,
    /// The virtual addresses (IPvX Address(es) of the advertisement).
    pub addresses: Vec<Ipv4Addr>,
    /// This router's primary address on the interface: the advertisement
    /// source, and the tie-breaker between equal priorities.
    pub primary_address: Ipv4Addr,
    /// VRRPv2 authentication; must be [`Auth::None`] for v3.
    pub auth: Auth,
    /// VRRPv3 checksum form.
    pub v3_checksum: V3Checksum,
    /// Unicast peers. Empty: multicast to 224.0.0.18. Otherwise adverts are
    /// sent to these addresses and accepted only from them.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// The only IPv4 sources whose adverts are accepted, multicast or
    /// unicast. Empty accepts any source, as RFC 9568 has a plain speaker
    /// do. For a pair this is the peer's primary address: an advert from
    /// any other host of the link (which needs no credentials to send one)
    /// is dropped and counted as [`super::DropReason::UnknownPeer`]. With
    /// unicast peers too, an advert must come from an address on both lists.
    pub trusted_sources: Vec<Ipv4Addr>,
    /// Pair handoff (an extension for two-router virtual routers): on the
    /// master's priority-0 advert a backup takes over at once instead of
    /// after Skew_Time. Skew_Time exists so that, of several backups, the
    /// highest-priority one moves first; with a single backup there is no
    /// one to wait for. With more than one backup, both would briefly be
    /// master until their adverts settle it: use it only for a pair.
    pub pair_handoff: bool,
}

impl Config {
    /// A v3 configuration with the RFC's defaults: advert 1 s, preemption on,
    /// accept mode on, no delay.
    pub fn v3(vrid: u8, priority: u8, primary_address: Ipv4Addr, addresses: Vec<Ipv4Addr>) -> Config {
        Config {
            version: Version::V3,
            vrid,
            priority,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: true,
            addresses,
            primary_address,
            auth: Auth::None,
            v3_checksum: V3Checksum::PseudoHeader,
            unicast_peers: Vec::new(),
            trusted_sources: Vec::new(),
            pair_handoff: false,
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first problem found, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority);
        }
        match self.version {
            Version::V3 => {
                if self.advert_interval_cs == 0 || self.advert_interval_cs > V3_MAX_INTERVAL_CS {
                    return Err(ConfigError::Interval(
                        "VRRPv3 advert interval must be 10 ms to 40.95 s",
                    ));
                }
                if self.auth != Auth::None {
                    return Err(ConfigError::Auth("VRRPv3 has no authentication (RFC 5798 §9)"));
                }
            }
            Version::V2 => {
                if self.advert_interval_cs == 0
                    || !self.advert_interval_cs.is_multiple_of(100)
                    || self.advert_interval_cs > 25_500
                {
                    return Err(ConfigError::Interval(
                        "VRRPv2 advert interval must be whole seconds, 1 to 255",
                    ));
                }
            }
            Version::Unknown(n) => return Err(ConfigError::Version(n)),
        }
        if self.addresses.is_empty() {
            return Err(ConfigError::Addresses("at least one virtual address is needed"));
        }
        if self.addresses.len() > 255 {
            return Err(ConfigError::Addresses(
                "at most 255 virtual addresses fit an advertisement",
            ));
        }
        if self.priority == 255 && !self.addresses.contains(&self.primary_address) {
            return Err(ConfigError::Priority);
        }
        if self.primary_address.is_unspecified() || self.primary_address.is_multicast() {
            return Err(ConfigError::PrimaryAddress);
        }
        for &source in &self.trusted_sources {
            if source.is_unspecified() || source.is_multicast() || source.is_broadcast() {
                return Err(ConfigError::TrustedSource(source, "must be a unicast address"));
            }
            if source == self.primary_address {
                return Err(ConfigError::TrustedSource(
                    source,
                    "is this router's own primary address: trust the peer's",
                ));
            }
            // Both lists filter, so a trusted source outside the unicast
            // peers could never be heard: a configuration mistake that
            // would leave both routers master.
            if !self.unicast_peers.is_empty() && !self.unicast_peers.contains(&source) {
                return Err(ConfigError::TrustedSource(
                    source,
                    "is not a unicast peer, so its adverts could never be accepted",
                ));
            }
        }
        Ok(())
    }
}

/// What is wrong with a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// VRID 0.
    #[error("vrid must be 1 to 255")]
    Vrid,
    /// Priority 0 (reserved for "leaving"), or 255 without owning the address.
    #[error("priority must be 1 to 254, or 255 only when the primary address is one of the virtual addresses (address owner)")]
    Priority,
    /// Advertisement interval out of range for the version.
    #[error("advert interval: {0}")]
    Interval(&'static str),
    /// Unsupported version.
    #[error("unsupported VRRP version {0}; use 2 or 3")]
    Version(u8),
    /// Authentication not allowed or malformed.
    #[error("authentication: {0}")]
    Auth(&'static str),
    /// Virtual address list empty or too long.
    #[error("virtual addresses: {0}")]
    Addresses(&'static str),
    /// Primary address unusable.
    #[error("primary address must be a unicast address of this router on the interface")]
    PrimaryAddress,
    /// A trusted source that is not an address a peer could send from.
    #[error("trusted source {0}: {1}")]
    TrustedSource(Ipv4Addr, &'static str),
}

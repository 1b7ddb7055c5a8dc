//! Per-instance counters.

use std::collections::BTreeMap;

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Not a well-formed IPv4 datagram, or not protocol 112.
    Ip,
    /// IP TTL other than 255 (RFC 9568 §7.1: the sender is not on this link).
    Ttl,
    /// Truncated, or longer than the header announces.
    Length,
    /// Version other than the configured one (or neither 2 nor 3).
    Version,
    /// Message type other than ADVERTISEMENT.
    Type,
    /// Checksum does not verify.
    Checksum,
    /// VRID 0 or not the configured one.
    Vrid,
    /// VRRPv2 authentication type or data does not match.
    Auth,
    /// The virtual address list differs from the configured one.
    AddressList,
    /// VRRPv2 advertisement interval differs from the configured one, or a zero interval.
    Interval,
    /// Zero address count or other field that can never be valid.
    Malformed,
    /// The source is not trusted: not one of [`super::Config::trusted_sources`]
    /// or, in unicast mode, not one of the unicast peers. Under a flood a
    /// lower bound: what overflows the untrusted sources' own socket queue
    /// the kernel drops before the speaker sees it (`crate::sys` socket).
    UnknownPeer,
    /// A spoof of ourselves: the source is our own primary address (and the
    /// datagram is not an exact echo of our own advert), or one of the
    /// virtual addresses in an advert that is not the owner's (priority 255).
    OwnAddress,
    /// The peer's authenticated claim contradicts the advert from its
    /// address: priority 0 while it is not leaving, another priority, or a
    /// held advert that no claim confirmed in time
    /// (see [`super::Instance::set_peer_claim`]).
    Contradicted,
}

impl DropReason {
    /// All reasons, for printing complete tables.
    pub const ALL: [DropReason; 14] = [
        DropReason::Ip,
        DropReason::Ttl,
        DropReason::Length,
        DropReason::Version,
        DropReason::Type,
        DropReason::Checksum,
        DropReason::Vrid,
        DropReason::Auth,
        DropReason::AddressList,
        DropReason::Interval,
        DropReason::Malformed,
        DropReason::UnknownPeer,
        DropReason::OwnAddress,
        DropReason::Contradicted,
    ];
}

/// Counters of one instance. Monotonic for the life of the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Advertisements transmitted (including priority 0).
    pub adverts_sent: u64,
    /// Advertisements accepted (passed every check).
    pub adverts_received: u64,
    /// Priority-0 advertisements transmitted.
    pub priority_zero_sent: u64,
    /// Priority-0 advertisements accepted.
    pub priority_zero_received: u64,
    /// Transitions into Master.
    pub became_master: u64,
    /// Transitions into Backup.
    pub became_backup: u64,
    /// Transitions into Initialize (shutdowns).
    pub became_initialize: u64,
    /// Adverts held for the peer's next claim: each is later released,
    /// counted as a [`DropReason::Contradicted`] drop, or still held.
    #[serde(default)]
    pub adverts_held: u64,
    /// Held adverts that a claim confirmed in time and that were then acted
    /// on (also counted in `adverts_received`).
    #[serde(default)]
    pub held_released: u64,
    /// Dropped datagrams by reason.
    pub drops: BTreeMap<DropReason, u64>,
}

impl Counters {
    /// Counts one drop.
    pub fn drop(&mut self, reason: DropReason) {
        *self.drops.entry(reason).or_default() += 1;
    }

    /// Drops recorded for `reason`.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops.get(&reason).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

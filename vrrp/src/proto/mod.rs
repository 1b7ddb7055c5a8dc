//! The sans-IO VRRP state machine (RFC 9568 §6.4, RFC 3768 §6.4).
//!
//! Time is an argument to every input; outputs are pulled with
//! [`Instance::poll_event`] and [`Instance::poll_timeout`]. The machine never
//! reads a clock and never touches a socket: the driver in [`crate::sys`]
//! feeds it datagrams and timeouts and carries out its events.
//!
//! Beyond the RFC, for a pair: [`Config::trusted_sources`] drops adverts
//! from any host but the peer, and [`PeerClaim`]s (what the peer says over
//! an authenticated link) overrule adverts sent in its name; see the crate
//! documentation's trust model.

mod claim;
mod config;
mod counters;
mod instance;
#[cfg(test)]
mod tests;
mod timers;

pub use claim::PeerClaim;
pub use config::{Config, ConfigError, V3Checksum};
pub use counters::{Counters, DropReason};
pub use instance::Instance;
pub use timers::Timer;

use crate::wire::Repr;

/// RFC 9568 §6.4 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// Not running (before startup, after shutdown).
    Initialize,
    /// Monitoring the master.
    Backup,
    /// Forwarding for, and answering on, the virtual addresses.
    Master,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Initialize => "Initialize",
            State::Backup => "Backup",
            State::Master => "Master",
        })
    }
}

/// Why the state changed; logged by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    /// Startup as the address owner (priority 255).
    Owner,
    /// Startup as a non-owner.
    Startup,
    /// Master_Down_Timer fired: no advert from the master in time.
    MasterDown,
    /// The master sent priority 0 and Skew_Time passed.
    MasterLeft,
    /// Preemption of a live master with a lower priority: at once when its
    /// adverts were discarded until Master_Down_Timer fired (no preempt
    /// delay), or after the preempt delay.
    Preempt,
    /// A higher-priority (or equal priority, higher address) advert was received.
    HigherPriority,
    /// Local shutdown.
    Shutdown,
    /// Local fault ([`Instance::set_fault`]): the router stopped contending
    /// while something it depends on is down, as keepalived's FAULT state.
    Fault,
}

/// An output of the state machine, in the order the driver must act on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this advertisement (to the multicast group or the unicast peers).
    Transmit(Repr),
    /// Now master: add the virtual addresses and send gratuitous ARP.
    BecomeMaster(Reason),
    /// Now backup: remove the virtual addresses if they are held.
    BecomeBackup(Reason),
    /// Stopped: remove the virtual addresses if they are held.
    BecomeInitialize,
}

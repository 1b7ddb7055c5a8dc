//! A deterministic simulation of the whole pair, in one thread and in
//! virtual time: one seed, one run.
//!
//! # What it runs
//!
//! Two servers (and, for odd seeds, a witness), each with the real pieces
//! the daemon wires in `node::run` and `Glue`: a `vrrp::proto::Instance`,
//! a `cluster::Node` whose state machine is the real `LicenseTable` (on an
//! in-memory `Disk` that outlives a crash), and a `PairRules` fed the
//! member's facts, the speaker's status and transitions and the peer's
//! word after every wake-up, whose actions are carried out in order
//! (`host`). Switches (`switch`) talk to the VIP: a request reaches the
//! host whose gratuitous ARP was last heard, is turned into a command by
//! the real `server::request::command`, proposed, and answered once
//! applied. Time is an `Instant` base plus a per-host offset for the
//! monotonic clock, and a per-host offset for the wall clock (skew and
//! jumps); the stamps follow `server::stamp::Stamper` as the applier does
//! (it observes the pair's time in every applied entry and restored
//! snapshot).
//!
//! # Networks
//!
//! - The segment carries VRRP adverts as IPv4 datagrams to every other
//!   server (multicast), and garbage datagrams (S5).
//! - The cluster network carries raft messages and beacons between
//!   members. Each direction of each link can be cut (symmetric and
//!   one-way partitions); messages are lost, duplicated and delayed at
//!   random (so reordered).
//! - Switch traffic is TCP: reliable and in order while the connection
//!   lives; a connection belongs to one host incarnation.
//!
//! # Faults (seeded)
//!
//! Crashes (power loss) and restarts; graceful stops; lost disks (the host
//! comes back with `--rejoin`: an empty store marked rebuilding, no
//! voters); failed and torn writes (`cluster::WriteFault`: the member
//! stops on the error; a torn write's batch lands whole or not at all, as
//! redb's double commit makes it); partitions of the cluster network, with
//! or without the segment, both ways or one way; loss, duplication and
//! reordering; wall-clock skew at start and forward and backward jumps
//! (forward by minutes to 40 days, back by up to half a heartbeat
//! interval); garbage adverts and beacons; a switch asking for another
//! switch's id.
//!
//! # Invariants, after every step
//!
//! - S1: with a witness, at most one member serves, except a former
//!   leader that can commit nothing: cut off from the majority for at most
//!   two election timeouts (and a tick: check-quorum has not stepped it
//!   down yet, `node`'s module doc), or deposed (the other serving member
//!   leads in a later term a majority has reached); without a witness, two serve
//!   only while the servers are cut off from each other (or within
//!   [`HEAL_GRACE_MS`] of the heal).
//! - S2: on a serving node that has applied its whole log (and, with a
//!   witness, is not a former leader S1 lets serve beside its successor:
//!   it can commit nothing, so what the successor acknowledged is not in
//!   its table), every switch
//!   that is not waiting for an answer has at least what was acknowledged
//!   to it and not since given back. Without a witness it is not asked of
//!   acknowledgements made while the servers were cut off (or within
//!   [`HEAL_GRACE_MS`] of the heal) or while both lead alone in their own
//!   configuration (their logs diverged: the documented split brain),
//!   until a whole-state report is acknowledged again. A switch the table
//!   marked down (or removed) although it was heard within two heartbeat
//!   intervals fails the run: the table's time went wrong
//!   (`server::stamp`; counted instead with `world::Knobs::strict_time`
//!   off). One silent for longer lost its licenses as SPEC §4 says.
//! - S3: `used <= total` for every type on every replica.
//! - S4: replicas at the same applied index (same term there) hold the
//!   same table, settings included (not while both lead alone).
//! - S5: garbage datagrams and a stranger's advert are dropped and
//!   counted, garbage beacons refused, a request for another switch's id
//!   never answered with success; nothing panics.
//! - Liveness: once faults stop (everything healed and restarted), one
//!   server serves within [`LIVENESS_MS`], every switch is registered
//!   again, and the servers' tables are the same.
//!
//! # Simplified (departures from the real glue)
//!
//! - The beacons' logic is `beacon::Beacons`' own, re-stated without the
//!   transport (same encoding and claims); a claim reaches the speaker at
//!   once.
//! - Key syncs propose (or submit) every change and report the round done
//!   at once, not when the proposals are answered; settings proposals are
//!   retried after 2 s as `settings::SettingsSync` does, without its log.
//! - Trackers, notify hooks, metrics, TLS and the operator port are not
//!   modelled. The witness is a bare `Node`.
//! - Clocks run at the same rate on every host (no drift); the monotonic
//!   clocks differ by a constant offset. Time has 1 ms resolution.
//! - A switch's connect is its first request (`Register`), accepted by a
//!   host that holds the VIP; requests to a host without it are lost. A
//!   switch's ARP entry follows gratuitous ARP (the driver's plan), and
//!   after three unanswered attempts the switch asks again (its neighbour
//!   discovery): the holder answers. The switches have no keys of their
//!   own: the pool is the two servers' 16 AP each.
//! - No operator forces a takeover: a disk is lost only while both
//!   servers are voters and in sync and neither is stopping, and by
//!   default the other server does not fail while one rebuilds from it,
//!   up or down (`world::Knobs`).

mod host;
mod switch;
#[cfg(test)]
mod tests;
mod world;

pub(super) use world::Outcome;

/// After a partition between the servers heals, this long for the one
/// that served on the wrong side to learn it (S1 without a witness).
pub(super) const HEAL_GRACE_MS: u64 = 1000;

/// Once faults stop, a server serves and every switch is registered
/// again within this long.
pub(super) const LIVENESS_MS: u64 = 10_000;

//! The sans-IO member: one `RawNode`, its [`LogStore`] and the replicated
//! [`StateMachine`], driven by calls and emitting [`Output`]s.
//!
//! No clock, no sockets, no tasks: [`Node::tick`] is the only notion of time,
//! messages go out as [`Output::Send`]. The tokio driver
//! ([`crate::Member`]) and the deterministic harness both drive this type,
//! so what the harness proves is what production runs.
//!
//! By concern: this module holds the member's state, its configuration
//! and the calls a driver makes (propose, submit, read, tick, step);
//! `ready` handles raft's `Ready` (persist, send, apply, snapshots, reads),
//! `leadership` what a member does about who leads (promotion, handing
//! over, catching up, split-brain yield), and `takeover` the two-node
//! takeover as sole voter and the demotion that follows it.

use std::collections::{BTreeMap, BTreeSet};

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, Message, MessageType, Snapshot,
};
use raft::{GetEntriesContext, RawNode, StateRole, Storage as _};

use crate::logger::raft_logger;
use crate::storage::{
    hex, DiscardedEntry, DiscardedLog, DiscardedSnapshot, LogStore, StoreError, DISCARDED_FORMAT,
};
use crate::StateMachine;

mod leadership;
mod ready;
mod takeover;

/// How many discarded committed entries a yield lists in its log line; the
/// rest are in the file it names.
const YIELD_LOG_LIST: usize = 50;

/// Identifies one request of a caller until its [`Output`] comes back.
pub type Token = u64;

/// Why a proposal, read or membership change did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member is not the leader; retry on `leader` if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The member this one believes leads, if any.
        leader: Option<u64>,
    },
    /// The entry was replaced by another leader's entry at the same index
    /// (stale term), or raft refused it (leadership transfer, pending
    /// membership change, read overtaken by a new term), or a sole voter
    /// has yet to put its peer's demotion in the log (see
    /// [`Node::take_over_as_sole_voter`]). It was not applied.
    #[error("proposal dropped (stale term or refused by raft); it was not applied")]
    Dropped,
    /// The outcome cannot be known: the index was covered by a snapshot from
    /// the leader or discarded by a yield. The command may or may not be applied.
    #[error("outcome unknown: the entry was superseded by a snapshot")]
    Unknown,
    /// The member is shutting down or has stopped.
    #[error("member is shutting down")]
    ShuttingDown,
    /// No answer within the caller's deadline. The command may still be applied.
    #[error("timed out waiting for commit")]
    Timeout,
    /// The membership change is not valid for the current configuration.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
}

/// What a successful proposal produced.
#[derive(Debug)]
pub enum Applied<R> {
    /// The state machine's response to a command.
    Command(R),
    /// The configuration after a membership change.
    Conf(ConfState),
}

/// Something the driver must do or deliver.
#[derive(Debug)]
pub enum Output<R> {
    /// Send this raft message to `msg.to`.
    Send(Message),
    /// A proposal finished.
    Proposed(Token, Result<Applied<R>, ProposeError>),
    /// A read may now run against the state machine (`Ok`), or failed.
    Read(Token, Result<(), ProposeError>),
    /// Split brain healed and this member lost: its log was discarded,
    /// after it was kept where its disk keeps such things
    /// ([`DiscardedLog`]).
    Yielded {
        /// The member whose log is kept.
        winner: u64,
        /// This member's commit index when it discarded its log.
        discarded_committed: u64,
        /// Where the discarded log was kept (a file, for a redb disk).
        kept: String,
    },
}

/// Tunables of a member.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's raft id (non-zero).
    pub id: u64,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Take a snapshot and compact the log after this many applied entries.
    pub snapshot_interval: u64,
    /// A witness votes and stores the log but never campaigns or leads.
    pub witness: bool,
    /// Largest append message, in bytes.
    pub max_size_per_msg: u64,
    /// In-flight append messages per follower.
    pub max_inflight_msgs: usize,
    /// Draw randomized election timeouts from this seed instead of raft-rs's
    /// thread RNG, so a simulation replays exactly. `None` in production.
    pub timeout_seed: Option<u64>,
}

impl NodeConfig {
    /// Defaults for member `id`: 10-tick elections, 3-tick heartbeats, a
    /// snapshot every 10,000 entries.
    pub fn new(id: u64) -> NodeConfig {
        NodeConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 3,
            snapshot_interval: 10_000,
            witness: false,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            timeout_seed: None,
        }
    }
}

/// Why a member cannot start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The log store failed or holds a log that cannot be trusted.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state machine refused the stored snapshot.
    #[error(transparent)]
    Snapshot(#[from] crate::SnapshotError),
    /// raft-rs refused the configuration or the stored state.
    #[error("raft: {0}")]
    Raft(String),
    /// A committed entry cannot be decoded by this build.
    #[error("committed entry {index} cannot be decoded: {reason}")]
    Undecodable {
        /// The entry's index.
        index: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// No thread could be started for the member
    /// ([`crate::Member::start_on_own_thread`]).
    #[error("cannot start the raft member's thread: {0}")]
    Thread(std::io::Error),
}

/// ReadIndex context of the in-sync probe (real reads use 8-byte tokens).
const SYNC_PROBE: &[u8] = b"vipool-sync-probe";

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Serializes a command as the log stores it.
pub(crate) fn encode_command<C: serde::Serialize>(cmd: &C) -> Vec<u8> {
    bincode::serde::encode_to_vec(cmd, bincode_config()).expect("commands serialize")
}

/// The sans-IO member.
pub struct Node<S: StateMachine> {
    cfg: NodeConfig,
    /// Warnings a peer's messages can repeat (one per heartbeat) are
    /// written once a minute per cause.
    log: crate::ratelog::RateLimiter,
    raw: RawNode<LogStore>,
    sm: S,
    /// The state machine as it was before anything was applied: what a
    /// yielding member goes back to before it installs its peer's snapshot.
    initial_state: Vec<u8>,
    /// Pending proposals by index: (term they were proposed in, token).
    proposals: BTreeMap<u64, (u64, Token)>,
    /// Reads sent to raft, waiting for their read index.
    reads_asked: BTreeMap<Token, u64>,
    /// Reads a fresh leader cannot serve until it commits in its term.
    reads_deferred: Vec<Token>,
    /// Reads with a known read index, waiting for apply to reach it.
    reads_ready: Vec<(u64, Token)>,
    /// Learners to promote to voter once caught up (two-node rejoin).
    promote: BTreeSet<u64>,
    /// The tick at which each member was last heard from.
    heard: BTreeMap<u64, u64>,
    /// For a learner to promote: since which tick it has answered every
    /// heartbeat, and the commit index at that tick.
    steady_since: BTreeMap<u64, (u64, u64)>,
    preferred_leader: Option<u64>,
    /// This member led, or reached its leader's commit index, and no leader
    /// has since shown it that it lacks committed entries: its log is
    /// complete enough to take over. See [`Node::in_sync`] for the rule.
    in_sync: bool,
    /// A learner that must be told, by a conf-change entry in the log, that
    /// it is one, before this member (leading as sole voter) appends any
    /// command: see [`Node::demote_if_needed`].
    demotion: Option<u64>,
    /// The last term in which this member led (and checked for a demotion
    /// to put in the log).
    lead_term: u64,
    /// A leader's commit index this member must reach to be in sync again
    /// (learned from a ReadIndex probe or from an append that showed it
    /// behind); in sync once our commit reaches it.
    sync_target: Option<u64>,
    /// The (term, leader) that `in_sync` and `sync_target` are about: a
    /// follower judged by one leader is not in sync with the next until
    /// that one's append or probe answer says so (see
    /// [`Node::judged_by_current_leader`]).
    judged_by: (u64, u64),
    /// The demotion this member last put in the log while leading as sole
    /// voter: (learner, index). Until it is committed, the learner is sent
    /// no commit index (see [`Node::holds_back`]).
    demotion_at: Option<(u64, u64)>,
    /// The leader's snapshot this member was last handed to restore
    /// (sender, term, index): the configuration it carries is the leader's
    /// own history, never a split brain (see [`Node::split_brain`]).
    snapshot_from: Option<(u64, u64, u64)>,
    /// A witness leading to repair: the voter it last handed leadership
    /// to (the next hand-over tries another first).
    handed_to: Option<u64>,
    ticks: u64,
    last_term: u64,
    /// (term, role, leader) when the election timeout was last re-drawn.
    timeout_key: (u64, StateRole, u64),
    rng: u64,
    out: Vec<Output<S::Response>>,
}

impl<S: StateMachine> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.cfg.id)
            .field("role", &self.raw.raft.state)
            .field("term", &self.raw.raft.term)
            .field("commit", &self.raw.raft.raft_log.committed)
            .finish()
    }
}

impl<S: StateMachine> Node<S> {
    /// Starts a member on `store`, restoring `sm` from the store's snapshot.
    ///
    /// A brand-new store is bootstrapped with `initial_voters` (pass the same
    /// list to every founding member; an empty list for a member that will be
    /// added later as a learner). A store that already holds a log ignores it.
    ///
    /// # Errors
    /// The snapshot cannot be restored, or raft refuses the stored state.
    pub fn new(
        cfg: NodeConfig,
        mut store: LogStore,
        mut sm: S,
        initial_voters: &[u64],
    ) -> Result<Self, NodeError> {
        let initial_state = sm.snapshot();
        if store.is_empty() && !initial_voters.is_empty() {
            store.bootstrap(initial_voters, initial_state.clone())?;
            store.flush()?;
        }
        let snap = store.snapshot_ref();
        let applied = snap.get_metadata().index;
        if applied > 0 {
            sm.restore(snap.get_data())?;
        }
        let raw = Self::raw_node(&cfg, store, applied)?;
        let last_term = raw.raft.term;
        Ok(Node {
            log: crate::ratelog::RateLimiter::default(),
            cfg,
            raw,
            sm,
            initial_state,
            proposals: BTreeMap::new(),
            reads_asked: BTreeMap::new(),
            reads_deferred: Vec::new(),
            reads_ready: Vec::new(),
            promote: BTreeSet::new(),
            heard: BTreeMap::new(),
            steady_since: BTreeMap::new(),
            preferred_leader: None,
            in_sync: false,
            demotion: None,
            lead_term: 0,
            sync_target: None,
            judged_by: (0, 0),
            demotion_at: None,
            snapshot_from: None,
            handed_to: None,
            ticks: 0,
            last_term,
            timeout_key: (u64::MAX, StateRole::Follower, 0),
            rng: 0,
            out: Vec::new(),
        }
        .with_rng())
    }

    fn with_rng(mut self) -> Self {
        if let Some(seed) = self.cfg.timeout_seed {
            self.rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        self.derandomize();
        self
    }

    /// raft-rs re-draws the election timeout from the thread RNG whenever
    /// the role or term changes; with a seed, replace that draw with ours.
    fn derandomize(&mut self) {
        if self.cfg.timeout_seed.is_none() {
            return;
        }
        let r = &self.raw.raft;
        let key = (r.term, r.state, r.leader_id);
        if key == self.timeout_key {
            return;
        }
        self.timeout_key = key;
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let draw = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let base = self.cfg.election_tick;
        let t = base + (draw % base as u64) as usize;
        self.raw.raft.set_randomized_election_timeout(t);
    }

    fn raw_node(cfg: &NodeConfig, store: LogStore, applied: u64) -> Result<RawNode<LogStore>, NodeError> {
        let config = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied,
            max_size_per_msg: cfg.max_size_per_msg,
            max_inflight_msgs: cfg.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        RawNode::new(&config, store, &raft_logger(cfg.id)).map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// The replicated state machine (for reads the driver was told to run).
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The log store (for inspection).
    pub fn store(&self) -> &LogStore {
        self.raw.store()
    }

    /// Current role.
    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            id => Some(id),
        }
    }

    /// Highest committed index.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Highest applied index.
    pub fn applied_index(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// Index of the last entry of this member's log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// As leader, how far each other member's log is known to match this
    /// one: `(member, matched index)`, by member id. Empty on a member
    /// that does not lead: only the leader tracks its followers.
    pub fn progress(&self) -> Vec<(u64, u64)> {
        if self.raw.raft.state != StateRole::Leader {
            return Vec::new();
        }
        let me = self.id();
        let mut progress: Vec<(u64, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, p)| (*id, p.matched))
            .collect();
        progress.sort_unstable();
        progress
    }

    /// Whether this member's log is known to hold everything its leader had
    /// committed (what [`Node::take_over_as_sole_voter`] requires).
    ///
    /// False at start. It becomes true when this member leads, when an
    /// append from its leader brings its commit index to the leader's, or
    /// when its commit reaches the leader's commit index learned by a
    /// ReadIndex probe (sent while not in sync and idle), or when the only
    /// other voter of a pair answers a vote request saying it holds no log
    /// (it lost its disk or yielded): nothing committed that this member
    /// lacks survives anywhere.
    ///
    /// It goes back to false when the leader shows this member that it
    /// lacks entries the leader has committed, which happens only when the
    /// leader has to repair its log, never in steady replication:
    ///
    /// - an append from the leader leaves our last index below the leader's
    ///   commit (we rejected it: our log lacks or disagrees with the entry it
    ///   follows, say after a partition, while the leader committed past the
    ///   end of our log);
    /// - an append we accepted leaves our commit below the leader's: the
    ///   leader is resending a backlog of committed entries larger than one
    ///   message (raft commits a follower only as far as the entries it was
    ///   sent), which also catches a former leader whose stale tail the new
    ///   leader is overwriting;
    /// - the leader sends a snapshot that covers entries past our commit.
    ///
    /// A follower streaming appends in order is never behind by this rule:
    /// each append carries every entry up to the leader's last, which is at
    /// or past the leader's commit. Only a follower so slow that the leader
    /// holds back entries for it (its in-flight window,
    /// [`NodeConfig::max_inflight_msgs`], is full, or the backlog exceeds
    /// [`NodeConfig::max_size_per_msg`]) while the others commit them is
    /// behind, and it is. A rejected append whose commit our log
    /// reaches (entries lost in flight, in a pair where commit needs our ack)
    /// changes nothing. After a split-brain yield it is false.
    ///
    /// In sync is about the leader this member follows: following a new
    /// leader, or the same one in a new term, it is not in sync until that
    /// leader's append (or answer to a probe) says so. A leader's commit
    /// index in a message is a floor of what it has committed, enough from
    /// a leader that needs our acknowledgement to commit; a sole voter goes
    /// on committing alone, so it sends its learner no commit index until
    /// the learner's demotion is committed (a leader that takes over starts
    /// a new term for this).
    ///
    /// It cannot see what it has not been told: a member cut off from its
    /// leader stays in sync until the first append after the partition heals.
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// The current configuration.
    pub fn conf_state(&self) -> ConfState {
        self.raw.store().conf().0.clone()
    }

    /// Takes what the driver must do.
    #[must_use]
    pub fn drain_outputs(&mut self) -> Vec<Output<S::Response>> {
        std::mem::take(&mut self.out)
    }

    /// Whether there is raft work for [`Node::process_ready`].
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Proposes a command under `token`; the result arrives as
    /// [`Output::Proposed`] once the entry is applied (or known lost).
    ///
    /// # Errors
    /// Not the leader, or raft refused the proposal right away.
    pub fn propose(&mut self, token: Token, command: &S::Command) -> Result<(), ProposeError> {
        self.check_leader()?;
        self.check_demoted()?;
        let data = encode_command(command);
        self.raw
            .propose(vec![], data)
            .map_err(|_| ProposeError::Dropped)?;
        self.track(token);
        Ok(())
    }

    /// Gets `command` into the log without waiting for it, from any member
    /// but a witness: the leader appends it; a follower (or learner) hands
    /// it to raft, which forwards it to the leader it knows.
    ///
    /// Nothing confirms it and nothing reports its fate: the forwarded
    /// message can be lost, the leader can refuse it (leadership transfer,
    /// or it lost its lead) or lose the entry to a newer term. The caller
    /// looks for the command's effect in the applied state machine and
    /// submits again until it sees it, so the command must be idempotent:
    /// applying it twice (both submissions can commit) must leave the same
    /// state as applying it once.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] (with no leader) on a witness or when no
    /// leader is known; [`ProposeError::Dropped`] when the leader refuses it
    /// right away (leadership transfer in progress, or a takeover's demotion
    /// not yet in the log).
    pub fn submit(&mut self, command: &S::Command) -> Result<(), ProposeError> {
        if self.cfg.witness {
            // A witness takes no writes, its own or forwarded.
            return Err(ProposeError::NotLeader { leader: None });
        }
        let leading = self.raw.raft.state == StateRole::Leader;
        let leader = self.leader();
        if !leading && leader.is_none() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        if leading {
            self.check_demoted()?;
        }
        self.raw
            .propose(vec![], encode_command(command))
            .map_err(|_| ProposeError::Dropped)?;
        if leading {
            tracing::debug!(member = self.cfg.id, "submitted command appended");
        } else {
            tracing::debug!(
                member = self.cfg.id,
                leader,
                "submitted command forwarded to the leader"
            );
        }
        Ok(())
    }

    /// Why a proposal forwarded by a peer must not reach raft, if it must
    /// not. raft-rs appends whatever a peer forwards (and panics on an empty
    /// one, or moves to the term it carries), and a committed entry this
    /// build cannot decode stops every member: only commands of ours, from a
    /// member of the configuration, get through.
    fn refuse_forwarded(&self, msg: &Message) -> Option<&'static str> {
        if self.cfg.witness {
            // Neither appended (a witness that leads only repairs) nor
            // passed on to the leader.
            return Some("a witness takes no writes");
        }
        let cs = self.raw.store().conf().0;
        let member = [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next]
            .iter()
            .any(|ids| ids.contains(&msg.from));
        if msg.from == self.cfg.id || !member {
            return Some("the sender is not a member of the configuration");
        }
        if msg.term != 0 {
            return Some("a forwarded proposal carries no term");
        }
        if msg.entries.is_empty() {
            return Some("no entries");
        }
        let commands = msg.entries.iter().all(|e| {
            e.get_entry_type() == EntryType::EntryNormal
                && !e.data.is_empty()
                && bincode::serde::decode_from_slice::<S::Command, _>(&e.data, bincode_config()).is_ok()
        });
        if !commands {
            return Some("an entry is not a command this build can apply");
        }
        None
    }

    /// Proposes a membership change: one change is applied directly, several
    /// go through joint consensus (entered and left automatically).
    ///
    /// # Errors
    /// Not the leader, or raft refused (another change is still pending).
    pub fn propose_membership(
        &mut self,
        token: Token,
        changes: &[(ConfChangeType, u64)],
    ) -> Result<(), ProposeError> {
        self.check_leader()?;
        self.check_demoted()?;
        let cc = conf_change(changes);
        if self.raw.raft.pending_conf_index > self.applied_index() {
            return Err(ProposeError::Dropped);
        }
        self.raw.propose_conf_change(vec![], cc).map_err(|e| match e {
            raft::Error::ProposalDropped => ProposeError::Dropped,
            other => ProposeError::InvalidConfChange(other.to_string()),
        })?;
        self.track(token);
        Ok(())
    }

    fn check_leader(&self) -> Result<(), ProposeError> {
        // A witness leads only to repair a server's log, never to serve.
        if self.cfg.witness {
            return Err(ProposeError::NotLeader { leader: None });
        }
        if self.raw.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        Ok(())
    }

    fn track(&mut self, token: Token) {
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        if let Some((_, old)) = self.proposals.insert(index, (term, token)) {
            // Only possible if an older entry at this index was truncated
            // before it was applied: that one is gone.
            self.out.push(Output::Proposed(old, Err(ProposeError::Dropped)));
        }
    }

    /// Asks for a linearizable read (ReadIndex). [`Output::Read`] says when
    /// the state machine has caught up with the read index.
    ///
    /// # Errors
    /// No leader is known.
    pub fn read(&mut self, token: Token) -> Result<(), ProposeError> {
        if self.leader().is_none() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        if self.raw.raft.state == StateRole::Leader && !self.raw.raft.commit_to_current_term() {
            // raft-rs drops such reads silently; keep it until the leader's
            // first entry commits.
            self.reads_deferred.push(token);
            return Ok(());
        }
        self.reads_asked.insert(token, self.raw.raft.term);
        self.raw.read_index(token.to_be_bytes().to_vec());
        Ok(())
    }

    /// Moves leadership to `to` (if this member leads).
    pub fn transfer_leader(&mut self, to: u64) {
        if self.raw.raft.state == StateRole::Leader && to != self.cfg.id {
            self.raw.transfer_leader(to);
        }
    }

    /// Names the member that should lead; the leader hands over once it is
    /// caught up: at once if it is, else at a tick once it is. `None` lets
    /// raft elect freely.
    pub fn set_preferred_leader(&mut self, id: Option<u64>) {
        let changed = self.preferred_leader != id;
        self.preferred_leader = id;
        // Not at the next tick (up to a tick later): the member named
        // holds the VIP, or is about to, and holds its clients' requests
        // until it leads.
        if changed && self.raw.raft.state == StateRole::Leader && !self.cfg.witness {
            self.maybe_hand_over();
        }
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if self.cfg.witness && self.raw.raft.state != StateRole::Leader {
            // A witness must notice the leader is gone (so it grants votes
            // outside the lease) but must never campaign: count up to the
            // election timeout and stop there instead of calling raft's tick,
            // which would fire MsgHup.
            let r = &mut self.raw.raft;
            r.election_elapsed = (r.election_elapsed + 1).min(r.election_timeout());
            return;
        }
        self.raw.tick();
        self.derandomize();
        self.ticks += 1;
        if !self.in_sync
            && self.sync_target.is_none()
            && self.raw.raft.state == StateRole::Follower
            && self.leader().is_some()
            && self.ticks.is_multiple_of(self.cfg.heartbeat_tick.max(1) as u64)
        {
            // Ask the leader for its commit index (ReadIndex): an idle
            // cluster sends no appends that would tell us.
            self.raw.read_index(SYNC_PROBE.to_vec());
        }
        if self.raw.raft.state == StateRole::Leader {
            if self.cfg.witness {
                self.witness_hand_over();
                return;
            }
            self.demote_if_needed();
            self.maybe_promote();
            self.maybe_hand_over();
        }
    }

    /// Delivers a raft message from a peer.
    ///
    /// # Errors
    /// A yield (split-brain heal) could not rewrite the store.
    pub fn step(&mut self, msg: Message) -> Result<(), NodeError> {
        if msg.from != 0 && msg.from != self.cfg.id {
            self.heard.insert(msg.from, self.ticks);
        }
        if msg.get_msg_type() == MessageType::MsgPropose {
            if let Some(why) = self.refuse_forwarded(&msg) {
                tracing::debug!(
                    member = self.cfg.id,
                    from = msg.from,
                    "forwarded proposal dropped: {why}"
                );
                return Ok(());
            }
            if self.check_demoted().is_err() {
                // The submitter retries (see `submit`).
                tracing::debug!(
                    member = self.cfg.id,
                    from = msg.from,
                    "forwarded proposal dropped: a demotion is not yet in the log"
                );
                return Ok(());
            }
            tracing::debug!(
                member = self.cfg.id,
                from = msg.from,
                entries = msg.entries.len(),
                "forwarded proposal received"
            );
        }
        if self.cfg.witness && msg.get_msg_type() == MessageType::MsgTimeoutNow {
            crate::warn_limited!(
                self.log,
                "witness transfer",
                member = self.cfg.id,
                from = msg.from,
                "witness ignores a leadership transfer"
            );
            return Ok(());
        }
        if matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && self.raw.store().conf().0 == &ConfState::default()
        {
            // A member with no configuration (new, or rebuilding after a
            // yield or a lost disk) has no vote to give: it may have voted
            // in this term before it lost its state. It says so, and that
            // it holds no log (commit 0): a peer that has the log learns
            // that nothing it lacks survives here (see `peer_holds_no_log`).
            self.out.push(Output::Send(no_log_answer(&msg, self.cfg.id)));
            return Ok(());
        }
        if self.peer_holds_no_log(&msg) {
            // Our own answer (above) from the peer: not a vote raft counts.
            return Ok(());
        }
        let mut msg = msg;
        let last = self.raw.raft.raft_log.last_index();
        if msg.get_msg_type() == MessageType::MsgHeartbeat && msg.commit > last {
            // The leader believes we hold entries we do not: this member
            // lost its disk. raft-rs would panic; refuse the commit instead
            // and wait to be removed and re-added.
            crate::warn_limited!(
                self.log,
                "commit past log",
                member = self.cfg.id,
                leader = msg.from,
                commit = msg.commit,
                last,
                "leader's commit is past our log: was this member's store lost?"
            );
            msg.commit = last;
        }
        if self.split_brain(&msg) {
            let me = (self.raw.raft.term, std::cmp::Reverse(self.cfg.id));
            let them = (msg.term, std::cmp::Reverse(msg.from));
            if them > me {
                return self.yield_to(msg.from, msg.term);
            }
            // We win; the loser yields when it hears from us.
            return Ok(());
        }
        self.forget_lost_progress(&msg);
        let report = self.leader_report(&msg);
        if let Some(LeaderReport {
            from,
            term,
            kind: ReportKind::Snapshot {
                restores: true,
                index,
            },
            ..
        }) = report
        {
            self.snapshot_from = Some((from, term, index));
        }
        let repair = self.witness_must_repair(&msg);
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(member = self.cfg.id, "raft ignored a message: {e}");
        }
        if repair {
            // The only server left asks for votes with a log shorter than
            // ours: raft rightly refuses it, and nobody else can lead. Lead
            // just long enough to bring it up to date, then hand over
            // (see `tick`). Without this a pair plus witness could not fail
            // over after the leader committed writes only the witness holds.
            crate::warn_limited!(
                self.log,
                "witness repair",
                member = self.cfg.id,
                "witness campaigns to repair a server whose log is behind; it hands over once caught up"
            );
            if let Err(e) = self.raw.campaign() {
                tracing::debug!(member = self.cfg.id, "witness campaign refused: {e}");
            }
        }
        if let Some(r) = report {
            self.judge_sync(r);
        }
        self.derandomize();
        Ok(())
    }

    /// Reports that `id` cannot be reached (the transport's view).
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Reports whether a snapshot message to `to` was handed to the network
    /// (`delivered`) or lost; raft pauses replication to `to` until told.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// Fails everything pending with [`ProposeError::ShuttingDown`].
    pub fn shutdown(&mut self) {
        for (_, (_, tok)) in std::mem::take(&mut self.proposals) {
            self.out
                .push(Output::Proposed(tok, Err(ProposeError::ShuttingDown)));
        }
        self.fail_reads(ProposeError::ShuttingDown);
    }

    /// The term of the entry at `index`, if this member still has it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.raw.store().term(index).ok()
    }
}

/// Why [`Node::take_over_as_sole_voter`] refused.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// A witness never leads.
    #[error("a witness cannot take over")]
    Witness,
    /// A membership change is in progress (joint configuration).
    #[error("cannot take over during a joint configuration")]
    Joint,
    /// This member is, or is being made, a learner: its peer led alone and
    /// may hold acknowledged writes this member lacks. Taking over would lose them.
    #[error("this member is a learner of a peer that led alone; taking over could lose its writes")]
    Learner,
    /// This member has not been shown to hold everything its peer committed
    /// (since it started, or since a leader showed it behind): the peer may
    /// have led alone while it was away. Use
    /// [`Node::force_take_over_as_sole_voter`] if the peer is gone for good.
    #[error(
        "not in sync with the peer (since start, or behind since): its log may lack acknowledged writes"
    )]
    NotInSync,
    /// This member has just voted for its peer (in the current term, within
    /// an election timeout, no leader heard since): the peer may lead
    /// already. Asked again once raft hears the leader or the vote expires.
    #[error("voted for member {0} moments ago: it may be leading; not taking over")]
    VotedForPeer(u64),
    /// Takeover is for a pair: this configuration is not two voters including us.
    #[error("takeover needs exactly two voters including this member, have {0:?}")]
    NotTwoVoters(Vec<u64>),
    /// The member failed while taking over.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A leader's append or snapshot, as seen before raft handles it.
#[derive(Debug, Clone, Copy)]
struct LeaderReport {
    from: u64,
    term: u64,
    /// The leader's commit index when it sent the message (appends only).
    commit: u64,
    kind: ReportKind,
}

#[derive(Debug, Clone, Copy)]
enum ReportKind {
    /// Whether our log held the entry the appended ones follow.
    Append { accepted: bool },
    /// Whether raft replaces our log with the snapshot, at `index`.
    Snapshot { restores: bool, index: u64 },
}

/// Context of [`no_log_answer`]: raft-rs sets none on a vote response.
/// (Its commit index alone says nothing: raft-rs refuses a pre-vote from
/// a lower term with commit 0 whatever its log.)
const NO_LOG: &[u8] = b"vipool-no-log";

/// The answer of a member that holds no log to a (pre-)vote request: a
/// refusal, commit index 0, marked [`NO_LOG`]. Never handed to raft on the
/// other side (see `Node::peer_holds_no_log`).
fn no_log_answer(request: &Message, me: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(match request.get_msg_type() {
        MessageType::MsgRequestVote => MessageType::MsgRequestVoteResponse,
        _ => MessageType::MsgRequestPreVoteResponse,
    });
    m.to = request.from;
    m.from = me;
    m.term = request.term;
    m.reject = true;
    m.commit = 0;
    m.commit_term = 0;
    m.context = NO_LOG.to_vec().into();
    m
}

/// An entry as an operator reads it: the state machine's description of
/// its command, or the membership change.
fn describe_entry<S: StateMachine>(e: &Entry) -> String {
    let conf = |cc: Result<ConfChangeV2, protobuf::ProtobufError>| match cc {
        Ok(cc) => {
            let changes: Vec<String> = cc
                .get_changes()
                .iter()
                .map(|c| format!("{:?} {}", c.get_change_type(), c.node_id))
                .collect();
            format!("membership change: {}", changes.join(", "))
        }
        Err(err) => format!("(membership change that cannot be decoded: {err})"),
    };
    match e.get_entry_type() {
        EntryType::EntryNormal if e.data.is_empty() => "(empty entry of a new leader)".into(),
        EntryType::EntryNormal => {
            match bincode::serde::decode_from_slice::<S::Command, _>(&e.data, bincode_config()) {
                Ok((cmd, _)) => S::describe(&cmd),
                Err(err) => format!("(command that cannot be decoded: {err})"),
            }
        }
        EntryType::EntryConfChange => {
            conf(ConfChange::parse_from_bytes(&e.data).map(raft_proto::ConfChangeI::into_v2))
        }
        EntryType::EntryConfChangeV2 => conf(ConfChangeV2::parse_from_bytes(&e.data)),
    }
}

fn conf_change(changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.set_changes(
        changes
            .iter()
            .map(|&(ty, id)| raft_proto::new_conf_change_single(id, ty))
            .collect::<Vec<ConfChangeSingle>>()
            .into(),
    );
    if changes.len() > 1 {
        cc.set_transition(ConfChangeTransition::Auto);
    }
    cc
}

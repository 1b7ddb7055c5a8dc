//! The sans-IO member: one `RawNode`, its [`LogStore`] and the replicated
//! [`StateMachine`], driven by calls and emitting [`Output`]s.
//!
//! No clock, no sockets, no tasks: [`Node::tick`] is the only notion of time,
//! messages go out as [`Output::Send`]. The tokio driver
//! ([`crate::Member`]) and the deterministic harness both drive this type,
//! so what the harness proves is what production runs.

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
    /// ReadIndex probe (sent while not in sync and idle).
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

    /// Refuses a new entry while a demotion waits to be appended (see
    /// [`Node::demote_if_needed`]). Refused rather than queued: the wait
    /// ends within the same `process_ready` that applies the log's tail,
    /// or when this member leads again, and callers already retry
    /// [`ProposeError::Dropped`].
    fn check_demoted(&mut self) -> Result<(), ProposeError> {
        self.demote_if_needed();
        if self.demotion.is_some() && self.raw.raft.state == StateRole::Leader {
            return Err(ProposeError::Dropped);
        }
        Ok(())
    }

    /// Puts in the log, as soon as raft takes it, the change that tells a
    /// learner it is one, while this member leads as sole voter: after a
    /// takeover (its peer believes it is still one of two voters) and at
    /// the start of each term it leads that way with a single learner
    /// (after a restart, the takeover's entry may not have been written; a
    /// learner that already knows gets a no-op). Until it is in the log
    /// this member appends no command and no other change.
    ///
    /// Otherwise the peer, returning, catches up by appends alone, still
    /// believes it is a voter, and reaches in sync; the sole voter commits
    /// more writes alone and dies before sending them; the peer takes over
    /// without them. A demotion in the log makes it refuse
    /// ([`TakeoverError::Learner`]).
    ///
    /// A fresh raft-rs leader refuses any conf change until it has applied
    /// its whole log (it guesses there may be one unapplied, rather than
    /// look), and refuses it by appending an empty entry in its place while
    /// `propose_conf_change` returns `Ok`. So: look at the unapplied tail;
    /// with no conf change there, correct raft's guess (what it would find
    /// if it looked) and the demotion goes in right after the new term's
    /// empty entry, before anything this member commits alone is sent to
    /// the peer. With one, wait until it is applied (proposals refused).
    fn demote_if_needed(&mut self) {
        let r = &self.raw.raft;
        if self.cfg.witness || r.state != StateRole::Leader {
            return;
        }
        let cs = self.conf_state();
        let sole = cs.voters == [self.cfg.id] && cs.voters_outgoing.is_empty();
        if r.term != self.lead_term {
            self.lead_term = r.term;
            if sole && cs.learners.len() == 1 && self.demotion.is_none() {
                self.demotion = Some(cs.learners[0]);
            }
        }
        let Some(learner) = self.demotion else { return };
        if !sole || !cs.learners.contains(&learner) {
            // Promoted back, or the configuration changed otherwise
            // (snapshot, yield): nothing left to tell.
            self.demotion = None;
            return;
        }
        let applied = self.applied_index();
        if self.raw.raft.pending_conf_index > applied && !self.conf_change_after(applied) {
            self.raw.raft.pending_conf_index = applied;
        }
        if self.raw.raft.pending_conf_index > applied {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let cc = conf_change(&[(ConfChangeType::AddLearnerNode, learner)]);
        let proposed = self.raw.propose_conf_change(vec![], cc);
        // raft moves its pending index to the entry only if it appended the
        // change itself, not an empty entry in its place.
        if proposed.is_ok() && self.raw.raft.pending_conf_index > last {
            tracing::info!(
                member = self.cfg.id,
                learner,
                index = self.raw.raft.pending_conf_index,
                "demotion of {learner} to learner appended to the log"
            );
            self.demotion = None;
        } else {
            tracing::debug!(
                member = self.cfg.id,
                learner,
                "demotion not appended yet ({proposed:?}); retried"
            );
        }
    }

    /// Whether the log holds a conf change past `index` (conservatively yes
    /// if it cannot be read).
    fn conf_change_after(&self, index: u64) -> bool {
        let log = &self.raw.raft.raft_log;
        if log.last_index() <= index {
            return false;
        }
        log.entries(index + 1, None, GetEntriesContext::empty(false))
            .map_or(true, |es| {
                es.iter().any(|e| e.get_entry_type() != EntryType::EntryNormal)
            })
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
    /// caught up. `None` lets raft elect freely.
    pub fn set_preferred_leader(&mut self, id: Option<u64>) {
        self.preferred_leader = id;
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

    /// A witness leads only to repair a server's log: as soon as a voter
    /// holds everything it has, leadership goes there.
    fn witness_hand_over(&mut self) {
        if self.raw.raft.lead_transferee.is_some() {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let me = self.cfg.id;
        let target = self
            .conf_state()
            .voters
            .iter()
            .copied()
            .find(|&id| id != me && self.raw.raft.prs().get(id).is_some_and(|p| p.matched == last));
        if let Some(to) = target {
            tracing::info!(member = me, to, "witness hands leadership to a caught-up server");
            self.raw.transfer_leader(to);
        }
    }

    fn maybe_promote(&mut self) {
        let cs = self.conf_state();
        self.promote.retain(|id| !cs.voters.contains(id));
        // A sole voter (after a takeover, possibly restarted since) always
        // wants its learner back as a voter: it has no redundancy without.
        let sole = cs.voters == [self.cfg.id];
        let Some(&id) = cs.learners.iter().find(|id| sole || self.promote.contains(id)) else {
            return;
        };
        // Caught up is not enough: a member that is stopping (its graceful
        // stop hands leadership here, then exits) is caught up for the few
        // milliseconds it still answers, and promoting it then leaves this
        // member with a dead voter it needs for every commit. Promote a
        // learner that has answered every heartbeat for an election timeout
        // and by then holds everything committed when that window began: it
        // keeps up. (Caught up to the last commit flickers under load, with
        // entries always in flight, so it is not asked for.)
        let hb = self.cfg.heartbeat_tick.max(1) as u64;
        let heard = self
            .heard
            .get(&id)
            .is_some_and(|&at| self.ticks.saturating_sub(at) <= hb + 1);
        if !heard {
            self.steady_since.remove(&id);
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let (since, mark) = *self.steady_since.entry(id).or_insert((self.ticks, committed));
        if self.ticks - since < self.cfg.election_tick as u64 {
            return;
        }
        let matched = self.raw.raft.prs().get(id).map_or(0, |p| p.matched);
        if matched < mark {
            // Not keeping up yet: judge the next window.
            self.steady_since.insert(id, (self.ticks, committed));
            return;
        }
        if self.demotion.is_some() || self.raw.raft.pending_conf_index > self.applied_index() {
            return;
        }
        self.steady_since.remove(&id);
        tracing::info!(
            member = self.cfg.id,
            learner = id,
            "learner caught up: promoting to voter"
        );
        let cc = conf_change(&[(ConfChangeType::AddNode, id)]);
        if let Err(e) = self.raw.propose_conf_change(vec![], cc) {
            tracing::debug!(member = self.cfg.id, "promotion of {id} not proposed: {e}");
        }
    }

    fn maybe_hand_over(&mut self) {
        let Some(p) = self.preferred_leader else { return };
        if p == self.cfg.id || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if self.conf_state().voters.contains(&p)
            && self
                .raw
                .raft
                .prs()
                .get(p)
                .is_some_and(|pr| pr.matched == self.raw.raft.raft_log.last_index())
        {
            tracing::info!(
                member = self.cfg.id,
                to = p,
                "handing leadership to the preferred member"
            );
            self.raw.transfer_leader(p);
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
            // in this term before it lost its state.
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
        let report = self.leader_report(&msg);
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

    /// What a leader's append or snapshot can tell about our log, noted
    /// before raft handles it.
    fn leader_report(&self, msg: &Message) -> Option<LeaderReport> {
        let log = &self.raw.raft.raft_log;
        let kind = match msg.get_msg_type() {
            // raft appends only if our log holds the entry the new ones
            // follow; below our commit it answers without looking.
            MessageType::MsgAppend => ReportKind::Append {
                accepted: msg.index >= log.committed && log.match_term(msg.index, msg.log_term),
            },
            MessageType::MsgSnapshot => {
                // raft restores it only if our log lacks its last entry
                // (otherwise it just moves our commit there).
                let meta = msg.get_snapshot().get_metadata();
                ReportKind::Snapshot {
                    restores: meta.index > log.committed && !log.match_term(meta.index, meta.term),
                }
            }
            _ => return None,
        };
        Some(LeaderReport {
            from: msg.from,
            term: msg.term,
            commit: msg.commit,
            kind,
        })
    }

    /// Applies the in-sync rule (see [`Node::in_sync`]) to a message raft
    /// has just handled.
    fn judge_sync(&mut self, r: LeaderReport) {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader || raft.leader_id != r.from || raft.term != r.term {
            // Not from the leader we follow (stale term, or ignored).
            return;
        }
        let (commit, last) = (raft.raft_log.committed, raft.raft_log.last_index());
        match r.kind {
            ReportKind::Append { accepted } => {
                if commit >= r.commit {
                    // Our commit reached the leader's (capped by what it
                    // sent): we hold all it had committed.
                    self.set_in_sync();
                } else if accepted || last < r.commit {
                    self.fall_behind(Some(r.commit), last);
                }
            }
            // We lacked entries the leader had compacted away. The snapshot
            // may be far behind the leader's commit, which it does not
            // carry: the next append or a probe tells when we are back.
            ReportKind::Snapshot { restores: true } => self.fall_behind(None, last),
            ReportKind::Snapshot { restores: false } => {}
        }
    }

    fn set_in_sync(&mut self) {
        if !self.in_sync {
            tracing::info!(
                member = self.cfg.id,
                commit = self.commit_index(),
                "in sync: this member holds every entry its leader committed"
            );
        }
        self.in_sync = true;
        self.sync_target = None;
    }

    /// The leader showed us it committed entries we lack: not in sync until
    /// our commit reaches `target` (or, without one, until an append or a
    /// probe tells us the leader's commit and we reach it).
    fn fall_behind(&mut self, target: Option<u64>, last: u64) {
        if self.in_sync {
            tracing::info!(
                member = self.cfg.id,
                leader = self.raw.raft.leader_id,
                commit = self.commit_index(),
                last,
                leader_commit = ?target,
                "behind the leader: it is repairing our log; not in sync until caught up"
            );
        }
        self.in_sync = false;
        self.sync_target = target.map(|t| self.sync_target.map_or(t, |s| s.max(t)));
    }

    /// A witness that has not heard from a leader for an election timeout
    /// gets a (pre-)vote request from a voter whose log is behind its own.
    fn witness_must_repair(&self, msg: &Message) -> bool {
        if !self.cfg.witness
            || !matches!(
                msg.get_msg_type(),
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
            )
        {
            return false;
        }
        let r = &self.raw.raft;
        let voter =
            self.conf_state().voters.contains(&msg.from) && self.conf_state().voters.contains(&self.cfg.id);
        // A witness still (pre-)campaigning from an earlier request tries
        // again: its tick never restarts an election by itself.
        let leaderless = match r.state {
            StateRole::Follower => r.election_elapsed >= r.election_timeout(),
            StateRole::PreCandidate | StateRole::Candidate => true,
            StateRole::Leader => false,
        };
        let ours = (r.raft_log.last_term(), r.raft_log.last_index());
        voter && leaderless && (msg.log_term, msg.index) < ours
    }

    /// A leader's message from a member that our configuration says is not
    /// a voter, while we are one: both sides took over during a partition.
    fn split_brain(&self, msg: &Message) -> bool {
        use MessageType::*;
        if !matches!(msg.get_msg_type(), MsgAppend | MsgHeartbeat | MsgSnapshot) {
            return false;
        }
        let cs = self.raw.store().conf().0;
        // Only a takeover makes a member the sole voter with its peer as a
        // learner. Any other configuration that lists the sender as a
        // learner is merely stale (say, restored from an old snapshot after
        // a lost disk): raft brings it up to date if we listen.
        let sole = cs.voters == [self.cfg.id] && cs.voters_outgoing.is_empty();
        sole && cs.learners.contains(&msg.from)
    }

    /// Discards this member's log (it lost a split brain) and waits for the
    /// winner's snapshot. What it discards is kept first, durably: if that
    /// fails, nothing is discarded and the error stops the member.
    fn yield_to(&mut self, winner: u64, winner_term: u64) -> Result<(), NodeError> {
        let term = self.raw.raft.term;
        let commit = self.commit_index();
        let discarded = self.discarded_log(winner, winner_term);
        let kept = self.raw.store().disk().keep_discarded(&discarded)?;
        let (shown, more) = discarded.committed_summary(YIELD_LOG_LIST);
        let mut list = if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join("; ")
        };
        if more > 0 {
            list.push_str(&format!("; and {more} more, see {kept}"));
        }
        let snap_index = discarded.snapshot.as_ref().map_or(0, |s| s.index);
        tracing::error!(
            member = self.cfg.id,
            winner,
            discarded_committed = commit,
            term,
            kept = %kept,
            "SPLIT BRAIN HEALED: both members took over during a partition; this member yields to \
             member {winner}, discards its log (committed up to {commit}) and rebuilds from \
             {winner}'s snapshot. What it discarded is kept in {kept}: its snapshot at {snap_index} \
             and {} committed entries after it: {list}",
            discarded.committed_entries
        );
        for (_, (_, token)) in std::mem::take(&mut self.proposals) {
            self.out.push(Output::Proposed(token, Err(ProposeError::Unknown)));
        }
        self.fail_reads(ProposeError::Dropped);
        self.sm.restore(&self.initial_state)?;
        let store = self.raw.mut_store();
        store.clear();
        store.mark_rebuilding(format!(
            "yielded to member {winner} after a split brain (term {term}); what it discarded is kept in {kept}"
        ));
        store.flush()?;
        let times = store.flush_times();
        let mut fresh = LogStore::open(store.disk())?;
        fresh.keep_flush_times(times);
        self.raw = Self::raw_node(&self.cfg, fresh, 0)?;
        self.last_term = 0;
        self.timeout_key = (u64::MAX, StateRole::Follower, 0);
        self.derandomize();
        self.promote.clear();
        self.demotion = None;
        self.lead_term = 0;
        self.in_sync = false;
        self.sync_target = None;
        self.out.push(Output::Yielded {
            winner,
            discarded_committed: commit,
            kept,
        });
        Ok(())
    }

    /// Everything this member holds, decoded, as a yield keeps it.
    fn discarded_log(&self, winner: u64, winner_term: u64) -> DiscardedLog {
        let store = self.raw.store();
        let commit = self.commit_index();
        let (cs, conf_index) = store.conf();
        let snap = store.snapshot_ref();
        let entries: Vec<DiscardedEntry> = store
            .all_entries()
            .iter()
            .map(|e| DiscardedEntry {
                index: e.index,
                term: e.term,
                entry_type: format!("{:?}", e.get_entry_type()),
                committed: e.index <= commit,
                decoded: describe_entry::<S>(e),
                data_hex: hex(&e.data),
            })
            .collect();
        DiscardedLog {
            format: DISCARDED_FORMAT.into(),
            member: self.cfg.id,
            winner,
            term: self.raw.raft.term,
            winner_term,
            yielded_at_unix_ms: 0,
            commit,
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            conf_index,
            committed_entries: entries.iter().filter(|e| e.committed).count() as u64,
            snapshot: (snap.get_metadata().index > 0).then(|| DiscardedSnapshot {
                index: snap.get_metadata().index,
                term: snap.get_metadata().term,
                data_hex: hex(snap.get_data()),
            }),
            entries,
        }
    }

    /// Makes this member the only voter and leader, keeping its log, when
    /// the caller knows by other means (VRRP mastership) that the peer is gone.
    /// The peer stays as a learner, and is promoted back to voter once it has
    /// caught up after its return.
    ///
    /// Only for a two-voter configuration. If both members take over during a
    /// partition, the one with the lower term (then the higher id) yields
    /// when they hear from each other again.
    ///
    /// Refused unless this member is in sync ([`Node::in_sync`]): it led,
    /// or reached its leader's commit index, and no leader has since shown it
    /// behind. Otherwise the peer may have led alone (after a takeover of
    /// its own) and committed writes this member never received. A member
    /// whose log shows it was demoted to learner is refused too.
    ///
    /// The demotion goes into the log as well, ahead of any command this
    /// member commits alone, so that the peer learns it from the entries it
    /// receives; until it is there (rarely: an unapplied membership change
    /// must be applied first) proposals are refused with
    /// [`ProposeError::Dropped`].
    ///
    /// # Errors
    /// This member is a witness, a learner, not in sync, or the configuration
    /// is not two voters; or the store cannot be written.
    pub fn take_over_as_sole_voter(&mut self) -> Result<(), TakeoverError> {
        if !self.cfg.witness && !self.in_sync && self.conf_state().voters != [self.cfg.id] {
            return Err(TakeoverError::NotInSync);
        }
        self.take_over(false)
    }

    /// [`Node::take_over_as_sole_voter`] without the in-sync check, for an
    /// operator who knows the peer is gone for good (both servers went down
    /// and only this one came back). Writes the peer committed alone after
    /// this member last heard from it are lost; this is logged.
    ///
    /// # Errors
    /// As [`Node::take_over_as_sole_voter`], except [`TakeoverError::NotInSync`].
    pub fn force_take_over_as_sole_voter(&mut self) -> Result<(), TakeoverError> {
        self.take_over(true)
    }

    fn take_over(&mut self, forced: bool) -> Result<(), TakeoverError> {
        if self.cfg.witness {
            return Err(TakeoverError::Witness);
        }
        let cs = self.conf_state();
        if !cs.voters_outgoing.is_empty() {
            return Err(TakeoverError::Joint);
        }
        if cs.voters == [self.cfg.id] {
            if self.raw.raft.state != StateRole::Leader {
                self.raw
                    .campaign()
                    .map_err(|e| TakeoverError::Node(NodeError::Raft(e.to_string())))?;
                self.derandomize();
                self.demote_if_needed();
            }
            return Ok(());
        }
        if cs.learners.contains(&self.cfg.id) || self.demoted_in_log() {
            return Err(TakeoverError::Learner);
        }
        let peers: Vec<u64> = cs.voters.iter().copied().filter(|&v| v != self.cfg.id).collect();
        let (true, [peer]) = (cs.voters.contains(&self.cfg.id), peers.as_slice()) else {
            return Err(TakeoverError::NotTwoVoters(cs.voters.clone()));
        };
        let peer = *peer;
        tracing::warn!(
            member = self.cfg.id,
            peer,
            "taking over as sole voter: peer {peer} becomes a learner until it returns and catches up"
        );
        if forced && !self.in_sync {
            tracing::error!(
                member = self.cfg.id,
                peer,
                "FORCED takeover without having synced with {peer} since start: writes {peer} \
                 committed alone after that are lost"
            );
        }
        // Forced, local: the peer cannot agree, it is gone. Everything we hold
        // is kept; whatever the peer committed, we hold too: it needed our
        // vote and our ack (two voters, and no demotion of us in our log).
        let cc = conf_change(&[(ConfChangeType::AddLearnerNode, peer)]);
        let new_cs = self
            .raw
            .apply_conf_change(&cc)
            .map_err(|e| TakeoverError::Node(NodeError::Raft(e.to_string())))?;
        let applied = self.applied_index();
        let store = self.raw.mut_store();
        store.set_conf(new_cs.clone(), applied);
        // A snapshot at the takeover point: a peer that comes back empty (or
        // yields) rebuilds from it rather than from entry 1.
        store
            .compact(applied, new_cs, self.sm.snapshot())
            .map_err(NodeError::from)?;
        store.flush().map_err(NodeError::from)?;
        self.promote.insert(peer);
        self.raw
            .campaign()
            .map_err(|e| TakeoverError::Node(NodeError::Raft(e.to_string())))?;
        self.derandomize();
        // Put the change in the log too, so the returning peer learns it is
        // a learner from the entries it receives, before any command this
        // member commits alone.
        self.demotion = Some(peer);
        self.demote_if_needed();
        Ok(())
    }

    /// Whether the log holds, beyond the applied configuration, a change
    /// that makes this member a learner: its peer took over and led alone,
    /// and may have committed entries this member has not received.
    fn demoted_in_log(&self) -> bool {
        let (_, conf_index) = self.raw.store().conf();
        let mut demoted = false;
        for e in self
            .raw
            .store()
            .all_entries()
            .iter()
            .filter(|e| e.index > conf_index)
        {
            let cc = match e.get_entry_type() {
                EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data).ok(),
                EntryType::EntryConfChange => ConfChange::parse_from_bytes(&e.data)
                    .ok()
                    .map(raft_proto::ConfChangeI::into_v2),
                EntryType::EntryNormal => None,
            };
            for c in cc
                .iter()
                .flat_map(|cc| cc.get_changes())
                .filter(|c| c.node_id == self.cfg.id)
            {
                match c.get_change_type() {
                    ConfChangeType::AddLearnerNode => demoted = true,
                    ConfChangeType::AddNode => demoted = false,
                    ConfChangeType::RemoveNode => {}
                }
            }
        }
        demoted
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

    /// Handles everything raft has ready, in the documented order.
    ///
    /// # Errors
    /// Storage failed or the log holds something this build cannot apply;
    /// the member must stop.
    pub fn process_ready(&mut self) -> Result<(), NodeError> {
        self.derandomize();
        if !self.raw.has_ready() {
            self.after_ready();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // 1. Messages that do not depend on what we are about to persist.
        for m in rd.take_messages() {
            self.out.push(Output::Send(m));
        }
        // 2. A snapshot from the leader replaces the state machine.
        let installed_snapshot = !rd.snapshot().is_empty();
        if installed_snapshot {
            let snap = rd.snapshot().clone();
            self.install_snapshot(snap)?;
        }
        // 3. Committed entries (already durable here and on a quorum).
        self.apply_entries(rd.take_committed_entries())?;
        // 4-5. New entries and hard state, then one fsync. A change of the
        // commit index alone needs none (raft-rs `must_sync`, etcd's
        // `MustSync`): it rides with the next durable write, and a lower
        // commit after a crash is safe.
        let must_sync = rd.must_sync() || installed_snapshot;
        self.raw.mut_store().append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        if must_sync {
            self.raw.mut_store().flush()?;
        }
        for rs in rd.take_read_states() {
            self.read_state(rs.index, &rs.request_ctx);
        }
        // 6. Messages that promise what we just persisted (votes, append acks).
        for m in rd.take_persisted_messages() {
            self.out.push(Output::Send(m));
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            // Not fsynced on its own: a lower commit after a crash is safe,
            // raft learns it again. It rides with the next durable write.
            self.raw.mut_store().set_commit(commit);
        }
        for m in light.take_messages() {
            self.out.push(Output::Send(m));
        }
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.after_ready();
        Ok(())
    }

    fn after_ready(&mut self) {
        if self.raw.raft.state == StateRole::Leader
            || self.sync_target.is_some_and(|t| self.commit_index() >= t)
        {
            // A leader holds every committed entry.
            self.set_in_sync();
        }
        // What kept a demotion out of the log may have been applied just now.
        self.demote_if_needed();
        let term = self.raw.raft.term;
        if term != self.last_term {
            self.last_term = term;
            // A read asked in an older term may never be answered.
            let stale: Vec<Token> = self
                .reads_asked
                .iter()
                .filter(|(_, &t)| t < term)
                .map(|(&tok, _)| tok)
                .collect();
            for tok in stale {
                self.reads_asked.remove(&tok);
                self.out.push(Output::Read(tok, Err(ProposeError::Dropped)));
            }
        }
        if !self.reads_deferred.is_empty() {
            if self.raw.raft.state != StateRole::Leader {
                for tok in std::mem::take(&mut self.reads_deferred) {
                    self.out.push(Output::Read(
                        tok,
                        Err(ProposeError::NotLeader {
                            leader: self.leader(),
                        }),
                    ));
                }
            } else if self.raw.raft.commit_to_current_term() {
                for tok in std::mem::take(&mut self.reads_deferred) {
                    self.reads_asked.insert(tok, term);
                    self.raw.read_index(tok.to_be_bytes().to_vec());
                }
            }
        }
        let applied = self.applied_index();
        let mut i = 0;
        while i < self.reads_ready.len() {
            if self.reads_ready[i].0 <= applied {
                let (_, tok) = self.reads_ready.swap_remove(i);
                self.out.push(Output::Read(tok, Ok(())));
            } else {
                i += 1;
            }
        }
    }

    fn read_state(&mut self, index: u64, ctx: &[u8]) {
        if ctx == SYNC_PROBE {
            self.sync_target = Some(self.sync_target.map_or(index, |t| t.max(index)));
            return;
        }
        let Ok(bytes) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        let tok = Token::from_be_bytes(bytes);
        if self.reads_asked.remove(&tok).is_some() {
            self.reads_ready.push((index, tok));
        }
    }

    fn fail_reads(&mut self, err: ProposeError) {
        let toks: Vec<Token> = std::mem::take(&mut self.reads_asked).into_keys().collect();
        let toks = toks
            .into_iter()
            .chain(std::mem::take(&mut self.reads_deferred))
            .chain(std::mem::take(&mut self.reads_ready).into_iter().map(|(_, t)| t));
        for tok in toks.collect::<Vec<_>>() {
            self.out.push(Output::Read(tok, Err(err.clone())));
        }
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), NodeError> {
        let index = snap.get_metadata().index;
        tracing::info!(member = self.cfg.id, index, "installing snapshot from the leader");
        self.sm.restore(snap.get_data())?;
        self.raw.mut_store().install_snapshot(snap)?;
        let covered: Vec<u64> = self.proposals.range(..=index).map(|(&i, _)| i).collect();
        for i in covered {
            if let Some((_, tok)) = self.proposals.remove(&i) {
                self.out.push(Output::Proposed(tok, Err(ProposeError::Unknown)));
            }
        }
        Ok(())
    }

    fn complete(&mut self, entry: &Entry, result: Applied<S::Response>) {
        if let Some((term, tok)) = self.proposals.remove(&entry.index) {
            let r = if term == entry.term {
                Ok(result)
            } else {
                Err(ProposeError::Dropped)
            };
            self.out.push(Output::Proposed(tok, r));
        }
    }

    fn complete_err(&mut self, entry: &Entry, err: ProposeError) {
        if let Some((term, tok)) = self.proposals.remove(&entry.index) {
            let r = if term == entry.term {
                Err(err)
            } else {
                Err(ProposeError::Dropped)
            };
            self.out.push(Output::Proposed(tok, r));
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {
                    // The new leader's empty entry: a proposal waiting at
                    // this index was overwritten.
                    if let Some((_, tok)) = self.proposals.remove(&e.index) {
                        self.out.push(Output::Proposed(tok, Err(ProposeError::Dropped)));
                    }
                }
                EntryType::EntryNormal => {
                    let cmd: S::Command = bincode::serde::decode_from_slice(&e.data, bincode_config())
                        .map(|(c, _)| c)
                        .map_err(|err| NodeError::Undecodable {
                            index: e.index,
                            reason: err.to_string(),
                        })?;
                    let resp = self.sm.apply(e.index, cmd);
                    self.complete(&e, Applied::Command(resp));
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data).map_err(|err| NodeError::Undecodable {
                        index: e.index,
                        reason: err.to_string(),
                    })?;
                    self.apply_conf(&e, raft_proto::ConfChangeI::into_v2(cc))?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc =
                        ConfChangeV2::parse_from_bytes(&e.data).map_err(|err| NodeError::Undecodable {
                            index: e.index,
                            reason: err.to_string(),
                        })?;
                    self.apply_conf(&e, cc)?;
                }
            }
        }
        Ok(())
    }

    fn apply_conf(&mut self, e: &Entry, cc: ConfChangeV2) -> Result<(), NodeError> {
        let (cs, conf_index) = {
            let (cs, i) = self.raw.store().conf();
            (cs.clone(), i)
        };
        if e.index <= conf_index {
            // Already reflected in the stored configuration (replay after restart).
            self.complete(e, Applied::Conf(cs));
            return Ok(());
        }
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                tracing::info!(member = self.cfg.id, index = e.index, voters = ?cs.voters,
                    learners = ?cs.learners, "membership changed");
                // Durable now, with a commit index that covers it: a member
                // restarting on an older configuration could, in a pair,
                // believe itself the sole voter again and lead alone.
                let store = self.raw.mut_store();
                store.set_conf(cs.clone(), e.index);
                if store.hard_state().commit < e.index {
                    store.set_commit(e.index);
                }
                store.flush()?;
                self.complete(e, Applied::Conf(cs));
            }
            Err(err) => {
                // Every member refuses the same change the same way.
                tracing::warn!(
                    member = self.cfg.id,
                    index = e.index,
                    "membership change refused: {err}"
                );
                self.complete_err(e, ProposeError::InvalidConfChange(err.to_string()));
            }
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let applied = self.applied_index();
        let snap_index = self.raw.store().snapshot_ref().get_metadata().index;
        let wanted = self.raw.store().take_snapshot_wanted();
        if applied <= snap_index || (!wanted && applied < snap_index + self.cfg.snapshot_interval) {
            return Ok(());
        }
        let data = self.sm.snapshot();
        let cs = self.conf_state();
        tracing::debug!(member = self.cfg.id, applied, "snapshot and compaction");
        self.raw.mut_store().compact(applied, cs, data)?;
        Ok(())
    }

    /// Writes anything still buffered (before a clean stop).
    ///
    /// # Errors
    /// The store cannot be written.
    pub fn flush(&mut self) -> Result<(), NodeError> {
        self.raw.mut_store().flush()?;
        Ok(())
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
    /// Whether raft replaces our log with the snapshot.
    Snapshot { restores: bool },
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

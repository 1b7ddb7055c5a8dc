//! The tokio driver: one task owns the [`Node`] (and so the `RawNode` and its
//! store); everything else talks to it through [`Member`], a cheap handle that
//! sends it messages.
//!
//! The task drains every queued request before it handles `Ready`, so
//! proposals that arrive together share one fsync.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::eraftpb::{ConfChangeType, ConfState, Message};
use raft::StateRole;
use tokio::sync::{mpsc, oneshot, watch};

use crate::node::{Applied, Node, NodeConfig, NodeError, Output, ProposeError, TakeoverError, Token};
use crate::storage::LogStore;
use crate::StateMachine;

/// Where the member's outgoing raft messages go (the TCP transport, or an
/// in-process network in tests). `send` must not block.
pub trait Outbox: Send + Sync + 'static {
    /// Queues `msg` for `msg.to`. Dropping it is allowed (raft retransmits);
    /// a transport that knows the peer is unreachable tells the member with
    /// [`Member::report_unreachable`].
    fn send(&self, msg: Message);
}

/// Timers and limits of a running member.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The raft side.
    pub node: NodeConfig,
    /// Wall-clock length of one raft tick.
    pub tick: Duration,
    /// How long `propose`, `read` and membership calls wait before [`ProposeError::Timeout`].
    pub request_timeout: Duration,
    /// Capacity of the member's request queue.
    pub queue: usize,
}

impl MemberConfig {
    /// Defaults for member `id`: 100 ms ticks (1 s elections), 5 s requests.
    pub fn new(id: u64) -> MemberConfig {
        MemberConfig {
            node: NodeConfig::new(id),
            tick: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            queue: 4096,
        }
    }
}

/// What an operator sees of a member.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// This member.
    pub id: u64,
    /// Leader, follower, candidate…
    pub role: StateRole,
    /// Current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Highest committed index.
    pub commit: u64,
    /// Highest applied index.
    pub applied: u64,
    /// The configuration.
    pub conf: ConfState,
    /// Set when this member yielded after a split brain: (winner, committed
    /// entries it discarded).
    pub last_yield: Option<(u64, u64)>,
    /// Whether this member's log is known to hold everything its leader had
    /// committed: a plain takeover would be accepted on the in-sync rule.
    ///
    /// False from start until the member leads or reaches its leader's
    /// commit index. It goes back to false when the leader shows the member
    /// that it lacks committed entries (the leader has to repair its log:
    /// an append it rejects or that leaves it short of the leader's commit,
    /// or a snapshot), say after a partition heals, and true again once its
    /// commit reaches the leader's. Steady replication never clears it. A
    /// member cut off from the leader cannot know and keeps its value until
    /// it hears from the leader again. See [`Node::in_sync`].
    pub in_sync: bool,
    /// Index of the last entry of this member's log.
    pub last_index: u64,
    /// As leader, each other member's matched index (see
    /// [`Node::progress`]); empty otherwise.
    pub progress: Vec<(u64, u64)>,
}

type ReadFn<S> = Box<dyn FnOnce(Result<&S, ProposeError>) + Send>;
type Reply<T> = oneshot::Sender<Result<T, ProposeError>>;

enum Request<S: StateMachine> {
    Propose(S::Command, Reply<S::Response>),
    Submit(S::Command, Reply<()>),
    Membership(Vec<(ConfChangeType, u64)>, Reply<ConfState>),
    Read(ReadFn<S>),
    Raft(Box<Message>),
    Unreachable(u64),
    SnapshotSent(u64, bool),
    TakeOver(bool, oneshot::Sender<Result<(), TakeoverError>>),
    Transfer(u64),
    Preferred(Option<u64>),
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to a running member. Clones talk to the same member.
pub struct Member<S: StateMachine> {
    id: u64,
    tx: mpsc::Sender<Request<S>>,
    timeout: Duration,
    stopped: Arc<Mutex<Option<Arc<NodeError>>>>,
    role: watch::Receiver<Leadership>,
}

impl<S: StateMachine> Clone for Member<S> {
    fn clone(&self) -> Self {
        Member {
            id: self.id,
            tx: self.tx.clone(),
            timeout: self.timeout,
            stopped: self.stopped.clone(),
            role: self.role.clone(),
        }
    }
}

/// What this member knows of the cluster, as it changes: the one source
/// of the facts the pair's rules decide on (who leads, who votes, whether
/// this log is complete), published by [`Member::leadership`] after every
/// step of the member.
///
/// Receivers are woken only when a fact the rules read changes (role,
/// leader, term, in-sync, voters, learners; see [`Leadership::same_facts`]);
/// the log positions (`commit`, `applied`, `last_index`, `progress`) are
/// kept current in the same value without waking anyone, for status pages
/// that read it when asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    /// This member's raft role.
    pub role: StateRole,
    /// The leader it knows of, if any.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// Whether this member is in sync (see [`Status::in_sync`]).
    pub in_sync: bool,
    /// The voters of the applied configuration.
    pub voters: Vec<u64>,
    /// Its learners.
    pub learners: Vec<u64>,
    /// Highest committed index (not a wake-up).
    pub commit: u64,
    /// Highest applied index (not a wake-up).
    pub applied: u64,
    /// Index of the last entry of this member's log (not a wake-up).
    pub last_index: u64,
    /// As leader, each other member's matched index (not a wake-up).
    pub progress: Vec<(u64, u64)>,
}

impl Leadership {
    /// Whether `other` carries the same facts (role, leader, term, in-sync,
    /// voters, learners), whatever the log positions.
    pub fn same_facts(&self, other: &Leadership) -> bool {
        self.role == other.role
            && self.leader == other.leader
            && self.term == other.term
            && self.in_sync == other.in_sync
            && self.voters == other.voters
            && self.learners == other.learners
    }
}

impl<S: StateMachine> std::fmt::Debug for Member<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id).finish()
    }
}

impl<S: StateMachine> Member<S> {
    /// Starts the member task on the current tokio runtime.
    ///
    /// `initial_voters` bootstraps a brand-new store (see [`Node::new`]).
    ///
    /// # Errors
    /// The store holds a log the member cannot trust or the state machine
    /// refuses its snapshot: the member does not run.
    pub fn start(
        cfg: MemberConfig,
        store: LogStore,
        sm: S,
        initial_voters: &[u64],
        outbox: Arc<dyn Outbox>,
    ) -> Result<Member<S>, NodeError> {
        let (member, task) = Self::prepare(cfg, store, sm, initial_voters, outbox)?;
        tokio::spawn(task.drive());
        Ok(member)
    }

    /// [`Member::start`] on a thread of its own, with a runtime of its own.
    ///
    /// The member writes its log synchronously (`Ready`: append, fsync)
    /// before it goes on, a few milliseconds each time and longer on a busy
    /// disk. On a caller's single-threaded runtime that holds up everything
    /// else the runtime runs while the log is written, and a member kept busy
    /// (writes coming back to back) keeps it from polling its sockets and
    /// timers for as long as 60-odd tasks' turns: in a vipool node, the
    /// license clients' accepts waited 120-500 ms behind a stream of
    /// registrations (failover_bench, graceful stop, a build with debug
    /// lines at accept). Here only the member waits for its disk; its
    /// callers reach it through its queue as before.
    ///
    /// The thread ends with the member: on [`Member::shutdown`], on a
    /// storage failure, or once every handle to it is dropped (a transport
    /// that delivers to the member holds one: shut it down).
    ///
    /// # Errors
    /// As [`Member::start`], or [`NodeError::Thread`] when no thread or
    /// runtime can be had.
    pub fn start_on_own_thread(
        name: &str,
        cfg: MemberConfig,
        store: LogStore,
        sm: S,
        initial_voters: &[u64],
        outbox: Arc<dyn Outbox>,
    ) -> Result<Member<S>, NodeError> {
        let (member, task) = Self::prepare(cfg, store, sm, initial_voters, outbox)?;
        // The runtime is made on the thread: one dropped on a caller's
        // runtime (the thread not started) would panic there.
        let (started_tx, started) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => {
                        let _ = started_tx.send(Ok(()));
                        runtime.block_on(task.drive());
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                },
            )
            .map_err(NodeError::Thread)?;
        match started.recv() {
            Ok(Ok(())) => Ok(member),
            Ok(Err(e)) => Err(NodeError::Thread(e)),
            Err(_) => Err(NodeError::Thread(std::io::Error::other(
                "the member's thread ended before its runtime started",
            ))),
        }
    }

    /// The member's handle and the task that drives it, not yet running.
    fn prepare(
        cfg: MemberConfig,
        store: LogStore,
        sm: S,
        initial_voters: &[u64],
        outbox: Arc<dyn Outbox>,
    ) -> Result<(Member<S>, Task<S>), NodeError> {
        let node = Node::new(cfg.node.clone(), store, sm, initial_voters)?;
        let (tx, rx) = mpsc::channel(cfg.queue);
        let stopped = Arc::new(Mutex::new(None));
        let (role_tx, role) = watch::channel(leadership_of(&node));
        let task = Task {
            role: role_tx,
            node,
            rx,
            outbox,
            tick: cfg.tick,
            next_token: 1,
            proposals: BTreeMap::new(),
            changes: BTreeMap::new(),
            reads: BTreeMap::new(),
            last_yield: None,
            fatal: None,
            stopped: stopped.clone(),
        };
        let member = Member {
            id: cfg.node.id,
            tx,
            timeout: cfg.request_timeout,
            stopped,
            role,
        };
        Ok((member, task))
    }

    /// Role, leader, term, in-sync and membership as they change (see
    /// [`Leadership`]): an event source for code that must act at once when
    /// leadership moves (polling [`Member::status`] on a timer adds up to
    /// one period of delay and a round trip through the member's queue).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.role.clone()
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Why the member stopped on its own (a storage failure), if it did.
    pub fn failure(&self) -> Option<Arc<NodeError>> {
        self.stopped.lock().expect("stopped lock").clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request<S>) -> Result<T, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(ProposeError::Timeout),
            Ok(Err(_)) => Err(ProposeError::ShuttingDown),
            Ok(Ok(r)) => r,
        }
    }

    /// Replicates `command` and returns the state machine's response once
    /// the entry is committed and applied here.
    ///
    /// # Errors
    /// See [`ProposeError`]: not the leader (with its id if known), dropped
    /// by a newer term, outcome unknown, shutting down, timed out.
    pub async fn propose(&self, command: S::Command) -> Result<S::Response, ProposeError> {
        self.ask(|tx| Request::Propose(command, tx)).await
    }

    /// Gets `command` into the log without waiting for it, on any member but
    /// a witness: the leader appends it, a follower forwards it to the
    /// leader (see [`Node::submit`]). Returns once the member has handed it
    /// on, not once it is committed.
    ///
    /// Nothing confirms it: look for the command's effect in the applied
    /// state machine (say with [`Member::read`]) and submit again until it
    /// shows. The command must therefore be idempotent: it may be applied
    /// more than once.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] on a witness or when no leader is known;
    /// [`ProposeError::Dropped`] when the leader refuses it at once (a
    /// leadership transfer is in progress); shutting down; timed out.
    pub async fn submit(&self, command: S::Command) -> Result<(), ProposeError> {
        self.ask(|tx| Request::Submit(command, tx)).await
    }

    /// Runs `f` on the state machine once it reflects every write committed
    /// before this call (ReadIndex): a linearizable read, on any member that
    /// knows the leader. `f` runs on the member's task: keep it short (copy
    /// out what the view needs).
    ///
    /// # Errors
    /// No leader known, the read was overtaken by a new term, shutting down,
    /// timed out.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        self.ask(|tx| {
            Request::Read(Box::new(move |sm: Result<&S, ProposeError>| {
                let _ = tx.send(sm.map(f));
            }))
        })
        .await
    }

    /// Changes membership; several changes go through joint consensus.
    /// Returns the new configuration once applied here.
    ///
    /// # Errors
    /// As [`Member::propose`], plus [`ProposeError::InvalidConfChange`].
    pub async fn change_membership(
        &self,
        changes: Vec<(ConfChangeType, u64)>,
    ) -> Result<ConfState, ProposeError> {
        self.ask(|tx| Request::Membership(changes, tx)).await
    }

    /// Adds `id` as a learner (it catches up by snapshot, does not vote).
    ///
    /// # Errors
    /// As [`Member::change_membership`].
    pub async fn add_learner(&self, id: u64) -> Result<ConfState, ProposeError> {
        self.change_membership(vec![(ConfChangeType::AddLearnerNode, id)])
            .await
    }

    /// Makes learner `id` a voter.
    ///
    /// # Errors
    /// As [`Member::change_membership`].
    pub async fn promote(&self, id: u64) -> Result<ConfState, ProposeError> {
        self.change_membership(vec![(ConfChangeType::AddNode, id)]).await
    }

    /// Removes `id` from the configuration.
    ///
    /// # Errors
    /// As [`Member::change_membership`].
    pub async fn remove(&self, id: u64) -> Result<ConfState, ProposeError> {
        self.change_membership(vec![(ConfChangeType::RemoveNode, id)])
            .await
    }

    /// See [`Node::take_over_as_sole_voter`]: only with independent evidence
    /// (VRRP mastership) that the peer is gone.
    ///
    /// # Errors
    /// As [`Node::take_over_as_sole_voter`]; a stopped member reports
    /// [`TakeoverError::Node`].
    pub async fn take_over_as_sole_voter(&self) -> Result<(), TakeoverError> {
        self.take_over(false).await
    }

    /// See [`Node::force_take_over_as_sole_voter`]: for an operator who knows
    /// the peer is gone for good.
    ///
    /// # Errors
    /// As [`Member::take_over_as_sole_voter`], without the in-sync check.
    pub async fn force_take_over_as_sole_voter(&self) -> Result<(), TakeoverError> {
        self.take_over(true).await
    }

    async fn take_over(&self, force: bool) -> Result<(), TakeoverError> {
        let (tx, rx) = oneshot::channel();
        let gone = || TakeoverError::Node(NodeError::Raft("member stopped".into()));
        self.tx
            .send(Request::TakeOver(force, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Asks the leader (if this member is it) to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: u64) {
        let _ = self.tx.send(Request::Transfer(to)).await;
    }

    /// Names the member that should lead (the VIP holder); leadership moves
    /// there once it is caught up. Tell every member.
    pub async fn set_preferred_leader(&self, id: Option<u64>) {
        let _ = self.tx.send(Request::Preferred(id)).await;
    }

    /// Role, term, commit index and configuration.
    ///
    /// # Errors
    /// The member has stopped.
    pub async fn status(&self) -> Result<Status, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Status(tx))
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        rx.await.map_err(|_| ProposeError::ShuttingDown)
    }

    /// Delivers a raft message from the network. Never blocks: when the
    /// queue is full the message is dropped (raft retransmits).
    pub fn deliver(&self, msg: Message) {
        let _ = self.tx.try_send(Request::Raft(Box::new(msg)));
    }

    /// The transport could not reach `id`.
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.tx.try_send(Request::Unreachable(id));
    }

    /// The transport wrote (or failed to write) a snapshot to `to`.
    pub fn report_snapshot(&self, to: u64, delivered: bool) {
        let _ = self.tx.try_send(Request::SnapshotSent(to, delivered));
    }

    /// Stops the member: pending requests fail with
    /// [`ProposeError::ShuttingDown`], buffered state is flushed.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Task<S: StateMachine> {
    node: Node<S>,
    rx: mpsc::Receiver<Request<S>>,
    outbox: Arc<dyn Outbox>,
    tick: Duration,
    next_token: Token,
    proposals: BTreeMap<Token, Reply<S::Response>>,
    changes: BTreeMap<Token, Reply<ConfState>>,
    reads: BTreeMap<Token, ReadFn<S>>,
    last_yield: Option<(u64, u64)>,
    /// A failure while handling a request; the member stops on it.
    fatal: Option<NodeError>,
    stopped: Arc<Mutex<Option<Arc<NodeError>>>>,
    role: watch::Sender<Leadership>,
}

fn leadership_of<S: StateMachine>(node: &Node<S>) -> Leadership {
    let conf = node.conf_state();
    Leadership {
        role: node.role(),
        leader: node.leader(),
        term: node.term(),
        in_sync: node.in_sync(),
        voters: conf.voters,
        learners: conf.learners,
        commit: node.commit_index(),
        applied: node.applied_index(),
        last_index: node.last_index(),
        progress: node.progress(),
    }
}

impl<S: StateMachine> Task<S> {
    /// Runs the member until it stops. The task (and with it the store and
    /// its file lock) is gone before the caller of `shutdown` hears back.
    async fn drive(self) {
        if let Some(done) = self.run().await {
            let _ = done.send(());
        }
    }

    async fn run(mut self) -> Option<oneshot::Sender<()>> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut shutdown = None;
            tokio::select! {
                req = self.rx.recv() => {
                    let req = req?;
                    shutdown = self.handle(req);
                    // Take everything already queued: one Ready, one fsync.
                    while shutdown.is_none() {
                        match self.rx.try_recv() {
                            Ok(req) => shutdown = self.handle(req),
                            Err(_) => break,
                        }
                    }
                }
                _ = ticker.tick() => {
                    self.node.tick();
                    // Callers that timed out no longer wait; the node resolves
                    // their tokens later, to nobody.
                    self.proposals.retain(|_, tx| !tx.is_closed());
                    self.changes.retain(|_, tx| !tx.is_closed());
                }
            }
            let failed = match self.fatal.take() {
                Some(e) => Err(e),
                None => self.ready(),
            };
            self.publish();
            if let Err(e) = failed {
                tracing::error!(member = self.node.id(), "member stops: {e}");
                *self.stopped.lock().expect("stopped lock") = Some(Arc::new(e));
                self.node.shutdown();
                self.route();
                return None;
            }
            if let Some(done) = shutdown {
                self.node.shutdown();
                self.route();
                if let Err(e) = self.node.flush() {
                    tracing::error!(member = self.node.id(), "final flush failed: {e}");
                }
                tracing::info!(member = self.node.id(), "member stopped");
                return Some(done);
            }
        }
    }

    /// Publishes the member's facts; wakes the watchers only when a fact
    /// changed, not for log positions alone.
    fn publish(&self) {
        let now = leadership_of(&self.node);
        self.role
            .send_if_modified(|r| !std::mem::replace(r, now).same_facts(r));
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    fn handle(&mut self, req: Request<S>) -> Option<oneshot::Sender<()>> {
        match req {
            Request::Propose(cmd, tx) => {
                let tok = self.token();
                match self.node.propose(tok, &cmd) {
                    Ok(()) => {
                        self.proposals.insert(tok, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            Request::Submit(cmd, tx) => {
                let _ = tx.send(self.node.submit(&cmd));
            }
            Request::Membership(changes, tx) => {
                let tok = self.token();
                match self.node.propose_membership(tok, &changes) {
                    Ok(()) => {
                        self.changes.insert(tok, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            Request::Read(f) => {
                let tok = self.token();
                match self.node.read(tok) {
                    Ok(()) => {
                        self.reads.insert(tok, f);
                    }
                    Err(e) => f(Err(e)),
                }
            }
            Request::Raft(m) => {
                if let Err(e) = self.node.step(*m) {
                    // Only a yield rewriting the store fails here: fatal.
                    self.fatal.get_or_insert(e);
                }
            }
            Request::Unreachable(id) => self.node.report_unreachable(id),
            Request::SnapshotSent(id, ok) => self.node.report_snapshot(id, ok),
            Request::TakeOver(force, tx) => {
                let r = if force {
                    self.node.force_take_over_as_sole_voter()
                } else {
                    self.node.take_over_as_sole_voter()
                };
                // The caller learns the outcome with the facts it made
                // (sole voter, leader): it can serve in the same round.
                self.publish();
                let _ = tx.send(r);
            }
            Request::Transfer(to) => self.node.transfer_leader(to),
            Request::Preferred(p) => self.node.set_preferred_leader(p),
            Request::Status(tx) => {
                let _ = tx.send(Status {
                    id: self.node.id(),
                    role: self.node.role(),
                    term: self.node.term(),
                    leader: self.node.leader(),
                    commit: self.node.commit_index(),
                    applied: self.node.applied_index(),
                    conf: self.node.conf_state(),
                    last_yield: self.last_yield,
                    in_sync: self.node.in_sync(),
                    last_index: self.node.last_index(),
                    progress: self.node.progress(),
                });
            }
            Request::Shutdown(done) => return Some(done),
        }
        None
    }

    fn ready(&mut self) -> Result<(), NodeError> {
        loop {
            self.node.process_ready()?;
            let routed = self.route();
            if !routed && !self.node.has_ready() {
                return Ok(());
            }
        }
    }

    /// Delivers the node's outputs; returns whether there were any.
    fn route(&mut self) -> bool {
        let outs = self.node.drain_outputs();
        let any = !outs.is_empty();
        for o in outs {
            match o {
                Output::Send(m) => self.outbox.send(m),
                Output::Proposed(tok, r) => {
                    if let Some(tx) = self.proposals.remove(&tok) {
                        let r = r.and_then(|a| match a {
                            Applied::Command(resp) => Ok(resp),
                            Applied::Conf(_) => Err(ProposeError::Unknown),
                        });
                        let _ = tx.send(r);
                    } else if let Some(tx) = self.changes.remove(&tok) {
                        let r = r.and_then(|a| match a {
                            Applied::Conf(cs) => Ok(cs),
                            Applied::Command(_) => Err(ProposeError::Unknown),
                        });
                        let _ = tx.send(r);
                    }
                }
                Output::Read(tok, r) => {
                    if let Some(f) = self.reads.remove(&tok) {
                        match r {
                            Ok(()) => f(Ok(self.node.state_machine())),
                            Err(e) => f(Err(e)),
                        }
                    }
                }
                Output::Yielded {
                    winner,
                    discarded_committed,
                    ..
                } => {
                    self.last_yield = Some((winner, discarded_committed));
                }
            }
        }
        any
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sim::Recorder;
    use crate::storage::Disk;

    /// An in-process network of members.
    #[derive(Default)]
    pub(crate) struct LocalNet {
        pub(crate) members: Mutex<BTreeMap<u64, Member<Recorder>>>,
        /// Members whose messages, both ways, are lost.
        pub(crate) cut: Mutex<std::collections::BTreeSet<u64>>,
        /// Members that hear everyone but whose own messages are lost.
        pub(crate) mute: Mutex<std::collections::BTreeSet<u64>>,
    }

    impl Outbox for LocalNet {
        fn send(&self, msg: Message) {
            let cut = self.cut.lock().unwrap();
            if cut.contains(&msg.to) || cut.contains(&msg.from) {
                return;
            }
            drop(cut);
            if self.mute.lock().unwrap().contains(&msg.from) {
                return;
            }
            let to = self.members.lock().unwrap().get(&msg.to).cloned();
            match to {
                Some(m) => m.deliver(msg),
                None => {
                    let from = self.members.lock().unwrap().get(&msg.from).cloned();
                    if let Some(f) = from {
                        f.report_unreachable(msg.to);
                    }
                }
            }
        }
    }

    pub(crate) fn fast(id: u64) -> MemberConfig {
        let mut cfg = MemberConfig::new(id);
        cfg.tick = Duration::from_millis(10);
        cfg.request_timeout = Duration::from_secs(10);
        cfg.node.snapshot_interval = 50;
        cfg
    }

    async fn leader_of(members: &[Member<Recorder>]) -> Member<Recorder> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            for m in members {
                if let Ok(s) = m.status().await {
                    if s.role == StateRole::Leader {
                        return m.clone();
                    }
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start(dir: &std::path::Path, id: u64, net: &Arc<LocalNet>) -> Member<Recorder> {
        start_with(dir, fast(id), net)
    }

    /// The store at `path`: created on a member's first start, opened on
    /// its restarts.
    pub(crate) fn disk_at(path: &std::path::Path) -> Disk {
        if path.exists() {
            Disk::open(path).unwrap()
        } else {
            Disk::create(path).unwrap()
        }
    }

    fn start_with(dir: &std::path::Path, cfg: MemberConfig, net: &Arc<LocalNet>) -> Member<Recorder> {
        let id = cfg.node.id;
        let disk = disk_at(&dir.join(format!("m{id}.redb")));
        let store = LogStore::open(disk).unwrap();
        let m = Member::start(cfg, store, Recorder::default(), &[1, 2, 3], net.clone()).unwrap();
        net.members.lock().unwrap().insert(id, m.clone());
        m
    }

    /// The worst lateness of a 1 ms timer on a single-threaded runtime
    /// while a lone member started from it commits three proposals on a
    /// disk whose every write takes `write`: the member on that runtime
    /// (`Member::start`) or on a thread of its own.
    fn callers_worst_lateness(own_thread: bool, write: Duration) -> Duration {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let disk = Disk::memory();
            let store = LogStore::open(disk.clone()).unwrap();
            let net = Arc::new(LocalNet::default());
            let m = if own_thread {
                Member::start_on_own_thread("test-raft", fast(1), store, Recorder::default(), &[1], net)
            } else {
                Member::start(fast(1), store, Recorder::default(), &[1], net)
            }
            .unwrap();
            leader_of(std::slice::from_ref(&m)).await;
            disk.slow_writes(write);
            let proposer = tokio::spawn({
                let m = m.clone();
                async move {
                    for c in 0..3 {
                        m.propose(c).await.expect("a lone member commits");
                    }
                }
            });
            let mut worst = Duration::ZERO;
            while !proposer.is_finished() {
                let began = std::time::Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                worst = worst.max(began.elapsed());
            }
            proposer.await.unwrap();
            m.shutdown().await;
            worst
        })
    }

    /// A member on a thread of its own waits for its disk there: the
    /// runtime it was started from keeps polling its timers and sockets (in
    /// a vipool node, the client port's accepts and the pair's beacons).
    /// Started on that runtime instead, every write holds it up for as
    /// long as the write takes.
    #[test]
    fn a_member_on_its_own_thread_does_not_hold_up_its_callers_runtime() {
        let write = Duration::from_millis(300);
        let shared = callers_worst_lateness(false, write);
        assert!(
            shared >= write,
            "on the caller's runtime a write holds it up: the measure must see it ({shared:?})"
        );
        let own = callers_worst_lateness(true, write);
        assert!(
            own < write / 2,
            "the member on its own thread held its caller's runtime up {own:?} (writes of {write:?})"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn propose_read_restart_over_redb() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let members: Vec<_> = (1..=3).map(|id| start(dir.path(), id, &net)).collect();
        let leader = leader_of(&members).await;
        let follower = members.iter().find(|m| m.id() != leader.id()).unwrap().clone();

        assert_eq!(
            follower.propose(1).await,
            Err(ProposeError::NotLeader {
                leader: Some(leader.id())
            })
        );
        // Concurrent proposals: each gets its own index back.
        let mut handles = Vec::new();
        for c in 10..110u64 {
            let l = leader.clone();
            handles.push(tokio::spawn(async move { (c, l.propose(c).await) }));
        }
        let mut acked = BTreeMap::new();
        for h in handles {
            let (c, r) = h.await.unwrap();
            acked.insert(r.expect("leader commits"), c);
        }
        assert_eq!(acked.len(), 100, "distinct indexes");
        // A linearizable read on a follower sees every acknowledged write.
        let seen = follower.read(|sm: &Recorder| sm.by_index.clone()).await.unwrap();
        for (i, c) in &acked {
            assert_eq!(seen.get(i), Some(c));
        }
        // Restart everyone from disk: the state comes back.
        for m in &members {
            m.shutdown().await;
        }
        assert_eq!(leader.propose(5).await, Err(ProposeError::ShuttingDown));
        net.members.lock().unwrap().clear();
        let members: Vec<_> = (1..=3).map(|id| start(dir.path(), id, &net)).collect();
        let leader = leader_of(&members).await;
        let idx = leader.propose(999).await.unwrap();
        let seen = leader.read(|sm: &Recorder| sm.by_index.clone()).await.unwrap();
        for (i, c) in &acked {
            assert_eq!(seen.get(i), Some(c), "write at {i} survived the restart");
        }
        assert_eq!(seen.get(&idx), Some(&999));
        let st = leader.status().await.unwrap();
        assert!(st.commit >= idx && st.applied >= idx);
        assert!(st.in_sync && st.last_yield.is_none());
        for m in &members {
            m.shutdown().await;
        }
    }

    #[tokio::test]
    async fn corrupt_store_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m1.redb");
        std::fs::write(&path, b"definitely not a database, just some bytes on a disk").unwrap();
        let err = Disk::open(&path).and_then(LogStore::open).expect_err("refused");
        assert!(err.to_string().contains("log store"), "{err}");
    }

    #[tokio::test]
    async fn propose_times_out_without_quorum() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let disk = Disk::create(dir.path().join("solo.redb")).unwrap();
        let mut cfg = fast(1);
        cfg.request_timeout = Duration::from_millis(300);
        // Two voters, the other never starts: no leader, no commit.
        let m = Member::start(
            cfg,
            LogStore::open(disk).unwrap(),
            Recorder::default(),
            &[1, 2],
            net.clone(),
        )
        .unwrap();
        net.members.lock().unwrap().insert(1, m.clone());
        assert!(matches!(
            m.propose(1).await,
            Err(ProposeError::NotLeader { leader: None })
        ));
        assert!(matches!(
            m.read(|_| ()).await,
            Err(ProposeError::NotLeader { leader: None })
        ));
        // Never in contact with its peer since start: a plain takeover is
        // refused, the operator's forced one works.
        assert!(matches!(
            m.take_over_as_sole_voter().await,
            Err(TakeoverError::NotInSync)
        ));
        m.force_take_over_as_sole_voter().await.unwrap();
        let i = m.propose(7).await.unwrap();
        assert!(i > 1);
        m.shutdown().await;
        assert_eq!(m.propose(8).await, Err(ProposeError::ShuttingDown));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn propose_on_a_cut_off_leader_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let members: Vec<_> = (1..=3)
            .map(|id| {
                let mut cfg = fast(id);
                cfg.request_timeout = Duration::from_secs(1);
                start_with(dir.path(), cfg, &net)
            })
            .collect();
        let leader = leader_of(&members).await;
        leader.propose(1).await.unwrap();
        net.cut.lock().unwrap().insert(leader.id());
        let r = tokio::time::timeout(Duration::from_secs(30), leader.propose(2))
            .await
            .unwrap();
        // The cut-off leader takes the proposal but cannot commit it; it
        // steps down (check quorum) and nothing resolves the entry in time.
        assert!(matches!(r, Err(ProposeError::Timeout)), "{r:?}");
        net.cut.lock().unwrap().clear();
        let leader = leader_of(&members).await;
        leader.propose(3).await.unwrap();
        for m in &members {
            m.shutdown().await;
        }
    }

    fn start_pair(dir: &std::path::Path, id: u64, net: &Arc<LocalNet>) -> Member<Recorder> {
        let disk = disk_at(&dir.join(format!("p{id}.redb")));
        let mut cfg = fast(id);
        cfg.node.snapshot_interval = 20;
        let m = Member::start(
            cfg,
            LogStore::open(disk).unwrap(),
            Recorder::default(),
            &[1, 2],
            net.clone(),
        )
        .unwrap();
        net.members.lock().unwrap().insert(id, m.clone());
        m
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pair_takeover_and_rejoin_through_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let members = vec![start_pair(dir.path(), 1, &net), start_pair(dir.path(), 2, &net)];
        let leader = leader_of(&members).await;
        let mut acked = BTreeMap::new();
        for c in 0..30u64 {
            acked.insert(leader.propose(c).await.unwrap(), c);
        }
        let old = leader.id();
        let survivor = members.iter().find(|m| m.id() != old).unwrap().clone();
        leader.shutdown().await;
        net.members.lock().unwrap().remove(&old);
        // In sync before the crash; VRRP would now say the peer is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !survivor.status().await.unwrap().in_sync {
            assert!(tokio::time::Instant::now() < deadline, "survivor never in sync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut facts = survivor.leadership();
        survivor.take_over_as_sole_voter().await.unwrap();
        // Published before the answer: the caller sees what the takeover
        // made without waiting for another wake-up.
        let made = facts.borrow_and_update().clone();
        assert_eq!(
            (made.role, made.leader, made.voters.clone(), made.learners.clone()),
            (
                StateRole::Leader,
                Some(survivor.id()),
                vec![survivor.id()],
                vec![old]
            ),
            "{made:?}"
        );
        let mut last = 0;
        for c in 100..160u64 {
            last = survivor.propose(c).await.unwrap();
            acked.insert(last, c);
        }
        // Commits move the positions in the watch but wake nobody.
        assert!(
            !facts.has_changed().unwrap(),
            "{made:?} then {:?}",
            *facts.borrow()
        );
        // The answer comes as the entry applies; the positions are
        // published at the end of that step.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = facts.borrow().clone();
            if now.commit >= last && now.applied >= last && now.last_index >= last {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "positions never published: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            !facts.has_changed().unwrap(),
            "{made:?} then {:?}",
            *facts.borrow()
        );
        let back = start_pair(dir.path(), old, &net);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (a, b) = (survivor.status().await.unwrap(), back.status().await.unwrap());
            if a.conf.voters.len() == 2 && b.conf.voters.len() == 2 && b.applied >= a.commit {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not promoted back: {a:?} {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked.insert(survivor.propose(999).await.unwrap(), 999);
        let seen = back.read(|sm: &Recorder| sm.by_index.clone()).await.unwrap();
        for (i, c) in &acked {
            assert_eq!(
                seen.get(i),
                Some(c),
                "acknowledged write at {i} on the returned member"
            );
        }
        survivor.shutdown().await;
        back.shutdown().await;
    }

    #[tokio::test]
    async fn a_failing_disk_stops_the_member_loudly() {
        let cap = crate::logger::tests::Captured::default();
        let _guard = tracing::subscriber::set_default(cap.subscriber());
        let net = Arc::new(LocalNet::default());
        let disk = Disk::memory();
        let m = Member::start(
            fast(1),
            LogStore::open(disk.clone()).unwrap(),
            Recorder::default(),
            &[1],
            net,
        )
        .unwrap();
        leader_of(std::slice::from_ref(&m)).await;
        m.propose(1).await.unwrap();
        disk.break_writes();
        assert_eq!(m.propose(2).await, Err(ProposeError::ShuttingDown));
        let why = m
            .failure()
            .expect("the member recorded why it stopped")
            .to_string();
        assert!(why.contains("disk is broken"), "{why}");
        assert_eq!(m.propose(3).await, Err(ProposeError::ShuttingDown));
        assert!(cap.text().contains("member stops"), "{}", cap.text());
    }

    /// Polls `m`'s status until `ok` holds (30 s at most).
    async fn status_until(m: &Member<Recorder>, what: &str, ok: impl Fn(&Status) -> bool) -> Status {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let st = m.status().await.unwrap();
            if ok(&st) {
                return st;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {st:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_that_missed_commits_is_not_in_sync_until_it_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let members: Vec<_> = (1..=3)
            .map(|id| {
                let mut cfg = fast(id);
                // Repair by appends (a snapshot would need the transport's
                // delivery report, which this network does not give).
                cfg.node.snapshot_interval = 10_000;
                start_with(dir.path(), cfg, &net)
            })
            .collect();
        let leader = leader_of(&members).await;
        leader.propose(1).await.unwrap();
        let x = members.iter().find(|m| m.id() != leader.id()).unwrap().clone();
        status_until(&x, "in sync at first", |s| s.in_sync).await;
        net.cut.lock().unwrap().insert(x.id());
        for c in 10..40u64 {
            leader.propose(c).await.unwrap();
        }
        let target = leader.status().await.unwrap().commit;
        // Cut off, it cannot know what it missed.
        let st = x.status().await.unwrap();
        assert!(st.in_sync && st.commit < target, "{st:?}");
        // It hears the leader again but is not heard: the leader's appends
        // show it behind and it cannot catch up.
        net.mute.lock().unwrap().insert(x.id());
        net.cut.lock().unwrap().clear();
        leader.propose(40).await.unwrap();
        let st = status_until(&x, "the leader's append shows it behind", |s| !s.in_sync).await;
        assert!(st.commit < target, "{st:?}");
        // Unheard, it cannot catch up (unless a new leader probes it afresh).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = x.status().await.unwrap();
        assert!(!st.in_sync || st.commit >= target, "{st:?}");
        net.mute.lock().unwrap().clear();
        let st = status_until(&x, "back in sync", |s| s.in_sync).await;
        assert!(st.commit >= target, "in sync only caught up: {st:?}");
        for m in &members {
            m.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steady_replication_under_load_keeps_followers_in_sync() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let members: Vec<_> = (1..=3).map(|id| start(dir.path(), id, &net)).collect();
        let leader = leader_of(&members).await;
        leader.propose(1).await.unwrap();
        let followers: Vec<_> = members
            .iter()
            .filter(|m| m.id() != leader.id())
            .cloned()
            .collect();
        for f in &followers {
            status_until(f, "in sync at first", |s| s.in_sync).await;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = {
            let (followers, stop) = (followers.clone(), stop.clone());
            tokio::spawn(async move {
                let mut polls = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for f in &followers {
                        let st = f.status().await.unwrap();
                        assert!(st.in_sync, "follower left sync under load: {st:?}");
                        polls += 1;
                    }
                    tokio::task::yield_now().await;
                }
                polls
            })
        };
        for round in 0..5u64 {
            let mut handles = Vec::new();
            for c in 0..100u64 {
                let l = leader.clone();
                handles.push(tokio::spawn(
                    async move { l.propose(1000 * (round + 1) + c).await },
                ));
            }
            for h in handles {
                h.await.unwrap().expect("the leader commits");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let polls = watch.await.expect("followers stayed in sync");
        assert!(polls > 10, "{polls} polls");
        for m in &members {
            m.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_submits_a_command_every_member_applies() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let members: Vec<_> = (1..=3).map(|id| start(dir.path(), id, &net)).collect();
        let leader = leader_of(&members).await;
        leader.propose(1).await.unwrap();
        let follower = members.iter().find(|m| m.id() != leader.id()).unwrap().clone();
        // Known the leader? The first propose's append told it.
        status_until(&follower, "knows the leader", |s| s.leader == Some(leader.id())).await;
        follower.submit(77).await.unwrap();
        for m in &members {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !m
                .read(|sm: &Recorder| sm.by_index.values().any(|&c| c == 77))
                .await
                .unwrap()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "77 never applied on {}",
                    m.id()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for m in &members {
            m.shutdown().await;
        }
        assert_eq!(follower.submit(78).await, Err(ProposeError::ShuttingDown));
    }

    #[tokio::test]
    async fn submit_without_a_leader_is_refused() {
        let net = Arc::new(LocalNet::default());
        // Two voters, the other never starts: nobody leads.
        let m = Member::start(
            fast(1),
            LogStore::open(Disk::memory()).unwrap(),
            Recorder::default(),
            &[1, 2],
            net.clone(),
        )
        .unwrap();
        net.members.lock().unwrap().insert(1, m.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(m.submit(5).await, Err(ProposeError::NotLeader { leader: None }));
        m.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leadership_watch_follows_elections_and_transfers() {
        let dir = tempfile::tempdir().unwrap();
        let net = Arc::new(LocalNet::default());
        let members: Vec<_> = (1..=3).map(|id| start_with(dir.path(), fast(id), &net)).collect();
        let leader = leader_of(&members).await;
        let other = members.iter().find(|m| m.id() != leader.id()).unwrap().clone();
        let mut seen = other.leadership();
        let wait = Duration::from_secs(30);
        let first = tokio::time::timeout(wait, seen.wait_for(|l| l.leader == Some(leader.id())))
            .await
            .expect("the follower's watch never named the leader")
            .unwrap()
            .to_owned();
        assert_eq!(first.role, StateRole::Follower, "{first:?}");
        // A transfer shows up on the target's watch without polling.
        let mut mine = other.leadership();
        leader.transfer_leader(other.id()).await;
        let now = tokio::time::timeout(wait, mine.wait_for(|l| l.role == StateRole::Leader))
            .await
            .expect("the transfer never showed on the watch")
            .unwrap()
            .to_owned();
        assert_eq!(now.leader, Some(other.id()));
        assert!(now.term > first.term && now.in_sync, "{now:?}");
        for m in &members {
            m.shutdown().await;
        }
    }
}

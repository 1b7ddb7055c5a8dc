//! One cluster member as a process, for the crash tests and by hand.
//!
//! ```text
//! kv_member --id 1 --dir /tmp/m1 --listen 127.0.0.1:7001 \
//!           --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 --voters 1,2,3 --write-loop
//! kv_member --id 1 --dir /tmp/m1 --dump
//! ```
//!
//! With `--write-loop` it proposes `"<id>-<n>"` values while it leads and
//! prints `ACK <value> <index>` for each one committed; `stop` on stdin ends
//! the loop. Every 100 ms it prints `STATUS <role> <term> <commit> <applied>`.
//! SIGTERM stops it cleanly. `--dump` replays the store offline and prints
//! `HAVE <value> <index>` for every applied value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::transport::{Security, TcpTransport, TransportConfig};
use cluster::{
    Disk, LogStore, Member, MemberConfig, Node, NodeConfig, ProposeError, SnapshotError, StateMachine,
};

/// Every applied value by index.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Values {
    applied: u64,
    by_index: BTreeMap<u64, String>,
}

impl StateMachine for Values {
    type Command = String;
    type Response = u64;

    fn apply(&mut self, index: u64, value: String) -> u64 {
        self.applied = index;
        self.by_index.insert(index, value);
        index
    }
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn snapshot(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).expect("encodes")
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (v, _) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(SnapshotError::new)?;
        *self = v;
        Ok(())
    }
}

struct Args {
    id: u64,
    dir: std::path::PathBuf,
    listen: Option<SocketAddr>,
    peers: BTreeMap<u64, SocketAddr>,
    voters: Vec<u64>,
    write_loop: bool,
    dump: bool,
    cluster_id: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        id: 0,
        dir: ".".into(),
        listen: None,
        peers: BTreeMap::new(),
        voters: Vec::new(),
        write_loop: false,
        dump: false,
        cluster_id: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--id" => a.id = val()?.parse()?,
            "--dir" => a.dir = val()?.into(),
            "--listen" => a.listen = Some(val()?.parse()?),
            "--cluster" => a.cluster_id = val()?.parse()?,
            "--peer" => {
                let v = val()?;
                let (id, addr) = v.split_once('=').context("--peer ID=ADDR")?;
                a.peers.insert(id.parse()?, addr.parse()?);
            }
            "--voters" => {
                a.voters = val()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--write-loop" => a.write_loop = true,
            "--dump" => a.dump = true,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.id == 0 {
        bail!("--id is required");
    }
    Ok(a)
}

fn dump(a: &Args) -> anyhow::Result<()> {
    let store = LogStore::open(Disk::open(a.dir.join("log.redb"))?)?;
    let mut node = Node::new(NodeConfig::new(a.id), store, Values::default(), &[])?;
    node.process_ready()?;
    while node.has_ready() {
        node.process_ready()?;
    }
    let _ = node.drain_outputs();
    for (i, v) in &node.state_machine().by_index {
        println!("HAVE {v} {i}");
    }
    println!("APPLIED {}", node.applied_index());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = args()?;
    std::fs::create_dir_all(&a.dir)?;
    if a.dump {
        return dump(&a);
    }
    let listen = a.listen.context("--listen is required")?;
    // A demonstration over plain TCP: the daemon always runs mutual TLS.
    let mut tcfg = TransportConfig::new(a.cluster_id, a.id, listen, Security::InsecurePlaintext);
    tcfg.peers = a.peers.clone();
    tcfg.backoff_max = Duration::from_millis(300);
    let (transport, listener) = TcpTransport::bind(tcfg).await?;
    let mut cfg = MemberConfig::new(a.id);
    cfg.tick = Duration::from_millis(20);
    cfg.request_timeout = Duration::from_secs(2);
    cfg.node.snapshot_interval = 200;
    // The first start of a member creates its store (and bootstraps it with
    // --voters); a restart opens the one it has.
    let path = a.dir.join("log.redb");
    let disk = if path.exists() {
        Disk::open(&path)?
    } else {
        Disk::create(&path)?
    };
    let store = LogStore::open(disk)?;
    let member = Member::start(
        cfg,
        store,
        Values::default(),
        &a.voters,
        Arc::new(transport.clone()),
    )?;
    transport.attach(listener, Arc::new(member.clone()));

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for l in std::io::stdin().lines() {
                match l {
                    Ok(l) if l.trim() == "stop" => stop.store(true, Ordering::SeqCst),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
    {
        let m = member.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(s) = m.status().await {
                    println!("STATUS {:?} {} {} {}", s.role, s.term, s.commit, s.applied);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    if a.write_loop {
        let m = member.clone();
        let stop = stop.clone();
        let id = a.id;
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let value = format!("{id}-{n}");
                match m.propose(value.clone()).await {
                    Ok(index) => {
                        println!("ACK {value} {index}");
                        n += 1;
                    }
                    Err(ProposeError::ShuttingDown) => return,
                    Err(_) => {
                        // Not the leader, or the outcome is unknown: move on
                        // to a new value so an ACK is never ambiguous.
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    member.shutdown().await;
    transport.shutdown();
    println!("STOPPED");
    Ok(())
}

//! SPEC §1: "A server that sees a peer of another release refuses to pair
//! with it and says so in its log and status." A real pair of `vipool node`s
//! on a namespaced broadcast domain (a lone fresh node refuses to serve
//! until it has synced with its peer, so the primary needs its backup);
//! from the backup's host and with the backup's certificate (only an
//! authenticated member gets as far as a frame), a fake peer built with
//! the cluster crate's frame encoder speaks to the primary's raft port as
//! member 2 claiming another release. The primary refuses it (log and `vipool show status` name both
//! releases), nothing reaches raft (term and table unchanged), and it keeps
//! serving. The same frame with the node's own release does reach raft, so
//! the refusal is the release check's doing.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use cluster::raft::eraftpb::{Message, MessageType};
use cluster::transport::{encode_release_frame, PROTOCOL_VERSION};
use common::{in_netns, lab_available, vipool_bin, wait_for, Host, Lab};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vipool::client::Connection;
use vipool::proto::{SwitchReport, TableDump};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const CLIENT_PORT: u16 = 4333;
const OPERATOR_PORT: u16 = 4334;
const RAFT_PORT: u16 = 4335;
const CLUSTER_ID: u64 = 7;
/// What the fake peer claims to run.
const OTHER_RELEASE: &str = "0.0.1-old";
const OURS: &str = env!("CARGO_PKG_VERSION");
/// Generous: the lab shares two cores with compilers.
const WAIT: Duration = Duration::from_secs(30);

/// A server's configuration: VRRP and raft timers that pass validation
/// (Master_Down_Interval 3 x 400 ms + skew above 2 x 10 x 50 ms), slow
/// enough that the shared cores cause no spurious election. No sweep and no
/// client timeout during the test: nothing but the test changes the table,
/// so its applied index tells whether anything was applied.
fn node_config(lab: &Lab, me: (&Host, u64, &str, u8), primary: &Host, backup: &Host) -> String {
    let (host, id, name, priority) = me;
    let license = lab.server_license(name, 16);
    let text = format!(
        r#"
[node]
name = "{name}"
id = {id}
cluster_id = {CLUSTER_ID}
data_dir = "{data}"
{serial}

[vrrp]
interface = "eth0"
vrid = 52
priority = {priority}
vips = ["{VIP}/24"]
advert_interval_ms = 400
pair_handoff = true

[cluster]
peers = [
    {{ id = 1, name = "primary", address = "{primary}:{RAFT_PORT}", role = "server" }},
    {{ id = 2, name = "backup", address = "{backup}:{RAFT_PORT}", role = "server" }},
]
tick_ms = 50
election_ticks = 10
heartbeat_ticks = 2
request_timeout_ms = 2000

[license]
client_port = {CLIENT_PORT}
operator_listen = "{me}:{OPERATOR_PORT}"
{license_lines}
heartbeat_interval_ms = 60000
sweep_interval_ms = 3600000

{tls}"#,
        data = lab.dir().join(format!("{name}-data")).display(),
        tls = lab.tls_section(name),
        serial = license.serial,
        license_lines = license.lines,
        me = host.addr,
        primary = primary.addr,
        backup = backup.addr,
    );
    let path = lab.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write node config");
    let path = path.to_string_lossy().into_owned();
    common::init_member(&path);
    path
}

/// The node's status and table through its operator endpoint, asked from `from`.
fn show(from: &Host, node: Ipv4Addr) -> Result<TableDump, String> {
    common::operator_show(from, node, OPERATOR_PORT)
}

/// Registers a license client through the VIP, from `from`.
fn register(from: &Host, id: &'static str) -> Result<(), String> {
    let tls = common::switch_tls(from, id, "SERIAL");
    in_netns(from, move || {
        common::runtime().block_on(async move {
            let mut conn = tokio::time::timeout(
                Duration::from_secs(2),
                Connection::connect((VIP, CLIENT_PORT), &tls),
            )
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
            tokio::time::timeout(
                Duration::from_secs(5),
                conn.register(id, "SERIAL", "1", SwitchReport::default()),
            )
            .await
            .map_err(|_| "register timed out".to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    })
    .join()
    .expect("register thread")
}

/// A raft heartbeat from member 2 at a term far ahead: delivered, it would
/// make the node step down and follow member 2.
fn disruptive_heartbeat() -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = 2;
    m.to = 1;
    m.term = 1000;
    m
}

/// From the backup's host, with the backup's certificate, connects to the
/// node's raft port as member 2 claiming `release`, sends one frame and
/// returns whether the node closed the connection (it does after a
/// refusal, or when the real backup's next connection replaces this one;
/// otherwise the read times out).
fn fake_peer(lab: &Lab, from: &Host, node: Ipv4Addr, release: &'static str) -> bool {
    let pki = lab.dir().join("pki");
    in_netns(from, move || {
        common::runtime().block_on(async move {
            let identity = cluster::tls::Identity::load(
                &pki.join("ca.crt"),
                &pki.join("backup.crt"),
                &pki.join("backup.key"),
            )
            .expect("the backup's files");
            let tcp = tokio::net::TcpStream::connect((node, RAFT_PORT))
                .await
                .expect("connect to raft port");
            tcp.set_nodelay(true).unwrap();
            let connector = tokio_rustls::TlsConnector::from(identity.client_config().unwrap());
            let name = rustls_pki_types::ServerName::try_from("primary").unwrap();
            let mut s = connector.connect(name, tcp).await.expect("TLS as the backup");
            let frame = encode_release_frame(PROTOCOL_VERSION, release, CLUSTER_ID, &disruptive_heartbeat());
            s.write_all(&frame).await.expect("send frame");
            s.flush().await.expect("flush");
            let mut buf = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                Err(_) => false,
                Ok(Ok(0) | Err(_)) => true,
                Ok(Ok(_)) => panic!("the node never writes on an inbound raft connection"),
            }
        })
    })
    .join()
    .expect("fake peer thread")
}

#[test]
fn a_peer_of_another_release_is_refused_and_the_node_keeps_serving() {
    if !lab_available("a_peer_of_another_release_is_refused_and_the_node_keeps_serving") {
        return;
    }
    assert_ne!(OTHER_RELEASE, OURS);
    // Hosts: 0 the primary, 1 the backup (and the fake peer), 2 a switch.
    let mut lab = Lab::new(3);
    let (a, b, switch) = (lab.hosts[0].clone(), lab.hosts[1].clone(), lab.hosts[2].clone());
    let peer = b.clone();
    let ca = node_config(&lab, (&a, 1, "primary", 200), &a, &b);
    let cb = node_config(&lab, (&b, 2, "backup", 100), &a, &b);
    let log = lab.dir().join("primary.log");
    let node = lab.vipool_logged(&a, &["node", "--config", &ca], &log);
    let _backup = lab.vipool(&b, &["node", "--config", &cb]);

    // The primary takes the VIP and serves.
    assert!(
        wait_for(2 * WAIT, || show(&switch, a.addr).is_ok_and(|d| d.status.serving)),
        "the primary never served: {:?}\n{}",
        show(&switch, a.addr).map(|d| d.status),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    register(&switch, "sw-before").expect("a client registers through the VIP");
    // Both servers' serials and keys and the client are in: the table is
    // settled (each server announces its serial and installs its keys in
    // its own time; the backup's may land after the primary's).
    let settled = |d: &TableDump| {
        ["primary-AP", "backup-AP"]
            .iter()
            .all(|k| d.state.server_keys.contains_key(*k))
            && d.state.servers.len() == 2
            && d.state.clients.contains_key("sw-before")
    };
    assert!(wait_for(WAIT, || show(&switch, a.addr).is_ok_and(|d| settled(&d))));
    let before = show(&switch, a.addr).expect("show before");
    assert!(before.status.warnings.is_empty(), "{:?}", before.status.warnings);

    // The peer of another release: refused, connection closed, nothing delivered.
    for _ in 0..3 {
        assert!(
            fake_peer(&lab, &peer, a.addr, OTHER_RELEASE),
            "the node closes the connection"
        );
    }
    let refusal = format!(
        "peer runs vipool release {OTHER_RELEASE}, this member runs {OURS}: refusing to pair \
         with another release; upgrade both servers to the same release"
    );
    assert!(
        wait_for(WAIT, || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains(&refusal))),
        "log lacks {refusal:?}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&refusal)).collect();
    assert!(
        lines.iter().any(|l| l.contains("ERROR")),
        "logged at error level: {lines:?}"
    );

    // Its status says so, naming both releases, also through `vipool show
    // status`. Until the real backup reconnects (its connection was the
    // one the fake replaced), which clears the warning: so each try
    // refuses a fake peer again and reads both at once.
    let warning =
        format!("runs vipool release {OTHER_RELEASE}, ours {OURS}; upgrade both servers to the same release");
    let warned =
        |w: &String| w.starts_with(&format!("peer refused: {}:", peer.addr)) && w.ends_with(&warning);
    let operator = common::operator_args(&switch);
    let server = format!("{}:{OPERATOR_PORT}", a.addr);
    let mut args = vec![
        vipool_bin(),
        "show".into(),
        "status".into(),
        "--server".into(),
        server,
    ];
    args.extend(operator);
    let mut tries = Vec::new();
    let after = loop {
        let after = show(&switch, a.addr).expect("show after");
        let shown = switch.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let in_status = after.status.warnings.iter().any(warned);
        let in_cli = shown.contains("warning (primary): peer refused:") && shown.contains(&warning);
        if in_status && in_cli {
            break after;
        }
        tries.push(format!(
            "status warnings {:?}; vipool show status:\n{shown}",
            after.status.warnings
        ));
        assert!(tries.len() < 10, "never shown:\n{}", tries.join("\n"));
        assert!(
            fake_peer(&lab, &peer, a.addr, OTHER_RELEASE),
            "the node closes the connection"
        );
    };

    // Nothing reached raft: same term, same table; and it keeps serving.
    assert!(after.status.serving, "{:?}", after.status);
    assert_eq!(after.status.term, before.status.term, "the term is unchanged");
    assert!(after.status.term < 1000);
    assert_eq!(after.status.applied_index, before.status.applied_index);
    assert_eq!(after.state, before.state, "the table is unchanged");
    assert_eq!(after.pool, before.pool);
    register(&switch, "sw-after").expect("still serving through the VIP");
    assert!(wait_for(WAIT, || show(&switch, a.addr)
        .is_ok_and(|d| d.state.clients.contains_key("sw-after"))));
    assert!(node.wait_exit(Duration::ZERO).is_none(), "the node still runs");

    // Control: the very same frame with the node's release reaches raft
    // (the node follows the higher term), and the refusal clears. (The
    // connection may still close: the real backup, whose connection it
    // replaced, reconnects and replaces it in turn.)
    fake_peer(&lab, &peer, a.addr, OURS);
    assert!(
        wait_for(WAIT, || show(&switch, a.addr)
            .is_ok_and(|d| d.status.term >= 1000 && d.status.warnings.is_empty())),
        "the frame of our release was delivered: {:?}",
        show(&switch, a.addr).map(|d| d.status)
    );
    println!(
        "refused release {OTHER_RELEASE:?} (ours {OURS:?}); term {} and applied index {} unchanged; \
         served on; the same frame of our release reached raft",
        before.status.term, before.status.applied_index
    );
}

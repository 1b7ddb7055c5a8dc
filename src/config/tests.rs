//! Every validation error names its field; defaults follow the SPEC.

use std::net::Ipv4Addr;
use std::time::Duration;

use vrrp::sys::GarpConfig;

use super::*;
use crate::license::{IssuerKey, KeyStatement};
use crate::server::request::RequestLimits;
use crate::table::TableConfig;

const PRIMARY: &str = r#"
        [node]
        name = "primary"
        id = 1
        cluster_id = 7
        serial = "CV0012345"

        [vrrp]
        interface = "eth0"
        vrid = 10
        priority = 200
        vips = ["192.0.2.100/24"]

        [cluster]
        peers = [
            { id = 1, name = "primary", address = "192.0.2.11:4335" },
            { id = 2, name = "backup", address = "192.0.2.12:4335" },
            { id = 3, name = "witness", address = "192.0.2.13:4335", role = "witness" },
        ]

        [license]
        issuers = ["/etc/vipool/issuers/acme.pub"]
        key_files = ["/etc/vipool/keys/primary.keys"]
    "#;

const WITNESS: &str = r#"
        [node]
        name = "witness"
        id = 3
        cluster_id = 7

        [cluster]
        peers = [
            { id = 1, name = "primary", address = "192.0.2.11:4335" },
            { id = 2, name = "backup", address = "192.0.2.12:4335" },
            { id = 3, name = "witness", address = "192.0.2.13:4335", role = "witness" },
        ]
    "#;

/// `PRIMARY` with `line` (a `key = value` line) replacing the line that
/// sets the same key, or added to `section` when no line does.
fn edit(base: &str, section: &str, line: &str) -> String {
    let key = line.split('=').next().unwrap().trim();
    let mut out = Vec::new();
    let mut current = "";
    let mut done = false;
    // Open brackets of a multi-line value being replaced.
    let mut skipping = 0i32;
    let depth = |l: &str| l.matches('[').count() as i32 - l.matches(']').count() as i32;
    for l in base.lines() {
        let t = l.trim();
        if skipping > 0 {
            skipping += depth(t);
            continue;
        }
        if t.starts_with('[') {
            if current == section && !done {
                out.push(line.to_owned());
                done = true;
            }
            current = t.trim_matches(|c| c == '[' || c == ']');
        }
        if current == section && t.split('=').next().map(str::trim) == Some(key) && t.contains('=') {
            out.push(line.to_owned());
            done = true;
            skipping = depth(t);
            continue;
        }
        out.push(l.to_owned());
    }
    if !done {
        assert_eq!(current, section, "section [{section}] not found or not last");
        out.push(line.to_owned());
    }
    out.join("\n")
}

fn problems(text: &str) -> Vec<Problem> {
    match text.parse::<Config>() {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected invalid, got {other:?}"),
    }
}

/// Asserts that setting `line` in `[section]` is refused with a problem
/// naming `field`, and returns its display.
#[track_caller]
fn refused(section: &str, line: &str, field: &str) -> String {
    let found = problems(&edit(PRIMARY, section, line));
    let p = found
        .iter()
        .find(|p| p.field == field)
        .unwrap_or_else(|| panic!("{line}: no problem names {field}: {found:?}"));
    let shown = p.to_string();
    assert!(shown.starts_with(field), "{shown}");
    shown
}

#[test]
fn defaults_follow_the_spec() {
    let c: Config = PRIMARY.parse().unwrap();
    assert_eq!(c.vrrp.advert_interval_ms, 1000);
    assert_eq!(c.vrrp.version, 3);
    assert!(c.vrrp.preempt && c.vrrp.accept_mode && c.vrrp.pair_handoff && !c.vrrp.vmac);
    assert_eq!(c.vrrp.preempt_delay_ms, 0);
    assert_eq!(
        c.vrrp.garp,
        GarpSection {
            count: 3,
            interval_ms: 100,
            repeat_after_ms: vec![1000, 2000],
            refresh_s: None
        }
    );
    assert_eq!(c.node.data_dir, Path::new(DEFAULT_DATA_DIR));
    assert_eq!(
        (
            c.cluster.tick_ms,
            c.cluster.election_ticks,
            c.cluster.heartbeat_ticks
        ),
        (100, 10, 3)
    );
    assert_eq!(c.cluster.snapshot_interval, 10_000);
    let l = &c.license;
    assert_eq!(l.heartbeat_interval_ms, 30_000);
    assert_eq!(l.missed_heartbeats, 3);
    assert_eq!(l.silence_remove_s, 30 * 24 * 3600);
    assert_eq!(l.expiry_warning_s, 7 * 24 * 3600);
    assert_eq!(l.sweep_interval_ms, 10_000);
    assert_eq!(l.client_port, DEFAULT_CLIENT_PORT);
    assert_eq!(c.table_config(), TableConfig::default());
    // Defaults that depend on other fields are filled in.
    assert_eq!(c.cluster.listen, Some("192.0.2.11:4335".parse().unwrap()));
    // The operator endpoint is on loopback unless opened.
    assert_eq!(l.operator_listen, Some("127.0.0.1:4334".parse().unwrap()));
    assert_eq!(c.vrrp.peer_address, Some(Ipv4Addr::new(192, 0, 2, 12)));
    assert_eq!(l.max_clients_per_source, 64);
    assert_eq!(l.registrations_per_s_per_source, 16);
    assert_eq!(c.serial(), "CV0012345");
    assert_eq!(l.key_files, [Path::new("/etc/vipool/keys/primary.keys")]);
}

#[test]
fn converts_to_the_parts() {
    let c: Config = PRIMARY.parse().unwrap();
    let s = c.speaker_config();
    assert_eq!(s.interface, "eth0");
    assert_eq!(s.prefix_len, 24);
    assert_eq!(s.garp, GarpConfig::default());
    assert_eq!(s.vrrp.addresses, [Ipv4Addr::new(192, 0, 2, 100)]);
    assert_eq!(s.vrrp.advert_interval_cs, 100);
    assert_eq!(s.vrrp.primary_address, Ipv4Addr::UNSPECIFIED);
    // Adverts are trusted from the other server only (Trust I, item 5).
    assert_eq!(s.vrrp.trusted_sources, [Ipv4Addr::new(192, 0, 2, 12)]);
    assert!(s.vrrp.pair_handoff);
    let server = c.server_config();
    assert_eq!(server.node, "primary");
    assert_eq!(server.vip, Some("192.0.2.100".parse().unwrap()));
    assert_eq!(c.client_address().to_string(), "192.0.2.100:4333");
    assert_eq!(server.limits, RequestLimits::default());
    // Read from files when the node starts: none in the configuration itself.
    assert!(server.trusted.is_empty());
    assert_eq!(c.cluster.initial_voters(), [1, 2, 3]);
    assert_eq!(
        c.cluster.peers_except(1).keys().copied().collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(c.pair_peer().name, "backup");
    assert_eq!(c.me().name, "primary");
    assert!(c.cluster.has_witness());
    assert_eq!(c.cluster.tick(), Duration::from_millis(100));
}

#[test]
fn owner_priority_255_uses_the_owned_vip_as_source() {
    let text = edit(PRIMARY, "vrrp", "priority = 255");
    let text = edit(&text, "vrrp", r#"vips = ["192.0.2.11/24"]"#);
    let c: Config = text.parse().unwrap();
    assert_eq!(c.vrrp_config().primary_address, Ipv4Addr::new(192, 0, 2, 11));
    c.vrrp_config().validate().unwrap();
}

#[test]
fn round_trip_through_toml() {
    for text in [
        PRIMARY.to_owned(),
        edit(PRIMARY, "vrrp", "auth_pass = \"s3cret\""),
    ] {
        let text = edit(&text, "vrrp", "version = 2");
        let text = edit(&text, "vrrp", "source = \"192.0.2.11\"");
        let parsed: AnyConfig = text.parse().unwrap();
        let printed = parsed.to_toml();
        let again: AnyConfig = printed.parse().unwrap();
        assert_eq!(parsed, again, "{printed}");
        assert_eq!(again.to_toml(), printed);
    }
    let witness: AnyConfig = WITNESS.parse().unwrap();
    assert_eq!(witness.role(), Role::Witness);
    assert_eq!(witness.node().name, "witness");
    assert_eq!(witness.to_toml().parse::<AnyConfig>().unwrap(), witness);
    assert!(!witness.to_toml().contains("[vrrp]"));
}

#[test]
fn tells_server_and_witness_files_apart() {
    assert_eq!(PRIMARY.parse::<AnyConfig>().unwrap().role(), Role::Server);
    assert_eq!(WITNESS.parse::<AnyConfig>().unwrap().role(), Role::Witness);
    // A witness entry in a file with server sections.
    let text = PRIMARY.replace(
        "{ id = 1, name = \"primary\", address = \"192.0.2.11:4335\" }",
        "{ id = 1, name = \"primary\", address = \"192.0.2.11:4335\", role = \"witness\" }",
    );
    let err = text.parse::<AnyConfig>().unwrap_err().to_string();
    assert!(err.contains("cluster.peers[0].role = \"witness\""), "{err}");
    // A server's entry without [vrrp]: the parser says what is missing.
    let err = WITNESS
        .replace("id = 3\n", "id = 1\n")
        .replace("name = \"witness\"\n        id", "name = \"primary\"\n        id");
    let err = err.parse::<AnyConfig>().unwrap_err().to_string();
    assert!(err.contains("vrrp"), "{err}");
    // [vrrp] in a witness file.
    let err = format!("{WITNESS}\n[vrrp]\ninterface = \"eth0\"\n").parse::<WitnessConfig>();
    assert!(err.unwrap_err().to_string().contains("vrrp"));
    assert!(WITNESS.parse::<WitnessConfig>().is_ok());
}

#[test]
fn witness_entry_must_be_a_witness() {
    let text = WITNESS
        .replace("id = 3\n", "id = 2\n")
        .replace("name = \"witness\"\n        id", "name = \"backup\"\n        id");
    let err = text.parse::<WitnessConfig>().unwrap_err();
    assert_eq!(err.problems()[0].field, "cluster.peers[1].role", "{err}");
}

#[test]
fn unknown_fields_are_refused() {
    let err = edit(PRIMARY, "vrrp", "prioirty = 100")
        .parse::<Config>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("prioirty"), "{err}");
    let err = edit(PRIMARY, "license", "heartbeat_s = 3")
        .parse::<Config>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("heartbeat_s"), "{err}");
}

#[test]
fn bad_vip_syntax_is_refused_with_its_line() {
    let err = edit(PRIMARY, "vrrp", r#"vips = ["192.0.2.100"]"#)
        .parse::<Config>()
        .unwrap_err();
    assert!(err.to_string().contains("ADDRESS/PREFIX"), "{err}");
    assert!(err.to_string().contains("vips"), "{err}");
    let err = edit(PRIMARY, "vrrp", r#"vips = ["192.0.2.100/33"]"#)
        .parse::<Config>()
        .unwrap_err();
    assert!(err.to_string().contains("1 to 32"), "{err}");
}

#[test]
fn node_problems_name_their_field() {
    refused("node", "name = \"my node\"", "node.name");
    refused("node", "id = 0", "node.id");
    refused("node", "cluster_id = 0", "node.cluster_id");
    refused("node", "data_dir = \"var/lib\"", "node.data_dir");
    let shown = refused(
        "node",
        "require_release = \"0.0.0-other\"",
        "node.require_release",
    );
    assert!(shown.contains(env!("CARGO_PKG_VERSION")), "{shown}");
    let ok = edit(
        PRIMARY,
        "node",
        &format!("require_release = \"{}\"", env!("CARGO_PKG_VERSION")),
    );
    ok.parse::<Config>().unwrap();
}

#[test]
fn vrrp_problems_name_their_field() {
    let shown = refused("vrrp", "priority = 0", "vrrp.priority");
    assert_eq!(
        shown,
        "vrrp.priority = 0: must be 1-254 (255 only if a vip is this node's own address)"
    );
    refused("vrrp", "priority = 255", "vrrp.priority");
    refused("vrrp", "vrid = 0", "vrrp.vrid");
    refused("vrrp", "interface = \"\"", "vrrp.interface");
    refused("vrrp", "interface = \"a-very-long-interface\"", "vrrp.interface");
    refused("vrrp", "vips = []", "vrrp.vips");
    refused(
        "vrrp",
        r#"vips = ["192.0.2.100/24", "192.0.2.101/25"]"#,
        "vrrp.vips",
    );
    refused(
        "vrrp",
        r#"vips = ["192.0.2.100/24", "192.0.2.100/24"]"#,
        "vrrp.vips[1]",
    );
    refused("vrrp", r#"vips = ["224.0.0.18/24"]"#, "vrrp.vips[0]");
    let shown = refused("vrrp", r#"vips = ["192.0.2.11/24"]"#, "vrrp.vips[0]");
    assert!(shown.contains("own address"), "{shown}");
    let shown = refused("vrrp", r#"vips = ["192.0.2.12/24"]"#, "vrrp.vips[0]");
    assert!(shown.contains("backup"), "{shown}");
    refused("vrrp", "advert_interval_ms = 1005", "vrrp.advert_interval_ms");
    refused("vrrp", "advert_interval_ms = 0", "vrrp.advert_interval_ms");
    refused("vrrp", "advert_interval_ms = 50000", "vrrp.advert_interval_ms");
    refused("vrrp", "advert_interval_ms = 1000000", "vrrp.advert_interval_ms");
    let v2 = edit(PRIMARY, "vrrp", "version = 2");
    let v2_bad = problems(&edit(&v2, "vrrp", "advert_interval_ms = 1500"));
    assert_eq!(v2_bad[0].field, "vrrp.advert_interval_ms", "{v2_bad:?}");
    edit(&v2, "vrrp", "auth_pass = \"12345678\"")
        .parse::<Config>()
        .unwrap();
    refused("vrrp", "version = 4", "vrrp.version");
    refused("vrrp", "auth_pass = \"secret\"", "vrrp.auth_pass");
    refused("vrrp", "auth_pass = \"much-too-long\"", "vrrp.auth_pass");
    refused("vrrp", "source = \"0.0.0.0\"", "vrrp.source");
    let shown = refused("vrrp", "source = \"192.0.2.100\"", "vrrp.vips[0]");
    assert!(shown.contains("vrrp.source"), "{shown}");
    refused(
        "vrrp",
        r#"unicast_peers = ["192.0.2.12", "192.0.2.12"]"#,
        "vrrp.unicast_peers[1]",
    );
    refused(
        "vrrp",
        r#"unicast_peers = ["192.0.2.11"]"#,
        "vrrp.unicast_peers[0]",
    );
    refused(
        "vrrp",
        r#"unicast_peers = ["192.0.2.100"]"#,
        "vrrp.unicast_peers[0]",
    );
    refused(
        "vrrp",
        r#"unicast_peers = ["224.0.0.18"]"#,
        "vrrp.unicast_peers[0]",
    );
    refused("vrrp", "garp = { count = 1000 }", "vrrp.garp.count");
    refused("vrrp", "garp = { interval_ms = 0 }", "vrrp.garp.interval_ms");
    refused("vrrp", "garp = { refresh_s = 0 }", "vrrp.garp.refresh_s");
    refused(
        "vrrp",
        "garp = { repeat_after_ms = [0] }",
        "vrrp.garp.repeat_after_ms",
    );
    refused(
        "vrrp",
        "garp = { repeat_after_ms = [70000] }",
        "vrrp.garp.repeat_after_ms",
    );
}

/// The one source the speaker trusts: a wrong one would drop every advert
/// of the peer and leave both servers master, so every way it can be wrong
/// is refused.
#[test]
fn peer_address_defaults_to_the_pair_peer_and_is_checked() {
    let c: Config = edit(PRIMARY, "vrrp", r#"peer_address = "192.0.2.21""#)
        .parse()
        .unwrap();
    assert_eq!(
        c.speaker_config().vrrp.trusted_sources,
        [Ipv4Addr::new(192, 0, 2, 21)]
    );

    let shown = refused("vrrp", r#"peer_address = "192.0.2.11""#, "vrrp.peer_address");
    assert!(shown.contains("own address"), "{shown}");
    let shown = refused("vrrp", r#"peer_address = "192.0.2.100""#, "vrrp.peer_address");
    assert!(shown.contains("is a VIP"), "{shown}");
    refused("vrrp", r#"peer_address = "224.0.0.18""#, "vrrp.peer_address");
    refused("vrrp", r#"peer_address = "0.0.0.0""#, "vrrp.peer_address");
    let shown = refused("vrrp", r#"unicast_peers = ["192.0.2.13"]"#, "vrrp.peer_address");
    assert!(shown.contains("unicast_peers"), "{shown}");
    edit(PRIMARY, "vrrp", r#"unicast_peers = ["192.0.2.12"]"#)
        .parse::<Config>()
        .unwrap();

    // VRRP on other addresses than raft: the default would be wrong.
    let shown = refused("vrrp", r#"source = "198.51.100.11""#, "vrrp.peer_address");
    assert!(
        shown.contains("198.51.100.11") && shown.contains("192.0.2.12"),
        "{shown}"
    );
    let text = edit(PRIMARY, "vrrp", r#"source = "198.51.100.11""#);
    let c: Config = edit(&text, "vrrp", r#"peer_address = "198.51.100.12""#)
        .parse()
        .unwrap();
    assert_eq!(
        c.speaker_config().vrrp.trusted_sources,
        [Ipv4Addr::new(198, 51, 100, 12)]
    );
    // Our own source, given as the peer's.
    let text = edit(PRIMARY, "vrrp", r#"source = "192.0.2.11""#);
    let found = problems(&edit(&text, "vrrp", r#"peer_address = "192.0.2.11""#));
    assert!(found.iter().any(|p| p.field == "vrrp.peer_address"), "{found:?}");

    // A peer reached over IPv6 has no IPv4 default.
    let v6 = r#"peers = [
            { id = 1, name = "primary", address = "192.0.2.11:4335" },
            { id = 2, name = "backup", address = "[2001:db8::12]:4335" },
        ]"#;
    let shown = problems(&edit(PRIMARY, "cluster", v6));
    assert!(shown.iter().any(|p| p.field == "vrrp.peer_address"), "{shown:?}");
    let text = edit(PRIMARY, "vrrp", r#"peer_address = "192.0.2.12""#);
    edit(&text, "cluster", v6).parse::<Config>().unwrap();
}

#[test]
fn cluster_problems_name_their_field() {
    let two = r#"peers = [
            { id = 1, name = "primary", address = "192.0.2.11:4335" },
            { id = 2, name = "backup", address = "192.0.2.12:4335" },
        ]"#;
    edit(PRIMARY, "cluster", two).parse::<Config>().unwrap();
    let cases = [
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" }]"#,
            "cluster.peers",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" },
                { id = 3, name = "c", address = "192.0.2.13:4335" }]"#,
            "cluster.peers",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" },
                { id = 3, name = "w1", address = "192.0.2.13:4335", role = "witness" },
                { id = 4, name = "w2", address = "192.0.2.14:4335", role = "witness" }]"#,
            "cluster.peers",
        ),
        (
            r#"peers = [{ id = 5, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
            "cluster.peers",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 1, name = "b", address = "192.0.2.12:4335" }]"#,
            "cluster.peers[1].id",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 0, name = "b", address = "192.0.2.12:4335" }]"#,
            "cluster.peers[1].id",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "primary", address = "192.0.2.12:4335" }]"#,
            "cluster.peers[1].name",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.11:4335" }]"#,
            "cluster.peers[1].address",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "0.0.0.0:4335" }]"#,
            "cluster.peers[1].address",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:0" },
                { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
            "cluster.peers[0].address",
        ),
        (
            r#"peers = [{ id = 1, name = "first", address = "192.0.2.11:4335" },
                { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
            "cluster.peers[0].name",
        ),
        (
            r#"peers = [{ id = 1, name = "primary", address = "192.0.2.11:4335", role = "witness" },
                { id = 2, name = "b", address = "192.0.2.12:4335" },
                { id = 3, name = "c", address = "192.0.2.13:4335" }]"#,
            "cluster.peers[0].role",
        ),
    ];
    for (line, field) in cases {
        refused("cluster", line, field);
    }
    let shown = refused(
        "cluster",
        r#"peers = [{ id = 9, name = "x", address = "192.0.2.11:4335" },
            { id = 2, name = "b", address = "192.0.2.12:4335" }]"#,
        "cluster.peers",
    );
    assert!(shown.contains("no entry for this node"), "{shown}");
    refused("cluster", "listen = \"0.0.0.0:0\"", "cluster.listen");
    edit(PRIMARY, "cluster", "listen = \"0.0.0.0:4335\"")
        .parse::<Config>()
        .unwrap();
    refused("cluster", "tick_ms = 0", "cluster.tick_ms");
    refused("cluster", "heartbeat_ticks = 0", "cluster.heartbeat_ticks");
    refused("cluster", "election_ticks = 3", "cluster.election_ticks");
    refused("cluster", "snapshot_interval = 0", "cluster.snapshot_interval");
    refused(
        "cluster",
        "request_timeout_ms = 1000",
        "cluster.request_timeout_ms",
    );
    refused("cluster", "max_frame = 1000", "cluster.max_frame");
}

#[test]
fn master_down_interval_must_exceed_two_election_timeouts() {
    // Defaults: 3 x 1000 ms + skew (200) 218.75 ms against 2 x 10 x 100 ms.
    PRIMARY.parse::<Config>().unwrap();
    // 2 x 10 x 200 ms = 4000 ms: an isolated old leader could still serve
    // when this node takes the VIP.
    let shown = refused("cluster", "tick_ms = 200", "vrrp.advert_interval_ms");
    for part in [
        "vrrp.advert_interval_ms = 1000:",
        "3 x vrrp.advert_interval_ms + skew for vrrp.priority 200 = 3218.8 ms",
        "2 x cluster.election_ticks 10 x cluster.tick_ms 200 = 4000 ms",
        "check-quorum",
        "raise vrrp.advert_interval_ms to 1250 or more, or lower cluster.tick_ms or cluster.election_ticks",
    ] {
        assert!(shown.contains(part), "{part:?} missing from {shown}");
    }
    let slow = edit(PRIMARY, "cluster", "tick_ms = 200");
    edit(&slow, "vrrp", "advert_interval_ms = 1250")
        .parse::<Config>()
        .unwrap();
    edit(&slow, "vrrp", "advert_interval_ms = 1240")
        .parse::<Config>()
        .unwrap_err();
    edit(&slow, "cluster", "election_ticks = 8")
        .parse::<Config>()
        .unwrap();
    // Equal is not enough: priority 128 skews half an advert, 3500 ms.
    let equal = edit(PRIMARY, "vrrp", "priority = 128");
    let equal = edit(&equal, "cluster", "tick_ms = 175");
    let p = problems(&equal);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("= 3500.0 ms"), "{}", p[0]);
    assert!(p[0].message.contains("= 3500 ms"), "{}", p[0]);
    // The skew follows the priority: a lower one passes where 200 does not.
    let timers = edit(PRIMARY, "cluster", "tick_ms = 20");
    let timers = edit(&timers, "vrrp", "advert_interval_ms = 100");
    let timers = edit(&timers, "cluster", "election_ticks = 7");
    timers.parse::<Config>().unwrap(); // 321.9 ms > 280 ms
    let timers = edit(&timers, "cluster", "election_ticks = 9");
    let p = problems(&timers); // 321.9 ms against 360 ms
    assert_eq!(p[0].field, "vrrp.advert_interval_ms", "{p:?}");
    edit(&timers, "vrrp", "priority = 20").parse::<Config>().unwrap(); // 392.2 ms
                                                                       // VRRPv2 counts whole seconds: the suggested interval is one.
    let v2 = edit(&slow, "vrrp", "version = 2");
    let shown = problems(&v2)
        .iter()
        .find(|p| p.field == "vrrp.advert_interval_ms")
        .expect("refused")
        .to_string();
    assert!(
        shown.contains("raise vrrp.advert_interval_ms to 2000 or more"),
        "{shown}"
    );
}

#[test]
fn license_problems_name_their_field() {
    // Plain counts are not keys: the old field is refused by name.
    let err = edit(PRIMARY, "license", "keys = { AP = 16 }")
        .parse::<Config>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `keys`"), "{err}");
    let no_serial = PRIMARY.replace("        serial = \"CV0012345\"\n", "");
    let p = problems(&no_serial);
    assert!(
        p.iter()
            .any(|p| p.field == "node.serial" && p.message.contains("serial number")),
        "{p:?}"
    );
    refused("node", "serial = \"CV 1\"", "node.serial");
    refused("node", &format!("serial = \"{}\"", "S".repeat(65)), "node.serial");
    refused("license", "issuers = [\"acme.pub\"]", "license.issuers[0]");
    refused(
        "license",
        "key_files = [\"/k\", \"keys/primary.keys\"]",
        "license.key_files[1]",
    );
    refused("license", "key_files = [\"/k\", \"/k\"]", "license.key_files[1]");
    let shown = refused("license", "issuers = []", "license.issuers");
    assert!(shown.contains("none would count"), "{shown}");
    edit(
        &edit(PRIMARY, "license", "issuers = []"),
        "license",
        "key_files = []",
    )
    .parse::<Config>()
    .unwrap();
    refused(
        "license",
        "max_clients_per_source = 0",
        "license.max_clients_per_source",
    );
    refused(
        "license",
        "registrations_per_s_per_source = 0",
        "license.registrations_per_s_per_source",
    );
    refused(
        "license",
        "requests_per_s_per_client = 0",
        "license.requests_per_s_per_client",
    );
    refused(
        "license",
        "request_burst_per_client = 0",
        "license.request_burst_per_client",
    );
    refused("license", "poolable = [\"AP\", \"ap\"]", "license.poolable[1]");
    refused(
        "license",
        "switch_specific = [\"AP\"]",
        "license.switch_specific[0]",
    );
    refused("license", "poolable = [\"\"]", "license.poolable[0]");
    refused("license", "poolable = [\"A P\"]", "license.poolable[0]");
    let none = problems(&edit(
        &edit(PRIMARY, "license", "poolable = []"),
        "license",
        "switch_specific = []",
    ));
    assert!(none.iter().any(|p| p.field == "license.poolable"), "{none:?}");
    refused(
        "license",
        "heartbeat_interval_ms = 0",
        "license.heartbeat_interval_ms",
    );
    refused("license", "missed_heartbeats = 0", "license.missed_heartbeats");
    refused("license", "silence_remove_s = 60", "license.silence_remove_s");
    refused("license", "sweep_interval_ms = 0", "license.sweep_interval_ms");
    refused("license", "max_frame = 10", "license.max_frame");
    refused("license", "max_connections = 0", "license.max_connections");
    refused(
        "license",
        "connection_threads = 257",
        "license.connection_threads",
    );
    // 0 is allowed: connections on the node's own thread. The default is
    // one thread per CPU, at most 8.
    let inline: Config = edit(PRIMARY, "license", "connection_threads = 0")
        .parse()
        .unwrap();
    assert_eq!(inline.server_config().connection_threads, 0);
    let default: Config = PRIMARY.parse().unwrap();
    assert!((1..=8).contains(&default.server_config().connection_threads));
    for field in ["handshake_timeout_ms", "frame_timeout_ms", "idle_timeout_ms"] {
        refused("license", &format!("{field} = 0"), &format!("license.{field}"));
    }
    refused("license", "client_port = 0", "license.client_port");
    refused("license", "client_port = 4335", "license.client_port");
    refused(
        "license",
        "operator_listen = \"192.0.2.11:0\"",
        "license.operator_listen",
    );
    refused(
        "license",
        "operator_listen = \"0.0.0.0:4333\"",
        "license.operator_listen",
    );
    refused(
        "license",
        "operator_listen = \"0.0.0.0:4335\"",
        "license.operator_listen",
    );
    // A timer in milliseconds for tests is fine.
    let fast = edit(PRIMARY, "license", "heartbeat_interval_ms = 50");
    let fast = edit(&fast, "license", "silence_remove_s = 1");
    fast.parse::<Config>().unwrap();
}

#[test]
fn server_keys_load_verified_and_every_problem_names_its_field_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let acme = IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap();
    let issuers = dir.path().join("acme.pub");
    std::fs::write(&issuers, format!("{}\n", acme.trusted())).unwrap();
    let key = |id: &str, serial: &str| {
        acme.sign(KeyStatement {
            key_id: id.into(),
            license_type: "AP".into(),
            count: 16,
            serial: serial.into(),
            not_before: 1_700_000_000,
            expires: None,
            issuer: "acme".into(),
        })
        .unwrap()
    };
    let keys = dir.path().join("primary.keys");
    std::fs::write(&keys, format!("# ours\n{}\n", key("p-ap", "CV0012345"))).unwrap();
    let text = edit(
        PRIMARY,
        "license",
        &format!("issuers = [{:?}]", issuers.display().to_string()),
    );
    let text = edit(
        &text,
        "license",
        &format!("key_files = [{:?}]", keys.display().to_string()),
    );
    let c: Config = text.parse().unwrap();
    let (trusted, loaded) = c.load_server_keys().unwrap();
    assert_eq!(trusted.names().collect::<Vec<_>>(), ["acme"]);
    assert_eq!(loaded.len(), 1);
    assert_eq!((loaded[0].key.key_id.as_str(), loaded[0].line), ("p-ap", 2));

    // The backup's key in the primary's file, and an issuer file that is not there.
    std::fs::write(
        &keys,
        format!("{}\n{}\n", key("p-ap", "CV0012345"), key("b-ap", "CV2")),
    )
    .unwrap();
    let text = edit(
        &text,
        "license",
        &format!(
            "issuers = [{:?}, \"/nonexistent/globex.pub\"]",
            issuers.display().to_string()
        ),
    );
    let c: Config = text.parse().unwrap();
    let err = c.load_server_keys().unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["license.issuers[1]", "license.key_files[0]"], "{err}");
    let shown = err.problems()[1].to_string();
    assert!(
        shown.starts_with(&format!("license.key_files[0]: {}, line 2: ", keys.display())),
        "{shown}"
    );
    assert!(shown.contains("bound to serial \"CV2\""), "{shown}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = edit(PRIMARY, "vrrp", "priority = 0");
    let text = edit(&text, "node", "cluster_id = 0");
    let text = edit(&text, "license", "missed_heartbeats = 0");
    let err = text.parse::<Config>().unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["node.cluster_id", "vrrp.priority", "license.missed_heartbeats"],
        "{err}"
    );
    assert_eq!(err.to_string().lines().count(), 3);
}

#[test]
fn missing_file_names_the_path() {
    let err = Config::load("/nonexistent/vipool.toml").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/vipool.toml"), "{err}");
}

#[test]
fn witness_operator_endpoint_defaults_to_loopback_and_is_checked() {
    let w: WitnessConfig = WITNESS.parse().unwrap();
    assert_eq!(w.witness.operator_listen.unwrap().to_string(), "127.0.0.1:4334");
    let set = format!("{WITNESS}\n[witness]\noperator_listen = \"192.0.2.13:9000\"\n");
    let w: WitnessConfig = set.parse().unwrap();
    assert_eq!(w.operator_address().to_string(), "192.0.2.13:9000");
    for (value, says) in [
        ("192.0.2.13:4335", "raft address"),
        ("192.0.2.13:0", "needs a port"),
    ] {
        let bad = format!("{WITNESS}\n[witness]\noperator_listen = \"{value}\"\n");
        let err = bad.parse::<WitnessConfig>().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("witness.operator_listen = {value}")),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
    }
    // A server's file has no [witness] section.
    let err = format!("{PRIMARY}\n[witness]\n")
        .parse::<Config>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("witness"), "{err}");
}

#[test]
fn metrics_are_off_by_default_and_their_listener_is_checked() {
    let off: Config = PRIMARY.parse().unwrap();
    assert!(off.metrics.is_off());
    // Off: nothing printed for it by check-config.
    assert!(!toml::to_string(&off).unwrap().contains("[metrics]"));

    let with = |line: &str| format!("{PRIMARY}\n[metrics]\n{line}\n");
    let on: Config = with("listen = \"192.0.2.11:9464\"").parse().unwrap();
    assert_eq!(on.metrics.listen, Some("192.0.2.11:9464".parse().unwrap()));
    let printed = toml::to_string(&on).unwrap();
    assert!(
        printed.contains("[metrics]\nlisten = \"192.0.2.11:9464\""),
        "{printed}"
    );

    let refused = |line: &str, why: &str| {
        let found = problems(&with(line));
        assert!(
            found
                .iter()
                .any(|p| p.field == "metrics.listen" && p.to_string().contains(why)),
            "{line}: {found:?}"
        );
    };
    refused("listen = \"192.0.2.11:0\"", "port 0");
    refused("listen = \"192.0.2.100:9464\"", "is a VIP");
    refused("listen = \"0.0.0.0:4333\"", "license.client_port");
    refused("listen = \"127.0.0.1:4334\"", "operator endpoint");
    refused("listen = \"0.0.0.0:4335\"", "raft address");
    // Not an address at all: a parse error that names the field.
    let bad = with("listen = \"localhost\"")
        .parse::<Config>()
        .unwrap_err()
        .to_string();
    assert!(bad.contains("listen"), "{bad}");
    let unknown = with("listen = \"192.0.2.11:9464\"\nport = 1")
        .parse::<Config>()
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("port"), "{unknown}");
}

/// A VIP equal to this node's own address, with `source` set to that
/// address as the shipped examples do: one mistake, reported once.
#[test]
fn a_vip_that_is_the_own_address_is_reported_once() {
    let text = edit(
        &edit(PRIMARY, "vrrp", r#"source = "192.0.2.11""#),
        "vrrp",
        r#"vips = ["192.0.2.11/24"]"#,
    );
    let found = problems(&text);
    let about_vip: Vec<_> = found.iter().filter(|p| p.field == "vrrp.vips[0]").collect();
    assert_eq!(about_vip.len(), 1, "{found:?}");
    assert!(about_vip[0].to_string().contains("own address"), "{found:?}");
}

/// An integer too large for its field names the field's rule, not serde's
/// type ("expected u8").
#[test]
fn out_of_range_integers_say_the_rule() {
    for (section, line, rule) in [
        ("vrrp", "priority = 300", "vrrp.priority must be 1-254"),
        ("vrrp", "priority = -1", "vrrp.priority must be 1-254"),
        ("vrrp", "vrid = 256", "vrrp.vrid must be 1-255"),
        ("vrrp", "version = 1000", "vrrp.version must be 3"),
        (
            "license",
            "client_port = 70000",
            "license.client_port must be a TCP port",
        ),
    ] {
        let err = edit(PRIMARY, section, line).parse::<Config>().unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, ConfigError::Parse(_)), "{line}: {err:?}");
        assert!(shown.contains(rule), "{line}: {shown}");
        assert!(!shown.contains("expected u"), "{line}: {shown}");
    }
    // In range, the value is read as before.
    let c: Config = edit(PRIMARY, "vrrp", "priority = 254").parse().unwrap();
    assert_eq!(c.vrrp.priority, 254);
}

#[test]
fn the_usage_log_needs_an_absolute_path_in_a_directory_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let check = |path: &str, max_bytes: u64| {
        let mut config: Config = PRIMARY.parse().unwrap();
        config.license.usage_log = Some(path.into());
        config.license.usage_log_max_bytes = max_bytes;
        config.validate().err().map(|e| e.to_string()).unwrap_or_default()
    };
    let ok = dir.path().join("usage.jsonl");
    assert_eq!(check(ok.to_str().unwrap(), 1 << 20), "");
    let missing = dir.path().join("nowhere/usage.jsonl");
    let e = check(missing.to_str().unwrap(), 1 << 20);
    assert!(
        e.contains("license.usage_log") && e.contains("does not exist"),
        "{e}"
    );
    let e = check("usage.jsonl", 1 << 20);
    assert!(e.contains("must be an absolute path"), "{e}");
    let e = check(dir.path().to_str().unwrap(), 1 << 20);
    assert!(e.contains("is a directory"), "{e}");
    let e = check(ok.to_str().unwrap(), 100);
    assert!(e.contains("license.usage_log_max_bytes"), "{e}");
}

#[test]
fn notify_scripts_are_optional_and_checked_in_the_file_and_on_the_host() {
    use std::os::unix::fs::PermissionsExt;
    let off: Config = PRIMARY.parse().unwrap();
    assert!(off.notify.is_off());
    assert_eq!(off.notify.timeout_ms, DEFAULT_NOTIFY_TIMEOUT_MS);
    assert!(!toml::to_string(&off).unwrap().contains("[notify]"));
    assert_eq!(off.notify.check_files(), Ok(()));

    let with = |lines: &str| format!("{PRIMARY}\n[notify]\n{lines}\n");
    let on: Config = with("master = \"/etc/vipool/master.sh\"").parse().unwrap();
    let printed = toml::to_string(&on).unwrap();
    assert!(
        printed.contains("[notify]\nmaster = \"/etc/vipool/master.sh\"\ntimeout_ms = 5000"),
        "{printed}"
    );
    let found = problems(&with("serving = \"notify.sh\"\ntimeout_ms = 10"));
    assert!(
        found
            .iter()
            .any(|p| p.field == "notify.serving" && p.message.contains("absolute")),
        "{found:?}"
    );
    assert!(found.iter().any(|p| p.field == "notify.timeout_ms"), "{found:?}");
    assert!(with("fail = \"/x\"").parse::<Config>().is_err());

    // On the host: exists, executable, not world-writable.
    let dir = tempfile::tempdir().unwrap();
    let script = |name: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let good = script("good.sh", 0o755);
    let section = |path: &std::path::Path| NotifySection {
        backup: Some(path.to_owned()),
        ..NotifySection::default()
    };
    assert_eq!(section(&good).check_files(), Ok(()));
    let refused = |path: &std::path::Path, why: &str| {
        let found = section(path).check_files().unwrap_err();
        assert!(
            found.len() == 1 && found[0].field == "notify.backup" && found[0].message.contains(why),
            "{found:?}"
        );
    };
    refused(&dir.path().join("missing.sh"), "cannot be read");
    refused(dir.path(), "not a regular file");
    refused(&script("plain.sh", 0o644), "chmod 755");
    refused(&script("open.sh", 0o777), "chmod o-w");
}

#[test]
fn trackers_are_optional_checked_in_the_file_and_on_the_host() {
    use std::os::unix::fs::PermissionsExt;
    let off: Config = PRIMARY.parse().unwrap();
    assert!(off.track.is_off());
    assert!(!toml::to_string(&off).unwrap().contains("track"));

    let with = |lines: &str| format!("{PRIMARY}\n{lines}\n");
    let on: Config = with(
        "[[track.interface]]\nname = \"eth1\"\nweight = -50\n\
         [[track.script]]\nname = \"gw\"\ncommand = [\"/usr/bin/true\"]\n",
    )
    .parse()
    .unwrap();
    assert_eq!(on.track.interface[0].weight, Some(-50));
    let s = &on.track.script[0];
    assert_eq!(
        (s.interval_ms, s.timeout_ms, s.fall, s.rise, s.weight),
        (DEFAULT_TRACK_INTERVAL_MS, DEFAULT_TRACK_TIMEOUT_MS, 1, 1, None)
    );
    // Printed with every default, and read back the same.
    let printed = toml::to_string(&on).unwrap();
    assert!(
        printed.contains("[[track.script]]") && printed.contains("interval_ms = 1000"),
        "{printed}"
    );
    assert_eq!(printed.parse::<Config>().unwrap(), on);

    let found = problems(&with(
        "[[track.interface]]\nname = \"a/b\"\n[[track.interface]]\nname = \"eth1\"\nweight = -300\n\
         [[track.interface]]\nname = \"eth1\"\n\
         [[track.script]]\nname = \"g w\"\ncommand = [\"ping\"]\ninterval_ms = 10\ntimeout_ms = 0\nfall = 0\nrise = 101\n\
         [[track.script]]\nname = \"x\"\ncommand = []\n[[track.script]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n",
    ));
    for (field, says) in [
        ("track.interface[0].name", "interface name"),
        ("track.interface[1].weight", "between -253 and 253"),
        ("track.interface[2].name", "tracked twice"),
        ("track.script[0].name", "letters, digits"),
        ("track.script[0].command", "absolute path"),
        ("track.script[0].interval_ms", "between 100"),
        ("track.script[0].timeout_ms", "between 10"),
        ("track.script[0].fall", "between 1 and 100"),
        ("track.script[0].rise", "between 1 and 100"),
        ("track.script[1].command", "must name a program"),
        ("track.script[2].name", "give each its own name"),
    ] {
        assert!(
            found.iter().any(|p| p.field == field && p.message.contains(says)),
            "{field}: {says} not in {found:?}"
        );
    }
    assert_eq!(found.len(), 11, "{found:?}");
    assert!(with("[[track.interface]]\nname = \"eth1\"\nwait = 1\n")
        .parse::<Config>()
        .is_err());
    // The owner's priority never changes: a weight would do nothing.
    let owner = with("[[track.interface]]\nname = \"eth1\"\nweight = -10\n")
        .replace("priority = 200", "priority = 255");
    let found = problems(&owner);
    assert!(
        found
            .iter()
            .any(|p| p.field == "vrrp.priority" && p.message.contains("never changes")),
        "{found:?}"
    );
    let owner_fault =
        with("[[track.interface]]\nname = \"eth1\"\n").replace("priority = 200", "priority = 255");
    // (The owner has rules of its own; only the weight's problem matters here.)
    let found = match owner_fault.parse::<Config>() {
        Ok(_) => Vec::new(),
        Err(e) => e.problems().to_vec(),
    };
    assert!(
        !found.iter().any(|p| p.message.contains("never changes")),
        "{found:?}"
    );

    // On the host: a program that cannot run refuses the file; a missing
    // interface is a warning.
    let dir = tempfile::tempdir().unwrap();
    let program = |name: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let section = |path: &std::path::Path, interface: &str| TrackSection {
        interface: vec![TrackInterface {
            name: interface.into(),
            weight: None,
        }],
        script: vec![TrackScript {
            name: "check".into(),
            command: vec![path.display().to_string(), "arg".into()],
            interval_ms: 1000,
            timeout_ms: 1000,
            fall: 1,
            rise: 1,
            weight: None,
        }],
    };
    let good = program("good.sh", 0o755);
    assert_eq!(section(&good, "lo").check_files(), Ok(vec![]));
    let warned = section(&good, "nosuchif0").check_files().unwrap();
    assert!(
        warned.len() == 1
            && warned[0].contains("track.interface[0].name")
            && warned[0].contains("counts as down"),
        "{warned:?}"
    );
    for (path, why) in [
        (dir.path().join("missing.sh"), "cannot be read"),
        (dir.path().to_owned(), "not a regular file"),
        (program("plain.sh", 0o644), "chmod 755"),
        (program("open.sh", 0o777), "chmod o-w"),
    ] {
        let found = section(&path, "lo").check_files().unwrap_err();
        assert!(
            found.len() == 1 && found[0].field == "track.script[0].command" && found[0].message.contains(why),
            "{found:?}"
        );
    }
}

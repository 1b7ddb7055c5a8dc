//! Every refusal of `request::command`, and what the table then holds.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::license::{IssuerKey, KeyStatement, SeenSignatures};
use crate::proto::KeyRefusal;
use crate::table::limits::{MAX_COUNT, MAX_ID_LEN};
use crate::table::pool::Contributor;
use crate::table::{LicenseType, Reply, TableConfig, VerifiedKey};

const NOW_S: u64 = 1_750_000_000;
const NOW_MS: u64 = NOW_S * 1000;

fn acme() -> IssuerKey {
    IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
}

fn ap() -> LicenseType {
    LicenseType::new("AP")
}

/// A key of `count` AP for `serial`, signed by acme.
fn key(key_id: &str, serial: &str, count: u32) -> SignedKey {
    key_of(&acme(), key_id, serial, "AP", count, None)
}

fn key_of(
    issuer: &IssuerKey,
    key_id: &str,
    serial: &str,
    license_type: &str,
    count: u32,
    expires: Option<u64>,
) -> SignedKey {
    issuer
        .sign(KeyStatement {
            key_id: key_id.into(),
            license_type: license_type.into(),
            count,
            serial: serial.into(),
            not_before: NOW_S - 3600,
            expires,
            issuer: issuer.trusted().name().into(),
        })
        .unwrap()
}

fn switch(id: &str, serial: &str) -> ClientIdentity {
    ClientIdentity::Switch {
        id: id.into(),
        serial: serial.into(),
        issued_s: None,
    }
}

/// A switch as its certificate, issued at `issued_s`, names it.
fn switch_issued(id: &str, serial: &str, issued_s: u64) -> ClientIdentity {
    ClientIdentity::Switch {
        id: id.into(),
        serial: serial.into(),
        issued_s: Some(issued_s),
    }
}

fn alice() -> ClientIdentity {
    ClientIdentity::Operator { name: "alice".into() }
}

fn report(keys: Vec<SignedKey>, used: &[(&str, u32)]) -> SwitchReport {
    SwitchReport {
        builtin: BTreeMap::new(),
        keys,
        used: used.iter().map(|(t, n)| (LicenseType::new(t), *n)).collect(),
    }
}

fn register(id: &str, serial: &str, report: SwitchReport) -> Request {
    Request::Register {
        id: id.into(),
        serial: serial.into(),
        version: "8.10.0".into(),
        report,
    }
}

/// A table behind a serving node: the servers' serials announced and 16 AP
/// on the primary, acme trusted.
struct Node {
    table: LicenseTable,
    trusted: TrustedIssuers,
    limits: RequestLimits,
    registrations: SourceRate,
    seen: SeenSignatures,
    peer: SocketAddr,
    now_ms: u64,
    index: u64,
}

impl Node {
    fn new() -> Self {
        Self::with_limits(RequestLimits::default())
    }

    fn with_limits(limits: RequestLimits) -> Self {
        let mut node = Node {
            table: LicenseTable::new(TableConfig::default()),
            trusted: TrustedIssuers::from_iter([acme().trusted()]),
            registrations: limits.registrations(),
            seen: SeenSignatures::default(),
            limits,
            peer: "192.0.2.50:40000".parse().unwrap(),
            now_ms: NOW_MS,
            index: 0,
        };
        // The pair trusts what this node does (the VIP holder recorded it).
        node.apply(Command::Issuers {
            issuers: node.trusted.by_name_text(),
            by: Actor::Server("primary".into()),
        })
        .unwrap();
        for (server, serial) in [("primary", "CV1"), ("backup", "CV2")] {
            node.apply(Command::ServerSerial {
                server: server.into(),
                serial: serial.into(),
            })
            .unwrap();
        }
        let primary_key = key("p-ap", "CV1", 16)
            .verified(&node.trusted, "CV1", NOW_S)
            .unwrap();
        node.apply(Command::InstallServerKey {
            now_ms: NOW_MS,
            server: "primary".into(),
            key: primary_key,
            by: Actor::Server("primary".into()),
        })
        .unwrap();
        node
    }

    fn apply(&mut self, command: Command) -> Result<Reply, CommandError> {
        self.index += 1;
        self.table.apply_command(self.index, command)
    }

    /// `request::command` at this node.
    fn map(&self, request: Request, who: &ClientIdentity) -> Result<Command, ServerError> {
        let ctx = RequestContext {
            now_ms: self.now_ms,
            peer: self.peer,
            trusted: &self.trusted,
            limits: &self.limits,
            registrations: &self.registrations,
            seen: &self.seen,
            table: &self.table,
        };
        command(request, who, &ctx)
    }

    /// The request mapped and, if accepted, applied; a refusal changes
    /// nothing in the table (checked here, for every test).
    fn send(&mut self, request: Request, who: &ClientIdentity) -> Result<Reply, ServerError> {
        let before = self.table.clone();
        let result = self
            .map(request, who)
            .and_then(|command| self.apply(command).map_err(ServerError::from));
        if result.is_err() {
            assert_eq!(self.table.state(), before.state(), "a refusal changed the table");
            assert_eq!(self.table.pool(), before.pool());
        }
        result
    }

    fn total(&self) -> u64 {
        self.table.pool()[&ap()].total
    }

    fn used(&self) -> u64 {
        self.table.pool()[&ap()].used
    }
}

fn denied(result: Result<impl std::fmt::Debug, ServerError>) -> RequestError {
    match result {
        Err(ServerError::Denied(e)) => e,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn refused(result: Result<impl std::fmt::Debug, ServerError>) -> CommandError {
    match result {
        Err(ServerError::Refused(e)) => e,
        other => panic!("expected a table refusal, got {other:?}"),
    }
}

fn key_refusal(result: Result<impl std::fmt::Debug, ServerError>) -> KeyRefusal {
    match denied(result) {
        RequestError::Key(k) => k,
        other => panic!("expected a key refusal, got {other:?}"),
    }
}

#[test]
fn a_verified_key_counts_and_the_command_carries_it_verified() {
    let mut node = Node::new();
    let k = key("sw1-ap", "S1", 8);
    let command = node
        .map(
            register("sw1", "S1", report(vec![k.clone()], &[])),
            &switch("sw1", "S1"),
        )
        .unwrap();
    let Command::Register {
        now_ms,
        address,
        report,
        ..
    } = &command
    else {
        panic!("{command:?}")
    };
    assert_eq!((*now_ms, address.as_str()), (NOW_MS, "192.0.2.50:40000"));
    assert_eq!(
        report.keys,
        [VerifiedKey {
            key_id: "sw1-ap".into(),
            issuer: "acme".into(),
            serial: "S1".into(),
            key: crate::table::Key::permanent("AP", 8),
        }]
    );
    node.apply(command).unwrap();
    assert_eq!(node.total(), 24);
}

#[test]
fn a_tampered_or_forged_key_is_refused() {
    let mut node = Node::new();
    let line = key("sw1-ap", "S1", 8).to_string();
    // One character of the signature changed.
    let mut chars: Vec<char> = line.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    let tampered: SignedKey = chars.into_iter().collect::<String>().parse().unwrap();
    let k = key_refusal(node.send(
        register("sw1", "S1", report(vec![tampered], &[])),
        &switch("sw1", "S1"),
    ));
    assert!(
        matches!(&k, KeyRefusal::BadSignature { key_id, .. } if key_id == "sw1-ap"),
        "{k}"
    );
    // 8 AP made 80 and signed by someone else calling itself acme.
    let impostor = IssuerKey::from_secret_bytes("acme", &[9; 32]).unwrap();
    let forged = key_of(&impostor, "sw1-ap", "S1", "AP", 80, None);
    let k = key_refusal(node.send(
        register("sw1", "S1", report(vec![forged], &[])),
        &switch("sw1", "S1"),
    ));
    assert!(matches!(k, KeyRefusal::BadSignature { .. }), "{k}");
    assert_eq!(node.total(), 16);
}

#[test]
fn a_key_of_an_untrusted_issuer_is_refused_by_name() {
    let mut node = Node::new();
    let globex = IssuerKey::from_secret_bytes("globex", &[8; 32]).unwrap();
    let k = key_refusal(node.send(
        register(
            "sw1",
            "S1",
            report(vec![key_of(&globex, "g1", "S1", "AP", 8, None)], &[]),
        ),
        &switch("sw1", "S1"),
    ));
    assert!(
        matches!(&k, KeyRefusal::UnknownIssuer { issuer, .. } if issuer == "globex"),
        "{k}"
    );
    assert!(k.to_string().contains("not trusted here"), "{k}");
}

/// A key this node's configuration trusts, but the pair's recorded
/// issuers do not (this node serves and has not recorded its own yet, or
/// another server's issuers are the pair's): refused before proposing,
/// with the table's typed refusal, and the switch drops it.
#[test]
fn a_key_of_an_issuer_the_pair_does_not_record_is_refused_by_the_table() {
    let mut node = Node::new();
    let globex = IssuerKey::from_secret_bytes("globex", &[8; 32]).unwrap();
    node.trusted = TrustedIssuers::from_iter([acme().trusted(), globex.trusted()]);
    let result = node.send(
        register(
            "sw1",
            "S1",
            report(vec![key_of(&globex, "g1", "S1", "AP", 8, None)], &[]),
        ),
        &switch("sw1", "S1"),
    );
    let e = refused(result);
    assert_eq!(
        e,
        CommandError::IssuerNotTrusted {
            key_id: "g1".into(),
            issuer: "globex".into()
        }
    );
    assert!(e.to_string().contains("which the pair does not trust"), "{e}");
    assert_eq!(node.total(), 16);
    // Recorded, it counts.
    node.apply(Command::Issuers {
        issuers: node.trusted.by_name_text(),
        by: Actor::Server("primary".into()),
    })
    .unwrap();
    node.send(
        register(
            "sw1",
            "S1",
            report(vec![key_of(&globex, "g1", "S1", "AP", 8, None)], &[]),
        ),
        &switch("sw1", "S1"),
    )
    .unwrap();
    assert_eq!(node.total(), 24);
}

#[test]
fn a_key_bound_to_another_serial_is_refused_in_every_report() {
    let mut node = Node::new();
    let other = key("sw2-ap", "S2", 8);
    let k = key_refusal(node.send(
        register("sw1", "S1", report(vec![other.clone()], &[])),
        &switch("sw1", "S1"),
    ));
    assert!(
        matches!(&k, KeyRefusal::WrongSerial { bound, presented, .. } if bound == "S2" && presented == "S1"),
        "{k}"
    );
    node.send(register("sw1", "S1", report(vec![], &[])), &switch("sw1", "S1"))
        .unwrap();
    for request in [
        Request::Heartbeat {
            id: "sw1".into(),
            report: report(vec![other.clone()], &[]),
        },
        Request::Update {
            id: "sw1".into(),
            report: report(vec![other.clone()], &[]),
        },
    ] {
        let k = key_refusal(node.send(request, &switch("sw1", "S1")));
        assert!(matches!(k, KeyRefusal::WrongSerial { .. }), "{k}");
    }
    assert_eq!(node.total(), 16);
}

#[test]
fn an_expired_or_not_yet_valid_evaluation_key_is_refused() {
    let mut node = Node::new();
    let expired = key_of(&acme(), "eval", "S1", "AP", 8, Some(NOW_S));
    let k = key_refusal(node.send(
        register("sw1", "S1", report(vec![expired], &[])),
        &switch("sw1", "S1"),
    ));
    assert!(
        matches!(&k, KeyRefusal::Expired { expired, .. } if *expired == NOW_S),
        "{k}"
    );
    let mut early = KeyStatement {
        key_id: "later".into(),
        license_type: ap(),
        count: 8,
        serial: "S1".into(),
        not_before: NOW_S + 1,
        expires: None,
        issuer: "acme".into(),
    };
    let later = acme().sign(early.clone()).unwrap();
    let k = key_refusal(node.send(
        register("sw1", "S1", report(vec![later], &[])),
        &switch("sw1", "S1"),
    ));
    assert!(matches!(k, KeyRefusal::NotYetValid { .. }), "{k}");
    // Valid until a second from now: counts, with its expiry.
    early.not_before = NOW_S - 1;
    early.expires = Some(NOW_S + 1);
    let eval = acme().sign(early).unwrap();
    node.send(
        register("sw1", "S1", report(vec![eval], &[])),
        &switch("sw1", "S1"),
    )
    .unwrap();
    assert_eq!(node.total(), 24);
    let sweep = node.apply(Command::Sweep {
        now_ms: (NOW_S + 1) * 1000,
    });
    assert!(matches!(sweep, Ok(Reply::Swept(s)) if s.expired_keys == 1));
    assert_eq!(node.total(), 16);
}

#[test]
fn the_same_key_from_a_second_switch_is_refused_naming_who_counts_it_and_counts_once() {
    let mut node = Node::new();
    let k = key("shared", "S1", 8);
    node.send(
        register("sw1", "S1", report(vec![k.clone()], &[])),
        &switch("sw1", "S1"),
    )
    .unwrap();
    // A second switch of the same serial (a cloned switch, or a
    // certificate issued twice) presents the very same key line.
    let e = refused(node.send(register("sw2", "S1", report(vec![k], &[])), &switch("sw2", "S1")));
    assert_eq!(
        e,
        CommandError::KeyCounted {
            key_id: "shared".into(),
            by: Contributor::Client("sw1".into()),
        }
    );
    assert!(e.to_string().contains("already counted for client:sw1"), "{e}");
    // The issuer's mistake: the same key id signed for another serial.
    let twin = key("shared", "S3", 8);
    let e = refused(node.send(
        register("sw3", "S3", report(vec![twin], &[])),
        &switch("sw3", "S3"),
    ));
    assert!(matches!(e, CommandError::KeyCounted { .. }), "{e}");
    // A server's key id is counted too.
    let server_id = key("p-ap", "S3", 8);
    let e = refused(node.send(
        register("sw3", "S3", report(vec![server_id], &[])),
        &switch("sw3", "S3"),
    ));
    assert_eq!(
        e,
        CommandError::KeyCounted {
            key_id: "p-ap".into(),
            by: Contributor::Server("primary".into()),
        }
    );
    assert_eq!(node.total(), 24, "counted once");
    // The same key twice in one report.
    let k = key("twice", "S4", 1);
    let e = refused(node.send(
        register("sw4", "S4", report(vec![k.clone(), k], &[])),
        &switch("sw4", "S4"),
    ));
    assert_eq!(e, CommandError::DuplicateKey("twice".into()));
    // Its owner presents it again: fine, still once.
    node.send(
        Request::Heartbeat {
            id: "sw1".into(),
            report: report(vec![key("shared", "S1", 8)], &[]),
        },
        &switch("sw1", "S1"),
    )
    .unwrap();
    assert_eq!(node.total(), 24);
}

#[test]
fn a_switch_acts_only_for_its_own_id_and_serial() {
    let mut node = Node::new();
    node.send(register("sw1", "S1", report(vec![], &[])), &switch("sw1", "S1"))
        .unwrap();
    node.send(
        Request::Acquire {
            id: "sw1".into(),
            license_type: ap(),
            count: 4,
        },
        &switch("sw1", "S1"),
    )
    .unwrap();
    let mallory = switch("mallory", "M1");
    let victim_requests = [
        register("sw1", "ATTACKER", report(vec![], &[])),
        Request::Heartbeat {
            id: "sw1".into(),
            report: report(vec![], &[]),
        },
        Request::Update {
            id: "sw1".into(),
            report: report(vec![], &[]),
        },
        Request::Acquire {
            id: "sw1".into(),
            license_type: ap(),
            count: 1,
        },
        Request::Release {
            id: "sw1".into(),
            license_type: ap(),
            count: 4,
        },
    ];
    for request in victim_requests {
        let e = denied(node.send(request, &mallory));
        assert_eq!(
            e,
            RequestError::NotOwnId {
                certified: "mallory".into(),
                requested: "sw1".into()
            }
        );
        assert_eq!(e.cause(), "client_not_own_id");
    }
    let client = node.table.client("sw1").unwrap();
    assert_eq!((client.serial.as_str(), client.used_of(&ap())), ("S1", 4));
    // Its own id, another serial than its certificate's.
    let e = denied(node.send(register("sw1", "S9", report(vec![], &[])), &switch("sw1", "S1")));
    assert!(matches!(e, RequestError::NotOwnSerial { .. }), "{e}");
    // Operators are not switches, and switches not operators.
    let e = denied(node.send(
        Request::Acquire {
            id: "sw1".into(),
            license_type: ap(),
            count: 1,
        },
        &alice(),
    ));
    assert!(matches!(e, RequestError::SwitchOnly { .. }), "{e}");
    let e = denied(node.send(Request::RemoveClient { id: "sw1".into() }, &switch("sw1", "S1")));
    assert!(matches!(e, RequestError::OperatorOnly { .. }), "{e}");
    assert_eq!(
        denied(node.map(Request::Show { after: None }, &alice())),
        RequestError::NotAChange
    );
}

#[test]
fn a_replacement_switch_takes_over_the_id_and_the_old_one_is_refused() {
    let mut node = Node::new();
    node.send(
        register("sw1", "OLD", report(vec![key("old-ap", "OLD", 8)], &[])),
        &switch("sw1", "OLD"),
    )
    .unwrap();
    // SPEC §5: the new switch, a new certificate for the old id, with keys
    // re-issued for its serial.
    node.send(
        register("sw1", "NEW", report(vec![key("new-ap", "NEW", 8)], &[])),
        &switch("sw1", "NEW"),
    )
    .unwrap();
    let client = node.table.client("sw1").unwrap();
    assert_eq!(client.serial, "NEW");
    assert_eq!(client.keys.len(), 1);
    assert_eq!(client.keys[0].key_id, "new-ap");
    assert_eq!(node.total(), 24, "the old switch's keys left with it");
    // The old switch, still running with its certificate.
    let e = denied(node.send(
        Request::Heartbeat {
            id: "sw1".into(),
            report: report(vec![key("old-ap", "OLD", 8)], &[]),
        },
        &switch("sw1", "OLD"),
    ));
    assert!(
        matches!(&e, RequestError::SerialMismatch { registered, certified, .. } if registered == "NEW" && certified == "OLD"),
        "{e}"
    );
    // A heartbeat of an id the table does not know asks for a registration.
    let e = refused(node.send(
        Request::Heartbeat {
            id: "sw9".into(),
            report: report(vec![], &[]),
        },
        &switch("sw9", "S9"),
    ));
    assert_eq!(e, CommandError::UnknownClient("sw9".into()));
}

#[test]
fn used_above_what_the_pool_can_give_is_refused_in_register_heartbeat_and_update() {
    let mut node = Node::new();
    let sw1 = switch("sw1", "S1");
    // 16 AP in the pool: a new switch claiming 17 is refused, 16 is fine.
    let e = refused(node.send(register("sw1", "S1", report(vec![], &[("AP", 17)])), &sw1));
    assert_eq!(
        e,
        CommandError::ClaimExceedsAvailable {
            license_type: ap(),
            claimed: 17,
            held: 0,
            available: 16
        }
    );
    node.send(register("sw1", "S1", report(vec![], &[("AP", 10)])), &sw1)
        .unwrap();
    let claim = |n: u32| report(vec![], &[("AP", n)]);
    for request in [
        Request::Heartbeat {
            id: "sw1".into(),
            report: claim(17),
        },
        Request::Update {
            id: "sw1".into(),
            report: claim(17),
        },
        register("sw1", "S1", claim(17)),
    ] {
        let e = refused(node.send(request, &sw1));
        assert_eq!(
            e,
            CommandError::ClaimExceedsAvailable {
                license_type: ap(),
                claimed: 17,
                held: 10,
                available: 6
            }
        );
    }
    // Unchanged: idempotent; raising within what is available: fine;
    // lowering: always fine.
    for n in [10, 10, 16, 3] {
        node.send(
            Request::Heartbeat {
                id: "sw1".into(),
                report: claim(n),
            },
            &sw1,
        )
        .unwrap();
        assert_eq!(node.used(), u64::from(n));
    }
    // A report that brings its own key may claim what the key adds.
    node.send(
        Request::Update {
            id: "sw1".into(),
            report: report(vec![key("sw1-ap", "S1", 8)], &[("AP", 24)]),
        },
        &sw1,
    )
    .unwrap();
    assert_eq!((node.total(), node.used()), (24, 24));
    // Over-subscribed (the switch deletes its key: allowed, contributions
    // shrink): no raise of even one.
    node.send(
        Request::Update {
            id: "sw1".into(),
            report: claim(24),
        },
        &sw1,
    )
    .unwrap();
    assert_eq!((node.total(), node.used()), (16, 24));
    let e = refused(node.send(
        Request::Heartbeat {
            id: "sw1".into(),
            report: claim(25),
        },
        &sw1,
    ));
    assert!(
        matches!(e, CommandError::ClaimExceedsAvailable { available: -8, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("over-subscribed"), "{e}");
    // The attack: u32::MAX used is out of bounds before it is a claim.
    let e = refused(node.send(register("sw2", "S2", claim(u32::MAX)), &switch("sw2", "S2")));
    assert!(matches!(e, CommandError::CountTooLarge { .. }), "{e}");
}

#[test]
fn every_bound_is_enforced_before_proposing() {
    let mut node = Node::new();
    let long = "S".repeat(65_536);
    let cases: Vec<(Request, ClientIdentity)> = vec![
        (
            register("sw\u{1b}[2J", "S1", report(vec![], &[])),
            switch("sw\u{1b}[2J", "S1"),
        ),
        (register("sw 1", "S1", report(vec![], &[])), switch("sw 1", "S1")),
        (
            register(&"s".repeat(MAX_ID_LEN + 1), "S1", report(vec![], &[])),
            switch(&"s".repeat(MAX_ID_LEN + 1), "S1"),
        ),
        (register("sw1", &long, report(vec![], &[])), switch("sw1", &long)),
        (register("sw1", "", report(vec![], &[])), switch("sw1", "")),
        (
            Request::Register {
                id: "sw1".into(),
                serial: "S1".into(),
                version: "8.10\u{1b}]0;pwned\u{7}".into(),
                report: report(vec![], &[]),
            },
            switch("sw1", "S1"),
        ),
    ];
    for (request, who) in cases {
        let e = refused(node.send(request, &who));
        assert!(matches!(e, CommandError::Bound(_)), "{e}");
    }
    let sw1 = switch("sw1", "S1");
    let many: Vec<SignedKey> = (0..65).map(|n| key(&format!("k{n}"), "S1", 1)).collect();
    let e = refused(node.send(register("sw1", "S1", report(many, &[])), &sw1));
    assert_eq!(
        e,
        CommandError::TooManyKeys {
            count: 65,
            max: 64,
            per: "client".into()
        }
    );
    let mut types = report(vec![], &[]);
    types.builtin = (0..33).map(|n| (LicenseType::new(format!("T{n}")), 1)).collect();
    let e = refused(node.send(register("sw1", "S1", types), &sw1));
    assert_eq!(e, CommandError::TooManyTypes { count: 33, max: 32 });
    let mut builtin = report(vec![], &[]);
    builtin.builtin.insert(ap(), MAX_COUNT + 1);
    let e = refused(node.send(register("sw1", "S1", builtin), &sw1));
    assert!(matches!(e, CommandError::CountTooLarge { count, .. } if count == MAX_COUNT + 1));
    let e = refused(node.send(
        register("sw1", "S1", report(vec![], &[("AP", MAX_COUNT + 1)])),
        &sw1,
    ));
    assert!(matches!(e, CommandError::CountTooLarge { .. }), "{e}");
    let e = refused(node.send(register("sw1", "S1", report(vec![], &[("BOGUS", 1)])), &sw1));
    assert_eq!(e, CommandError::UnknownType(LicenseType::new("BOGUS")));
    let e = refused(node.send(register("sw1", "S1", report(vec![], &[("PEFV", 1)])), &sw1));
    assert_eq!(e, CommandError::NotPoolable(LicenseType::new("PEFV")));
    assert!(node.table.state().clients.is_empty());
}

#[test]
fn one_source_holds_a_bounded_number_of_clients_and_registers_at_a_bounded_rate() {
    let mut node = Node::with_limits(RequestLimits {
        max_clients_per_source: 2,
        registrations_per_s_per_source: 1,
        ..RequestLimits::default()
    });
    for n in 1..=2 {
        let id = format!("sw{n}");
        node.send(register(&id, &id, report(vec![], &[])), &switch(&id, &id))
            .unwrap();
    }
    // A third client from the same address: refused, whatever its id.
    node.now_ms += 5_000;
    let e = denied(node.send(register("sw3", "sw3", report(vec![], &[])), &switch("sw3", "sw3")));
    assert_eq!(
        e,
        RequestError::TooManyClients {
            source_address: "192.0.2.50".into(),
            max: 2
        }
    );
    // Its own clients re-register; another address has its own room.
    node.send(register("sw1", "sw1", report(vec![], &[])), &switch("sw1", "sw1"))
        .unwrap();
    node.peer = "192.0.2.51:40000".parse().unwrap();
    node.send(register("sw3", "sw3", report(vec![], &[])), &switch("sw3", "sw3"))
        .unwrap();
    assert_eq!(node.table.clients_from(IpAddr::from([192, 0, 2, 50])), 2);
    assert_eq!(node.table.clients_from(IpAddr::from([192, 0, 2, 51])), 1);
    // A burst of two, then one a second.
    node.send(register("sw3", "sw3", report(vec![], &[])), &switch("sw3", "sw3"))
        .unwrap();
    let e = denied(node.send(register("sw3", "sw3", report(vec![], &[])), &switch("sw3", "sw3")));
    assert!(
        matches!(
            e,
            RequestError::RegistrationRate {
                retry_after_ms: 1000,
                per_s: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.cause(), "client_registration_rate");
    node.now_ms += 1_000;
    node.send(register("sw3", "sw3", report(vec![], &[])), &switch("sw3", "sw3"))
        .unwrap();
}

#[test]
fn operators_remove_clients_install_and_remove_keys_under_their_name() {
    let mut node = Node::new();
    node.send(
        register("sw1", "S1", report(vec![key("sw1-ap", "S1", 8)], &[])),
        &switch("sw1", "S1"),
    )
    .unwrap();
    // A key for the backup, verified against the backup's serial.
    let backup_key = key("b-ap", "CV2", 16);
    let command = node
        .map(
            Request::InstallKey {
                server: "backup".into(),
                key: backup_key.clone(),
            },
            &alice(),
        )
        .unwrap();
    assert!(
        matches!(&command, Command::InstallServerKey { by: Actor::Operator(n), server, .. } if n == "alice" && server == "backup"),
        "{command:?}"
    );
    node.apply(command).unwrap();
    assert_eq!(node.total(), 40);
    assert_eq!(
        node.table.state().server_keys["b-ap"].installed_by,
        Actor::Operator("alice".into())
    );
    // The primary's key is not the backup's; an unknown server has no serial.
    let k = key_refusal(node.send(
        Request::InstallKey {
            server: "backup".into(),
            key: key("p-ap-2", "CV1", 16),
        },
        &alice(),
    ));
    assert!(matches!(k, KeyRefusal::WrongSerial { .. }), "{k}");
    let e = refused(node.send(
        Request::InstallKey {
            server: "tertiary".into(),
            key: key("t-ap", "CV3", 16),
        },
        &alice(),
    ));
    assert_eq!(e, CommandError::UnknownServer("tertiary".into()));
    let e = refused(node.send(
        Request::InstallKey {
            server: "backup".into(),
            key: backup_key,
        },
        &alice(),
    ));
    assert_eq!(e, CommandError::KeyExists("b-ap".into()));
    // A client's key is the client's: not removed as a server key.
    let e = refused(node.send(
        Request::RemoveKey {
            key_id: "sw1-ap".into(),
        },
        &alice(),
    ));
    assert!(matches!(e, CommandError::KeyOfClient { .. }), "{e}");
    node.send(
        Request::RemoveKey {
            key_id: "b-ap".into(),
        },
        &alice(),
    )
    .unwrap();
    assert_eq!(node.total(), 24);
    let command = node
        .map(Request::RemoveClient { id: "sw1".into() }, &alice())
        .unwrap();
    assert_eq!(command.describe(), "operator \"alice\" removes client \"sw1\"");
    node.apply(command).unwrap();
    assert_eq!(node.total(), 16);
    let e = refused(node.send(Request::RemoveClient { id: "sw1".into() }, &alice()));
    assert_eq!(e, CommandError::UnknownClient("sw1".into()));
}

/// The issue's findings, replayed: none changes the pool or the victim.
#[test]
fn the_attacks_of_the_issue_change_nothing() {
    let mut node = Node::new();
    node.send(
        register("victim", "V1", report(vec![key("v-ap", "V1", 4)], &[])),
        &switch("victim", "V1"),
    )
    .unwrap();
    node.send(
        Request::Acquire {
            id: "victim".into(),
            license_type: ap(),
            count: 4,
        },
        &switch("victim", "V1"),
    )
    .unwrap();
    let before = node.table.clone();
    let attacker = switch("attacker", "A1");
    // Plain counts are not keys: there is no way to say "1,000,000 AP"
    // but a signed key, and the attacker's own keys are bound to nothing
    // it holds.
    let big = key_of(
        &IssuerKey::generate("acme").unwrap(),
        "big",
        "A1",
        "AP",
        1_000_000,
        None,
    );
    assert!(node
        .send(register("attacker", "A1", report(vec![big], &[])), &attacker)
        .is_err());
    let many: Vec<SignedKey> = (0..6_000)
        .take(100)
        .map(|n| key(&format!("m{n}"), "A1", u32::MAX))
        .collect();
    assert!(node
        .send(register("attacker", "A1", report(many, &[])), &attacker)
        .is_err());
    assert!(node
        .send(
            register("attacker", "A1", report(vec![], &[("AP", u32::MAX)])),
            &attacker
        )
        .is_err());
    assert!(node
        .send(
            Request::Release {
                id: "victim".into(),
                license_type: ap(),
                count: 4
            },
            &attacker
        )
        .is_err());
    assert!(node
        .send(register("victim", "ATTACKER", report(vec![], &[])), &attacker)
        .is_err());
    assert!(node
        .send(
            register("attacker", &"X".repeat(65_000), report(vec![], &[])),
            &switch("attacker", &"X".repeat(65_000))
        )
        .is_err());
    assert_eq!(node.table.state(), before.state());
    assert_eq!(node.table.pool(), before.pool());
}

/// The limits are the node's policy: raised by configuration, 10,000
/// simulated switches registering from one test host within a second all
/// get in.
#[test]
fn ten_thousand_switches_from_one_host_register_within_a_second_when_the_limits_are_raised() {
    let mut node = Node::with_limits(RequestLimits {
        max_clients_per_source: 10_000,
        registrations_per_s_per_source: 10_000,
        ..RequestLimits::default()
    });
    for n in 0..10_000u64 {
        node.now_ms = NOW_MS + n / 10;
        let id = format!("sw-{n:05}");
        // Mapped and applied without `send`'s copy of the table before each.
        let command = node
            .map(register(&id, &id, report(vec![], &[])), &switch(&id, &id))
            .unwrap();
        node.apply(command).unwrap();
    }
    assert_eq!(
        node.table.clients_from(node.peer.ip()),
        10_000,
        "every one of them in the table"
    );
    // One more is over the configured limit.
    let e = denied(node.map(
        register("sw-10000", "sw-10000", report(vec![], &[])),
        &switch("sw-10000", "sw-10000"),
    ));
    assert!(
        matches!(e, RequestError::TooManyClients { max: 10_000, .. }),
        "{e}"
    );
}

/// SPEC §5 and §9: a replaced switch's certificate (issued before its
/// replacement's) is refused for every request of its id, before anything
/// is proposed, with a table error that says what happened.
#[test]
fn a_replaced_switchs_certificate_is_refused_before_proposing() {
    let mut node = Node::new();
    let old = switch_issued("sw1", "OLD", NOW_S - 7_200);
    let new = switch_issued("sw1", "NEW", NOW_S - 600);
    node.send(register("sw1", "OLD", report(vec![], &[("AP", 2)])), &old)
        .unwrap();
    // The command carries the certificate's issue time.
    let mapped = node
        .map(register("sw1", "OLD", report(vec![], &[])), &old)
        .unwrap();
    assert!(
        matches!(&mapped, Command::Certified { issued_s, command }
            if *issued_s == NOW_S - 7_200 && matches!(**command, Command::Register { .. })),
        "{mapped:?}"
    );
    node.send(register("sw1", "NEW", report(vec![], &[("AP", 1)])), &new)
        .unwrap();
    let acquire = Request::Acquire {
        id: "sw1".into(),
        license_type: ap(),
        count: 1,
    };
    // The old certificate registering again; an earlier certificate of
    // the new serial (a stolen one, say) acting for the id.
    let earlier_new = switch_issued("sw1", "NEW", NOW_S - 3_000);
    for (request, who) in [
        (register("sw1", "OLD", report(vec![], &[])), &old),
        (register("sw1", "NEW", report(vec![], &[])), &earlier_new),
        (acquire.clone(), &earlier_new),
    ] {
        match node.send(request, who) {
            Err(ServerError::Refused(CommandError::SupersededCertificate { id, floor, .. })) => {
                assert_eq!((id.as_str(), floor), ("sw1", NOW_S - 600));
            }
            other => panic!("expected a superseded certificate, got {other:?}"),
        }
    }
    // The old certificate's other requests were refused before already:
    // its serial is not the registered one.
    assert!(matches!(
        denied(node.send(acquire.clone(), &old)),
        RequestError::SerialMismatch { .. }
    ));
    assert_eq!(node.table.client("sw1").unwrap().serial, "NEW");
    node.send(acquire, &new).unwrap();
    assert_eq!(node.used(), 2);
}

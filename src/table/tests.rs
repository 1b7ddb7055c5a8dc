//! What `apply` refuses of an entry, however it got into the log: every
//! check the table can make from the entry alone. Each refusal changes
//! nothing.

use super::limits::{MAX_COUNT, MAX_KEYS_PER_SERVER};
use super::*;

fn ap() -> LicenseType {
    LicenseType::new("AP")
}

fn vkey(key_id: &str, serial: &str, count: u32, expires_at_ms: Option<u64>) -> VerifiedKey {
    VerifiedKey {
        key_id: key_id.into(),
        issuer: "acme".into(),
        serial: serial.into(),
        key: Key {
            license_type: ap(),
            count,
            expires_at_ms,
        },
    }
}

fn report(keys: Vec<VerifiedKey>, used: u32) -> ClientReport {
    ClientReport {
        builtin: BTreeMap::new(),
        keys,
        used: if used > 0 {
            BTreeMap::from([(ap(), used)])
        } else {
            BTreeMap::new()
        },
    }
}

fn register(id: &str, serial: &str, report: ClientReport) -> Command {
    Command::Register {
        now_ms: 100,
        id: id.into(),
        serial: serial.into(),
        address: "192.0.2.50:4000".into(),
        version: "8.10".into(),
        report,
    }
}

/// The pair trusts "acme", the issuer of every key here, as the VIP
/// holder records it before any key.
pub(crate) fn trusting_acme() -> Command {
    let acme = crate::license::IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap();
    Command::Issuers {
        issuers: std::iter::once(acme.trusted())
            .collect::<crate::license::TrustedIssuers>()
            .by_name_text(),
        by: Actor::Server("primary".into()),
    }
}

/// A table trusting "acme", with the primary's serial announced and 16 AP
/// installed on it.
fn table() -> LicenseTable {
    let mut t = LicenseTable::new(TableConfig::default());
    t.apply_command(0, trusting_acme()).unwrap();
    t.apply_command(
        1,
        Command::ServerSerial {
            server: "primary".into(),
            serial: "CV1".into(),
        },
    )
    .unwrap();
    t.apply_command(
        2,
        Command::InstallServerKey {
            now_ms: 0,
            server: "primary".into(),
            key: vkey("p-ap", "CV1", 16, None),
            by: Actor::Server("primary".into()),
        },
    )
    .unwrap();
    t
}

#[track_caller]
fn refused(t: &mut LicenseTable, command: Command) -> CommandError {
    let before = t.clone();
    let shown = format!("{command:?}");
    let err = t.apply_command(t.applied_index() + 1, command).unwrap_err();
    assert_eq!(t.state(), before.state(), "{shown}");
    assert_eq!(t.pool(), before.pool(), "{shown}");
    assert_eq!(t.derived, before.derived, "{shown}");
    err
}

#[test]
fn a_key_id_counts_once_in_the_whole_table() {
    let mut t = table();
    t.apply_command(
        3,
        register("sw1", "S1", report(vec![vkey("k", "S1", 8, None)], 0)),
    )
    .unwrap();
    let err = refused(
        &mut t,
        register("sw2", "S2", report(vec![vkey("k", "S2", 8, None)], 0)),
    );
    assert_eq!(
        err,
        CommandError::KeyCounted {
            key_id: "k".into(),
            by: Contributor::Client("sw1".into())
        }
    );
    let err = refused(
        &mut t,
        register("sw2", "S2", report(vec![vkey("p-ap", "S2", 8, None)], 0)),
    );
    assert!(
        matches!(
            err,
            CommandError::KeyCounted {
                by: Contributor::Server(_),
                ..
            }
        ),
        "{err}"
    );
    let err = refused(
        &mut t,
        Command::InstallServerKey {
            now_ms: 0,
            server: "primary".into(),
            key: vkey("k", "CV1", 8, None),
            by: Actor::Operator("alice".into()),
        },
    );
    assert!(
        matches!(
            err,
            CommandError::KeyCounted {
                by: Contributor::Client(_),
                ..
            }
        ),
        "{err}"
    );
    let err = refused(
        &mut t,
        register(
            "sw3",
            "S3",
            report(vec![vkey("d", "S3", 1, None), vkey("d", "S3", 1, None)], 0),
        ),
    );
    assert_eq!(err, CommandError::DuplicateKey("d".into()));
    assert_eq!(t.pool()[&ap()].total, 24);
    assert_eq!(t.key_owner("k"), Some(&Contributor::Client("sw1".into())));
    // Once its owner is gone, the key id is free.
    t.apply_command(
        9,
        Command::RemoveClient {
            id: "sw1".into(),
            by: Actor::Operator("alice".into()),
        },
    )
    .unwrap();
    assert_eq!(t.key_owner("k"), None);
    t.apply_command(
        10,
        register("sw2", "S2", report(vec![vkey("k", "S2", 8, None)], 0)),
    )
    .unwrap();
}

/// Issue 10: a key counts only if its issuer is one the pair trusts, as
/// the log recorded them (`Command::Issuers`), decided from the entry and
/// the replicated state alone: every replica refuses alike, whatever its
/// own configuration trusts. Before any issuer is recorded no key counts.
#[test]
fn a_key_counts_only_if_the_pair_trusts_its_issuer() {
    let globex = |id: &str, serial: &str| VerifiedKey {
        issuer: "globex".into(),
        ..vkey(id, serial, 8, None)
    };
    let untrusted = |key_id: &str| CommandError::IssuerNotTrusted {
        key_id: key_id.into(),
        issuer: "globex".into(),
    };
    // A brand-new table: nothing recorded, nothing counts.
    let mut fresh = LicenseTable::new(TableConfig::default());
    fresh
        .apply_command(
            1,
            Command::ServerSerial {
                server: "primary".into(),
                serial: "CV1".into(),
            },
        )
        .unwrap();
    let err = refused(
        &mut fresh,
        Command::InstallServerKey {
            now_ms: 0,
            server: "primary".into(),
            key: vkey("p-ap", "CV1", 16, None),
            by: Actor::Server("primary".into()),
        },
    );
    assert_eq!(
        err,
        CommandError::IssuerNotTrusted {
            key_id: "p-ap".into(),
            issuer: "acme".into()
        }
    );
    assert_eq!(err.cause(), "table_issuer_not_trusted");

    // acme recorded: globex's keys are refused in every report and install.
    let mut t = table();
    let err = refused(&mut t, register("sw1", "S1", report(vec![globex("g1", "S1")], 0)));
    assert_eq!(err, untrusted("g1"));
    t.apply_command(
        3,
        register("sw1", "S1", report(vec![vkey("a1", "S1", 8, None)], 0)),
    )
    .unwrap();
    for command in [
        Command::Heartbeat {
            now_ms: 200,
            id: "sw1".into(),
            address: "192.0.2.50:4000".into(),
            report: report(vec![vkey("a1", "S1", 8, None), globex("g1", "S1")], 0),
        },
        Command::Update {
            now_ms: 200,
            id: "sw1".into(),
            report: report(vec![globex("g1", "S1")], 0),
        },
        Command::InstallServerKey {
            now_ms: 0,
            server: "primary".into(),
            key: globex("g1", "CV1"),
            by: Actor::Operator("alice".into()),
        },
    ] {
        assert_eq!(refused(&mut t, command), untrusted("g1"));
    }
    assert_eq!(t.pool()[&ap()].total, 24);

    // The VIP holder records globex only: acme's keys stop counting at
    // once, the server's and the client's, on every replica alike.
    let mut other = t.clone();
    let globex_only = Command::Issuers {
        issuers: [crate::license::IssuerKey::from_secret_bytes("globex", &[9; 32])
            .unwrap()
            .trusted()]
        .into_iter()
        .collect::<crate::license::TrustedIssuers>()
        .by_name_text(),
        by: Actor::Server("backup".into()),
    };
    let reply = t.apply_command(4, globex_only.clone()).unwrap();
    assert_eq!(other.apply_command(4, globex_only).unwrap(), reply);
    assert_eq!(t, other);
    assert!(t.state().server_keys.is_empty());
    assert!(t.client("sw1").unwrap().keys.is_empty());
    assert_eq!(t.pool().get(&ap()).map_or(0, |e| e.total), 0);
    assert_eq!(t.key_owner("a1"), None);
    assert!(derived_matches(&t));
    // And globex's count from now on.
    t.apply_command(5, register("sw1", "S1", report(vec![globex("g1", "S1")], 0)))
        .unwrap();
    assert_eq!(t.pool()[&ap()].total, 8);
}

#[test]
fn a_key_must_be_bound_to_its_presenter_and_unexpired_at_the_entry_time() {
    let mut t = table();
    let err = refused(
        &mut t,
        register("sw1", "S1", report(vec![vkey("k", "S2", 8, None)], 0)),
    );
    assert_eq!(
        err,
        CommandError::KeyNotBound {
            key_id: "k".into(),
            bound: "S2".into(),
            presenter: "S1".into()
        }
    );
    let err = refused(
        &mut t,
        register("sw1", "S1", report(vec![vkey("k", "S1", 8, Some(100))], 0)),
    );
    assert_eq!(err, CommandError::KeyExpired("k".into()));
    let err = refused(
        &mut t,
        register("sw1", "S1", report(vec![vkey("k", "S1", 0, None)], 0)),
    );
    assert_eq!(err, CommandError::ZeroCount);
    t.apply_command(3, register("sw1", "S1", report(vec![], 0)))
        .unwrap();
    // A heartbeat's keys are bound to the serial the table holds.
    let err = refused(
        &mut t,
        Command::Heartbeat {
            now_ms: 100,
            id: "sw1".into(),
            address: "192.0.2.50:4000".into(),
            report: report(vec![vkey("k", "S9", 8, None)], 0),
        },
    );
    assert!(matches!(err, CommandError::KeyNotBound { .. }), "{err}");
    // Servers: the key must be bound to the server's announced serial.
    let install = |server: &str, key| Command::InstallServerKey {
        now_ms: 100,
        server: server.into(),
        key,
        by: Actor::Server(server.into()),
    };
    let err = refused(&mut t, install("primary", vkey("p-2", "CV9", 1, None)));
    assert!(matches!(err, CommandError::KeyNotBound { .. }), "{err}");
    let err = refused(&mut t, install("backup", vkey("b-1", "CV2", 1, None)));
    assert_eq!(err, CommandError::UnknownServer("backup".into()));
    let err = refused(&mut t, install("primary", vkey("p-ap", "CV1", 16, None)));
    assert_eq!(err, CommandError::KeyExists("p-ap".into()));
    let err = refused(&mut t, install("primary", vkey("p-3", "CV1", 1, Some(100))));
    assert_eq!(err, CommandError::KeyExpired("p-3".into()));
}

#[test]
fn strings_and_counts_out_of_bounds_are_refused() {
    let mut t = table();
    let long = "x".repeat(65_536);
    for command in [
        register("sw\u{1b}[31m", "S1", report(vec![], 0)),
        register("", "S1", report(vec![], 0)),
        register("sw1", &long, report(vec![], 0)),
        register("sw1", "S 1", report(vec![], 0)),
        Command::Register {
            now_ms: 0,
            id: "sw1".into(),
            serial: "S1".into(),
            address: long.clone(),
            version: "v".into(),
            report: report(vec![], 0),
        },
        Command::Register {
            now_ms: 0,
            id: "sw1".into(),
            serial: "S1".into(),
            address: "a".into(),
            version: "\u{1b}]0;x\u{7}".into(),
            report: report(vec![], 0),
        },
        register("sw1", "S1", report(vec![vkey(&long, "S1", 1, None)], 0)),
        register(
            "sw1",
            "S1",
            report(
                vec![VerifiedKey {
                    issuer: "ac me".into(),
                    ..vkey("k", "S1", 1, None)
                }],
                0,
            ),
        ),
        Command::RemoveClient {
            id: "sw1".into(),
            by: Actor::Operator("eve\n".into()),
        },
        Command::ServerSerial {
            server: "primary".into(),
            serial: long.clone(),
        },
        Command::ServerSerial {
            server: long.clone(),
            serial: "CV1".into(),
        },
    ] {
        let err = refused(&mut t, command);
        assert!(matches!(err, CommandError::Bound(_)), "{err}");
    }
    let keys: Vec<VerifiedKey> = (0..65).map(|n| vkey(&format!("k{n}"), "S1", 1, None)).collect();
    let err = refused(&mut t, register("sw1", "S1", report(keys, 0)));
    assert!(
        matches!(err, CommandError::TooManyKeys { count: 65, .. }),
        "{err}"
    );
    let mut types = report(vec![], 0);
    types.used = (0..33).map(|n| (LicenseType::new(format!("T{n}")), 0)).collect();
    let err = refused(&mut t, register("sw1", "S1", types));
    assert!(
        matches!(err, CommandError::TooManyTypes { count: 33, .. }),
        "{err}"
    );
    let mut builtin = report(vec![], 0);
    builtin.builtin.insert(ap(), MAX_COUNT + 1);
    let err = refused(&mut t, register("sw1", "S1", builtin));
    assert!(matches!(err, CommandError::CountTooLarge { .. }), "{err}");
    let err = refused(&mut t, register("sw1", "S1", report(vec![], u32::MAX)));
    assert!(matches!(err, CommandError::CountTooLarge { .. }), "{err}");
}

#[test]
fn a_claim_above_what_the_pool_can_give_is_refused_in_every_report() {
    let mut t = table();
    let err = refused(&mut t, register("sw1", "S1", report(vec![], 17)));
    assert_eq!(
        err,
        CommandError::ClaimExceedsAvailable {
            license_type: ap(),
            claimed: 17,
            held: 0,
            available: 16
        }
    );
    t.apply_command(3, register("sw1", "S1", report(vec![], 10)))
        .unwrap();
    let heartbeat = |used| Command::Heartbeat {
        now_ms: 100,
        id: "sw1".into(),
        address: "192.0.2.50:4000".into(),
        report: report(vec![], used),
    };
    let update = |used| Command::Update {
        now_ms: 100,
        id: "sw1".into(),
        report: report(vec![], used),
    };
    for command in [
        heartbeat(17),
        update(17),
        register("sw1", "S1", report(vec![], 17)),
    ] {
        let err = refused(&mut t, command);
        assert!(
            matches!(
                err,
                CommandError::ClaimExceedsAvailable {
                    held: 10,
                    available: 6,
                    ..
                }
            ),
            "{err}"
        );
    }
    t.apply_command(4, heartbeat(16)).unwrap();
    t.apply_command(5, update(2)).unwrap();
    assert_eq!(t.pool()[&ap()].used, 2);
    // A client that went down holds nothing: coming back, its claim is new.
    t.apply_command(6, register("sw2", "S2", report(vec![], 14)))
        .unwrap();
    t.apply_command(
        7,
        Command::Sweep {
            now_ms: 100 + 4 * 30_000,
        },
    )
    .unwrap();
    assert_eq!(t.client("sw1").unwrap().state, ClientState::Down);
    assert_eq!(t.pool()[&ap()].used, 0);
    t.apply_command(8, register("sw2", "S2", report(vec![], 14)))
        .unwrap();
    let back = Command::Heartbeat {
        now_ms: 200_000,
        id: "sw1".into(),
        address: "192.0.2.50:4000".into(),
        report: report(vec![], 3),
    };
    let err = refused(&mut t, back);
    assert!(
        matches!(
            err,
            CommandError::ClaimExceedsAvailable {
                held: 0,
                available: 2,
                ..
            }
        ),
        "{err}"
    );
    // And an acquire that would hold more than a report may claim.
    t.apply_command(
        9,
        Command::ServerSerial {
            server: "primary".into(),
            serial: "CV1".into(),
        },
    )
    .unwrap();
    let big = (0..8)
        .map(|n| vkey(&format!("big{n}"), "CV1", 20_000, None))
        .collect::<Vec<_>>();
    for (n, key) in big.into_iter().enumerate() {
        t.apply_command(
            10 + n as u64,
            Command::InstallServerKey {
                now_ms: 0,
                server: "primary".into(),
                key,
                by: Actor::Server("primary".into()),
            },
        )
        .unwrap();
    }
    let acquire = Command::Acquire {
        now_ms: 200_000,
        id: "sw2".into(),
        license_type: ap(),
        count: MAX_COUNT,
    };
    let err = refused(&mut t, acquire);
    assert!(matches!(err, CommandError::CountTooLarge { .. }), "{err}");
}

#[test]
fn a_new_serial_drops_the_keys_bound_to_the_old_one() {
    let mut t = table();
    assert_eq!(t.pool()[&ap()].total, 16);
    t.apply_command(
        3,
        Command::ServerSerial {
            server: "primary".into(),
            serial: "CV1-NEW".into(),
        },
    )
    .unwrap();
    assert_eq!(t.pool()[&ap()].total, 0);
    assert!(t.state().server_keys.is_empty());
    assert_eq!(t.key_owner("p-ap"), None);
    assert_eq!(t.server_serial("primary"), Some("CV1-NEW"));
}

#[test]
fn a_replaced_switch_starts_a_new_history_under_the_old_id() {
    let mut t = table();
    t.apply_command(3, register("sw1", "OLD", report(vec![], 2)))
        .unwrap();
    t.apply_command(
        4,
        Command::Heartbeat {
            now_ms: 200,
            id: "sw1".into(),
            address: "192.0.2.50:4000".into(),
            report: report(vec![], 2),
        },
    )
    .unwrap();
    assert_eq!(t.client("sw1").unwrap().stats.heartbeats, 1);
    let mut again = register("sw1", "NEW", report(vec![], 2));
    if let Command::Register { now_ms, .. } = &mut again {
        *now_ms = 300;
    }
    t.apply_command(5, again).unwrap();
    let c = t.client("sw1").unwrap();
    assert_eq!(
        (c.serial.as_str(), c.registered_ms, c.stats.heartbeats),
        ("NEW", 300, 0)
    );
    assert_eq!(c.used_of(&ap()), 2, "what the id held, it holds");
}

#[test]
fn server_keys_are_bounded_per_server_and_a_clients_key_is_not_a_servers() {
    let mut t = table();
    for n in 1..MAX_KEYS_PER_SERVER {
        t.apply_command(
            2 + n as u64,
            Command::InstallServerKey {
                now_ms: 0,
                server: "primary".into(),
                key: vkey(&format!("p{n}"), "CV1", 1, None),
                by: Actor::Server("primary".into()),
            },
        )
        .unwrap();
    }
    let err = refused(
        &mut t,
        Command::InstallServerKey {
            now_ms: 0,
            server: "primary".into(),
            key: vkey("one-more", "CV1", 1, None),
            by: Actor::Server("primary".into()),
        },
    );
    assert!(matches!(err, CommandError::TooManyKeys { .. }), "{err}");
    t.apply_command(
        5_000,
        register("sw1", "S1", report(vec![vkey("c", "S1", 1, None)], 0)),
    )
    .unwrap();
    let err = refused(
        &mut t,
        Command::RemoveServerKey {
            key_id: "c".into(),
            by: Actor::Operator("alice".into()),
        },
    );
    assert_eq!(
        err,
        CommandError::KeyOfClient {
            key_id: "c".into(),
            client: "sw1".into()
        }
    );
}

#[test]
fn what_is_derived_always_matches_a_rebuild() {
    let mut t = table();
    t.apply_command(
        3,
        register("sw1", "S1", report(vec![vkey("k", "S1", 8, Some(1_000))], 4)),
    )
    .unwrap();
    t.apply_command(4, register("sw2", "S2", report(vec![], 0)))
        .unwrap();
    t.apply_command(5, Command::Sweep { now_ms: 1_000 }).unwrap();
    assert_eq!(t.derived, Derived::rebuild(&t.config, &t.state));
    assert_eq!(t.clients_from("192.0.2.50".parse().unwrap()), 2);
    assert_eq!(t.key_owner("k"), None, "expired with its key");
}

fn xsec() -> LicenseType {
    LicenseType::new("XSEC")
}

fn xsec_key(key_id: &str, serial: &str, count: u32) -> VerifiedKey {
    VerifiedKey {
        key: Key::permanent("XSEC", count),
        ..vkey(key_id, serial, count, None)
    }
}

/// Issue 11: two servers configured differently (XSEC poolable on one,
/// switch-specific on the other) diverged because each applied the log
/// with its own configuration. The settings are now in the log: two
/// replicas constructed with different configurations apply the same
/// entries alike once the log sets them, and a snapshot carries them.
#[test]
fn settings_are_replicated_state_and_travel_in_snapshots() {
    let mut switch_specific = TableConfig::default();
    switch_specific.types.insert(xsec(), TypeKind::SwitchSpecific);
    // Deliberately built with different settings: the log decides.
    let mut primary = LicenseTable::new(TableConfig::default());
    let mut backup = LicenseTable::new(switch_specific.clone());
    let log = [
        Command::Settings {
            settings: TableConfig::default(),
            by: Actor::Server("primary".into()),
        },
        trusting_acme(),
        Command::ServerSerial {
            server: "primary".into(),
            serial: "CV1".into(),
        },
        Command::InstallServerKey {
            now_ms: 1,
            server: "primary".into(),
            key: xsec_key("p-xsec", "CV1", 16),
            by: Actor::Server("primary".into()),
        },
        register("sw1", "SN1", ClientReport::default()),
        Command::Acquire {
            now_ms: 200,
            id: "sw1".into(),
            license_type: xsec(),
            count: 10,
        },
    ];
    for (i, command) in log.iter().enumerate() {
        let index = i as u64 + 1;
        let a = primary.apply_command(index, command.clone());
        let b = backup.apply_command(index, command.clone());
        assert_eq!(a, b, "entry {index}");
        assert!(a.is_ok(), "entry {index}: {a:?}");
    }
    assert_eq!(primary, backup);
    assert_eq!(backup.client("sw1").unwrap().used_of(&xsec()), 10);
    assert_eq!(backup.pool()[&xsec()].used, 10);

    // The backup's VIP holder sets XSEC switch-specific: every replica's
    // pool follows, what clients reported stays.
    let set = Command::Settings {
        settings: switch_specific.clone(),
        by: Actor::Server("backup".into()),
    };
    let reply = primary.apply_command(7, set.clone()).unwrap();
    assert_eq!(backup.apply_command(7, set).unwrap(), reply);
    assert_eq!(primary, backup);
    assert_eq!(primary.config(), &switch_specific);
    assert!(!primary.pool().contains_key(&xsec()));
    assert_eq!(primary.client("sw1").unwrap().used_of(&xsec()), 10);
    assert_eq!(
        primary.apply_command(
            8,
            Command::Acquire {
                now_ms: 300,
                id: "sw1".into(),
                license_type: xsec(),
                count: 1,
            }
        ),
        Err(CommandError::NotPoolable(xsec()))
    );

    // A member restored from a snapshot (here one built with the SPEC's
    // settings, as a witness is) applies what follows like the others.
    let mut witness = LicenseTable::new(TableConfig::default());
    witness.restore(&primary.snapshot()).unwrap();
    assert_eq!(witness, primary);
    assert!(derived_matches(&witness));
}

#[test]
fn settings_out_of_bounds_are_refused_and_change_nothing() {
    let mut t = table();
    let bad = TableConfig {
        missed_heartbeats_down: 0,
        ..TableConfig::default()
    };
    let err = refused(
        &mut t,
        Command::Settings {
            settings: bad,
            by: Actor::Server("primary".into()),
        },
    );
    assert!(
        matches!(&err, CommandError::Settings(e) if e.setting == "missed_heartbeats"),
        "{err}"
    );
    assert_eq!(t.config(), &TableConfig::default());
    let err = refused(
        &mut t,
        Command::Settings {
            settings: TableConfig::default(),
            by: Actor::Server(String::new()),
        },
    );
    assert!(matches!(err, CommandError::Bound(_)), "{err}");
}

fn derived_matches(t: &LicenseTable) -> bool {
    t.derived == Derived::rebuild(t.config(), t.state())
}

fn certified(issued_s: u64, command: Command) -> Command {
    Command::Certified {
        issued_s,
        command: Box::new(command),
    }
}

fn heartbeat(id: &str, used: u32) -> Command {
    Command::Heartbeat {
        now_ms: 200,
        id: id.into(),
        address: "192.0.2.66:4000".into(),
        report: report(vec![], used),
    }
}

/// SPEC §5: replacing a switch is a new certificate for the old id. The
/// replaced switch's certificate (issued earlier) must not take the id back
/// or act under it, by any command, not even after an operator removed the
/// entry; the replacement's may.
#[test]
fn a_replaced_switchs_older_certificate_cannot_act_for_its_id() {
    let mut t = table();
    t.apply_command(3, certified(1_000, register("sw1", "OLD", report(vec![], 2))))
        .unwrap();
    assert_eq!(t.cert_floor("sw1"), Some(1_000));
    // The same certificate again, and a heartbeat over it: fine.
    t.apply_command(4, certified(1_000, heartbeat("sw1", 2))).unwrap();
    // The replacement, issued later, with the new serial.
    t.apply_command(5, certified(2_000, register("sw1", "NEW", report(vec![], 1))))
        .unwrap();
    assert_eq!(t.cert_floor("sw1"), Some(2_000));
    // Every command of the old certificate is refused and changes nothing.
    let old = [
        register("sw1", "OLD", report(vec![], 3)),
        heartbeat("sw1", 1),
        Command::Update {
            now_ms: 300,
            id: "sw1".into(),
            report: report(vec![], 0),
        },
        Command::Acquire {
            now_ms: 300,
            id: "sw1".into(),
            license_type: ap(),
            count: 1,
        },
        Command::Release {
            now_ms: 300,
            id: "sw1".into(),
            license_type: ap(),
            count: 1,
        },
    ];
    for command in old.clone() {
        let err = refused(&mut t, certified(1_000, command));
        assert_eq!(
            err,
            CommandError::SupersededCertificate {
                id: "sw1".into(),
                issued_s: 1_000,
                floor: 2_000
            }
        );
        assert_eq!(err.cause(), "table_superseded_certificate");
        assert!(err.to_string().contains("cannot take its id back"), "{err}");
    }
    // The replacement's certificate still acts; a later register over an
    // older certificate does not lower the floor.
    t.apply_command(t.applied_index() + 1, certified(2_000, heartbeat("sw1", 1)))
        .unwrap();
    assert_eq!(t.client("sw1").unwrap().serial, "NEW");
    // Removed by an operator: the floor stays, the old certificate still
    // cannot register the id.
    t.apply_command(
        t.applied_index() + 1,
        Command::RemoveClient {
            id: "sw1".into(),
            by: Actor::Operator("ops".into()),
        },
    )
    .unwrap();
    assert!(t.client("sw1").is_none());
    let err = refused(&mut t, certified(1_000, old[0].clone()));
    assert!(matches!(err, CommandError::SupersededCertificate { .. }), "{err}");
    // Another id is not affected.
    t.apply_command(
        t.applied_index() + 1,
        certified(1_000, register("sw2", "X", report(vec![], 0))),
    )
    .unwrap();
    // Plain commands (a plain-TCP test server) carry no certificate and are
    // not compared.
    t.apply_command(t.applied_index() + 1, heartbeat("sw2", 0))
        .unwrap();
}

#[test]
fn only_a_switchs_commands_carry_a_certificate() {
    let mut t = table();
    for command in [
        Command::Sweep { now_ms: 5 },
        Command::RemoveServerKey {
            key_id: "p-ap".into(),
            by: Actor::Operator("ops".into()),
        },
        certified(1, register("sw1", "A", report(vec![], 0))),
    ] {
        assert_eq!(
            refused(&mut t, certified(1, command)),
            CommandError::NotCertifiable
        );
    }
}

/// The floor is forgotten once every older certificate has expired (the CA
/// issues none for longer than `MAX_SWITCH_CERT_DAYS`), and travels in
/// snapshots until then.
#[test]
fn certificate_floors_travel_in_snapshots_and_expire_with_the_certificates() {
    let mut t = table();
    let issued_s = 1_700_000_000;
    t.apply_command(3, certified(issued_s, register("sw1", "A", report(vec![], 0))))
        .unwrap();
    let mut restored = LicenseTable::new(TableConfig::default());
    restored.restore(&t.snapshot()).unwrap();
    assert_eq!(restored.cert_floor("sw1"), Some(issued_s));
    let keep_ms = u64::from(super::limits::MAX_SWITCH_CERT_DAYS) * 86_400_000;
    let at = |ms: u64| Command::Sweep { now_ms: ms };
    t.apply_command(4, at(issued_s * 1000 + keep_ms)).unwrap();
    assert_eq!(t.cert_floor("sw1"), Some(issued_s), "not a second early");
    t.apply_command(5, at(issued_s * 1000 + keep_ms + 1_000)).unwrap();
    assert_eq!(t.cert_floor("sw1"), None);
}

/// A snapshot of format 3 (before certificate floors) still restores,
/// with none remembered.
#[test]
fn a_format_3_snapshot_restores_without_floors() {
    let mut t = table();
    t.apply_command(3, register("sw1", "A", report(vec![], 1)))
        .unwrap();
    let state = t.state();
    let body = bincode::serde::encode_to_vec(
        (
            t.applied_index(),
            t.config(),
            (&state.clients, &state.server_keys, &state.servers),
        ),
        bincode::config::standard(),
    )
    .unwrap();
    let mut bytes = b"VPLT".to_vec();
    bytes.extend_from_slice(&3u16.to_le_bytes());
    bytes.extend_from_slice(&body);
    let mut restored = LicenseTable::new(TableConfig::default());
    restored.restore(&bytes).unwrap();
    // Format 3 recorded no issuers either: the keys it holds still count,
    // new ones wait for the VIP holder's `Issuers` entry.
    let mut expected = t.state().clone();
    expected.issuers.clear();
    assert_eq!(restored.state(), &expected);
    assert_eq!(restored.pool(), t.pool());
    assert_eq!(restored.client("sw1").unwrap().used_of(&ap()), 1);
}

/// Ticket keys: the newest two are kept, oldest first; a reused id or an
/// all-zero secret is refused; nothing of the pool changes, and a
/// snapshot carries them.
#[test]
fn ticket_keys_rotate_keeping_the_newest_two() {
    let mut t = table();
    let pool = t.pool().clone();
    let by = Actor::Server("primary".into());
    let key = |id: u32, created_ms: u64| TicketKey {
        id,
        created_ms,
        secret: [id as u8 + 1; 32],
    };
    let mut index = t.applied_index();
    let mut apply = |t: &mut LicenseTable, command: Command| {
        index += 1;
        t.apply_command(index, command)
    };
    for (id, at) in [(1, 10), (2, 20), (3, 30)] {
        apply(
            &mut t,
            Command::TicketKey {
                key: key(id, at),
                by: by.clone(),
            },
        )
        .unwrap();
    }
    let ids: Vec<u32> = t.state().ticket_keys.iter().map(|k| k.id).collect();
    assert_eq!(ids, [2, 3]);
    let before = t.state().clone();
    let e = apply(
        &mut t,
        Command::TicketKey {
            key: key(3, 40),
            by: by.clone(),
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, CommandError::TicketKey(ref why) if why.contains("already in use")),
        "{e}"
    );
    let zero = TicketKey {
        secret: [0; 32],
        ..key(9, 50)
    };
    let e = apply(
        &mut t,
        Command::TicketKey {
            key: zero,
            by: by.clone(),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("all-zero"), "{e}");
    assert_eq!(t.state(), &before);
    assert_eq!(t.pool(), &pool);
    // The secret is never in what an operator reads of the entry.
    let described = Command::TicketKey { key: key(4, 60), by }.describe();
    assert!(
        described.contains("key 4") && !described.contains("5, 5"),
        "{described}"
    );

    let mut restored = LicenseTable::new(TableConfig::default());
    restored.restore(&t.snapshot()).unwrap();
    assert_eq!(restored.state().ticket_keys, t.state().ticket_keys);
}

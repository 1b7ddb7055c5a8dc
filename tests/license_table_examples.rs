//! The worked examples of SPEC.md section 2 and 4 against the license
//! table, with signed keys: every key below is signed by an issuer,
//! verified for the serial of the server or switch that holds it, and
//! counted as the table records it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vipool::license::{load_server_keys, IssuerKey, KeyStatement, SignedKey, TrustedIssuers};
use vipool::table::{
    pool_demand, Actor, ClientReport, ClientState, Command, CommandError, Key, LicenseTable, LicenseType,
    Reply, TableConfig, VerifiedKey,
};

const INTERVAL: u64 = 30_000;
const DAY: u64 = 24 * 3600 * 1000;

fn t(name: &str) -> LicenseType {
    LicenseType::new(name)
}

fn acme() -> IssuerKey {
    IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
}

fn trusted() -> TrustedIssuers {
    TrustedIssuers::from_iter([acme().trusted()])
}

/// The pair trusts acme, as the VIP holder records it before any key.
fn trusting_acme() -> Command {
    Command::Issuers {
        issuers: trusted().by_name_text(),
        by: Actor::Server("primary".into()),
    }
}

/// A key signed by acme: `count` of `license_type` for `serial`, valid
/// from the epoch, an evaluation key until `expires_ms` when given.
fn signed(key_id: &str, serial: &str, license_type: &str, count: u32, expires_ms: Option<u64>) -> SignedKey {
    acme()
        .sign(KeyStatement {
            key_id: key_id.into(),
            license_type: t(license_type),
            count,
            serial: serial.into(),
            not_before: 0,
            expires: expires_ms.map(|ms| ms / 1000),
            issuer: "acme".into(),
        })
        .unwrap()
}

/// The key as the table records it once the proposer verified it for
/// `serial` at time zero.
fn verified(key: &SignedKey, serial: &str) -> VerifiedKey {
    key.verified(&trusted(), serial, 0).unwrap()
}

/// A switch's serial in these examples.
fn serial(id: &str) -> String {
    format!("SN-{id}")
}

struct Log {
    table: LicenseTable,
    index: u64,
}

impl Log {
    fn new() -> Self {
        let mut log = Self {
            table: LicenseTable::new(TableConfig::default()),
            index: 0,
        };
        // The issuers the pair trusts, recorded before any key counts.
        log.apply(trusting_acme()).unwrap();
        log
    }

    fn apply(&mut self, command: Command) -> Result<Reply, CommandError> {
        self.index += 1;
        self.table.apply_command(self.index, command)
    }

    fn announce(&mut self, server: &str) {
        self.apply(Command::ServerSerial {
            server: server.into(),
            serial: serial(server),
        })
        .unwrap();
    }

    /// Installs a server key as the server does from its key files (its
    /// serial announced first).
    fn install(&mut self, server: &str, key: VerifiedKey) {
        self.apply(Command::InstallServerKey {
            now_ms: 0,
            server: server.into(),
            key,
            by: Actor::Server(server.into()),
        })
        .unwrap();
    }

    fn server_key(&mut self, server: &str, license_type: &str, count: u32) {
        self.announce(server);
        let key = signed(
            &format!("{server}-{license_type}"),
            &serial(server),
            license_type,
            count,
            None,
        );
        self.install(server, verified(&key, &serial(server)));
    }

    fn register(&mut self, now_ms: u64, id: &str, report: ClientReport) {
        let command = Command::Register {
            now_ms,
            id: id.into(),
            serial: serial(id),
            address: "192.0.2.50:4000".into(),
            version: "6.5.3".into(),
            report,
        };
        self.apply(command).unwrap();
    }

    fn heartbeat(&mut self, now_ms: u64, id: &str, report: ClientReport) -> Result<Reply, CommandError> {
        let command = Command::Heartbeat {
            now_ms,
            id: id.into(),
            address: "192.0.2.50:4000".into(),
            report,
        };
        self.apply(command)
    }

    fn total(&self, name: &str) -> u64 {
        self.table.pool()[&t(name)].total
    }

    fn used(&self, name: &str) -> u64 {
        self.table.pool()[&t(name)].used
    }
}

/// Switch `id`'s report: a permanent key per `(type, count)` of `keys`,
/// signed for its serial and verified, and what it uses from the pool.
fn report_of(id: &str, keys: &[(&str, u32)], used: &[(&str, u32)]) -> ClientReport {
    ClientReport {
        builtin: BTreeMap::new(),
        keys: keys
            .iter()
            .map(|(ty, n)| {
                verified(
                    &signed(&format!("{id}-{ty}-{n}"), &serial(id), ty, *n, None),
                    &serial(id),
                )
            })
            .collect(),
        used: used.iter().map(|(ty, n)| (t(ty), *n)).collect(),
    }
}

/// SPEC §2: "primary and backup each have 16 AP, 16 PEFNG and 16 XSEC
/// installed: the pool is 32 of each". Each server's keys are a key file
/// of lines signed for its serial, loaded and verified as the server
/// loads them.
#[test]
fn two_servers_with_16_ap_pefng_xsec_pool_32_each() {
    let dir = tempfile::tempdir().unwrap();
    let issuers = dir.path().join("acme.pub");
    std::fs::write(&issuers, format!("{}\n", acme().trusted())).unwrap();
    let mut log = Log::new();
    for server in ["primary", "backup"] {
        let lines: Vec<String> = ["AP", "PEFNG", "XSEC"]
            .iter()
            .map(|ty| signed(&format!("{server}-{ty}"), &serial(server), ty, 16, None).to_string())
            .collect();
        let file: PathBuf = dir.path().join(format!("{server}.keys"));
        std::fs::write(&file, format!("# {server}\n{}\n", lines.join("\n"))).unwrap();
        let (_, keys) = load_server_keys(std::slice::from_ref(&issuers), &[file], &serial(server)).unwrap();
        assert_eq!(keys.len(), 3);
        log.announce(server);
        for entry in keys {
            assert!(entry.counts_at(0));
            log.install(server, entry.key);
        }
    }
    // The other server's file does not verify for this one.
    let wrong =
        load_server_keys(&[issuers], &[dir.path().join("backup.keys")], &serial("primary")).unwrap_err();
    assert_eq!(wrong.len(), 3);
    for ty in ["AP", "PEFNG", "XSEC"] {
        assert_eq!(log.total(ty), 32, "{ty}");
        assert_eq!(log.table.pool()[&t(ty)].available(), 32, "{ty}");
    }
    assert_eq!(log.total("RFPROTECT"), 0);
    // Every client of the pair may draw from it.
    log.register(0, "sw1", ClientReport::default());
    log.register(0, "sw2", ClientReport::default());
    for id in ["sw1", "sw2"] {
        let command = Command::Acquire {
            now_ms: 1,
            id: id.into(),
            license_type: t("PEFNG"),
            count: 16,
        };
        log.apply(command).unwrap();
    }
    assert_eq!(log.used("PEFNG"), 32);
}

#[test]
fn builtin_16_ap_with_20_aps_reports_4() {
    assert_eq!(pool_demand(16, 20), 4);
    assert_eq!(pool_demand(16, 10), 0);
    let mut log = Log::new();
    log.server_key("primary", "AP", 16);
    let mut client = report_of("sw1", &[], &[("AP", pool_demand(16, 20))]);
    client.builtin.insert(t("AP"), 16);
    log.register(0, "sw1", client);
    assert_eq!(log.used("AP"), 4);
    assert_eq!(
        log.total("AP"),
        16,
        "built-in licenses are never part of the pool"
    );
    assert_eq!(log.table.client("sw1").unwrap().builtin[&t("AP")], 16);
}

#[test]
fn three_missed_heartbeats_return_used_licenses_and_keep_contributions() {
    let mut log = Log::new();
    log.server_key("primary", "AP", 16);
    log.register(0, "sw1", report_of("sw1", &[("AP", 8)], &[("AP", 10)]));
    assert_eq!((log.total("AP"), log.used("AP")), (24, 10));

    // Two heartbeats missed, and the third still within its interval: still up.
    log.apply(Command::Sweep { now_ms: 3 * INTERVAL }).unwrap();
    assert_eq!(log.table.client("sw1").unwrap().state, ClientState::Up);
    assert_eq!(log.used("AP"), 10);

    let reply = log
        .apply(Command::Sweep {
            now_ms: 3 * INTERVAL + 1,
        })
        .unwrap();
    let Reply::Swept(swept) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(swept.down, vec!["sw1".to_owned()]);
    let client = log.table.client("sw1").unwrap();
    assert_eq!(client.state, ClientState::Down);
    assert_eq!(client.stats.missed_total, 3);
    assert_eq!(log.used("AP"), 0, "its used licenses return to the pool");
    assert_eq!(log.total("AP"), 24, "its installed contributions stay");

    // It comes back: its whole state in one heartbeat brings it up again.
    log.heartbeat(4 * INTERVAL, "sw1", report_of("sw1", &[("AP", 8)], &[("AP", 10)]))
        .unwrap();
    assert_eq!(log.table.client("sw1").unwrap().state, ClientState::Up);
    assert_eq!(log.used("AP"), 10);
}

#[test]
fn thirty_days_of_silence_removes_contributions() {
    let mut log = Log::new();
    log.server_key("primary", "AP", 16);
    log.register(0, "sw1", report_of("sw1", &[("AP", 8), ("XSEC", 4)], &[]));
    log.register(0, "sw2", report_of("sw2", &[("AP", 2)], &[]));
    // sw2 keeps talking; sw1 falls silent.
    for day in 1..=30 {
        log.heartbeat(day * DAY, "sw2", report_of("sw2", &[("AP", 2)], &[]))
            .unwrap();
        log.apply(Command::Sweep { now_ms: day * DAY }).unwrap();
    }
    assert_eq!(log.total("AP"), 26, "exactly 30 days: not yet");
    let reply = log.apply(Command::Sweep { now_ms: 30 * DAY + 1 }).unwrap();
    let Reply::Swept(swept) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(swept.removed, vec!["sw1".to_owned()]);
    assert_eq!(log.total("AP"), 18);
    assert_eq!(log.total("XSEC"), 0);
    assert!(log.table.client("sw1").is_none());
    assert_eq!(
        log.heartbeat(30 * DAY + 2, "sw1", ClientReport::default()),
        Err(CommandError::UnknownClient("sw1".into()))
    );
}

#[test]
fn thirty_days_in_test_time_follows_the_configured_timer() {
    let config = TableConfig {
        silence_remove_ms: 500,
        heartbeat_interval_ms: 10,
        ..TableConfig::default()
    };
    let mut table = LicenseTable::new(config);
    table.apply_command(0, trusting_acme()).unwrap();
    let register = Command::Register {
        now_ms: 1_000,
        id: "sw1".into(),
        serial: serial("sw1"),
        address: "a".into(),
        version: "v".into(),
        report: report_of("sw1", &[("AP", 4)], &[]),
    };
    table.apply_command(1, register).unwrap();
    table.apply_command(2, Command::Sweep { now_ms: 1_500 }).unwrap();
    assert_eq!(table.pool()[&t("AP")].total, 4);
    table.apply_command(3, Command::Sweep { now_ms: 1_501 }).unwrap();
    assert_eq!(table.pool()[&t("AP")].total, 0);
}

#[test]
fn switch_specific_types_are_never_pooled() {
    let mut log = Log::new();
    log.server_key("primary", "PEFV", 16);
    log.register(
        0,
        "sw1",
        report_of("sw1", &[("PEFV", 8), ("WEBCC", 4), ("AP", 1)], &[]),
    );
    assert!(!log.table.pool().contains_key(&t("PEFV")));
    assert!(!log.table.pool().contains_key(&t("WEBCC")));
    assert_eq!(log.total("AP"), 1);
    assert_eq!(
        log.table.client("sw1").unwrap().installed(&t("PEFV")),
        8,
        "still shown on the client"
    );

    let acquire = Command::Acquire {
        now_ms: 1,
        id: "sw1".into(),
        license_type: t("PEFV"),
        count: 1,
    };
    assert_eq!(log.apply(acquire), Err(CommandError::NotPoolable(t("PEFV"))));
    let reports_use = log.heartbeat(2, "sw1", report_of("sw1", &[("PEFV", 8)], &[("WEBCC", 1)]));
    assert_eq!(reports_use, Err(CommandError::NotPoolable(t("WEBCC"))));
}

#[test]
fn a_new_type_is_a_configuration_change() {
    let mut config = TableConfig::default();
    config.types.insert(t("VIA"), vipool::table::TypeKind::Poolable);
    let mut table = LicenseTable::new(config);
    let announce = Command::ServerSerial {
        server: "primary".into(),
        serial: serial("primary"),
    };
    table.apply_command(0, trusting_acme()).unwrap();
    table.apply_command(1, announce).unwrap();
    let install = Command::InstallServerKey {
        now_ms: 0,
        server: "primary".into(),
        key: verified(
            &signed("k", &serial("primary"), "via", 5, None),
            &serial("primary"),
        ),
        by: Actor::Server("primary".into()),
    };
    table.apply_command(2, install).unwrap();
    assert_eq!(table.pool()[&t("VIA")].total, 5);
}

#[test]
fn over_subscription_refuses_new_grants_but_keeps_existing() {
    let mut log = Log::new();
    log.server_key("primary", "AP", 4);
    // An evaluation key on sw1 brings the pool to 10.
    let mut sw1 = report_of("sw1", &[], &[]);
    let eval = signed("sw1-eval", &serial("sw1"), "AP", 6, Some(1_000));
    sw1.keys.push(verified(&eval, &serial("sw1")));
    assert_eq!(sw1.keys[0].key.expires_at_ms, Some(1_000));
    log.register(0, "sw1", sw1);
    log.register(0, "sw2", report_of("sw2", &[], &[("AP", 8)]));
    assert_eq!((log.total("AP"), log.used("AP")), (10, 8));

    // The key expires: 4 total, 8 used.
    let reply = log.apply(Command::Sweep { now_ms: 1_000 }).unwrap();
    let Reply::Swept(swept) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(swept.expired_keys, 1);
    let entry = log.table.pool()[&t("AP")];
    assert!(entry.over_subscribed());
    assert_eq!(entry.available(), -4);
    assert_eq!(
        log.table.client("sw2").unwrap().used_of(&t("AP")),
        8,
        "APs already up stay up"
    );

    let acquire = |id: &str, count| Command::Acquire {
        now_ms: 1_001,
        id: id.into(),
        license_type: t("AP"),
        count,
    };
    let before = log.table.state().clone();
    assert_eq!(
        log.apply(acquire("sw1", 1)),
        Err(CommandError::OverSubscribed {
            license_type: t("AP"),
            available: -4
        })
    );
    assert_eq!(&before, log.table.state());

    // Back to zero available: still no grant (nothing is available), then above it.
    log.apply(Command::Release {
        now_ms: 1_002,
        id: "sw2".into(),
        license_type: t("AP"),
        count: 4,
    })
    .unwrap();
    assert_eq!(log.table.pool()[&t("AP")].available(), 0);
    assert!(matches!(
        log.apply(acquire("sw1", 1)),
        Err(CommandError::NotEnoughLicenses { .. })
    ));
    log.apply(Command::Release {
        now_ms: 1_003,
        id: "sw2".into(),
        license_type: t("AP"),
        count: 1,
    })
    .unwrap();
    log.apply(acquire("sw1", 1)).unwrap();
    assert_eq!((log.total("AP"), log.used("AP")), (4, 4));
}

#[test]
fn acquire_is_decided_at_apply_time_the_last_license_goes_once() {
    let mut log = Log::new();
    log.server_key("primary", "AP", 1);
    log.register(0, "sw1", ClientReport::default());
    log.register(0, "sw2", ClientReport::default());
    let acquire = |id: &str| Command::Acquire {
        now_ms: 5,
        id: id.into(),
        license_type: t("AP"),
        count: 1,
    };
    assert!(log.apply(acquire("sw1")).is_ok());
    assert_eq!(
        log.apply(acquire("sw2")),
        Err(CommandError::NotEnoughLicenses {
            license_type: t("AP"),
            requested: 1,
            available: 0
        })
    );
}

#[test]
fn bad_commands_are_typed_errors_and_change_nothing() {
    let mut log = Log::new();
    log.server_key("primary", "AP", 4);
    log.register(0, "sw1", report_of("sw1", &[], &[("AP", 2)]));
    let before = log.table.clone();
    let cases = [
        (
            Command::Acquire {
                now_ms: 1,
                id: "nope".into(),
                license_type: t("AP"),
                count: 1,
            },
            CommandError::UnknownClient("nope".into()),
        ),
        (
            Command::Acquire {
                now_ms: 1,
                id: "sw1".into(),
                license_type: t("BOGUS"),
                count: 1,
            },
            CommandError::UnknownType(t("BOGUS")),
        ),
        (
            Command::Acquire {
                now_ms: 1,
                id: "sw1".into(),
                license_type: t("AP"),
                count: 0,
            },
            CommandError::ZeroCount,
        ),
        (
            Command::Release {
                now_ms: 1,
                id: "sw1".into(),
                license_type: t("AP"),
                count: 3,
            },
            CommandError::ReleaseExceedsUsed {
                license_type: t("AP"),
                requested: 3,
                used: 2,
            },
        ),
        (
            // No issuer signs a key of zero licenses; an entry may say so anyway.
            Command::Update {
                now_ms: 1,
                id: "sw1".into(),
                report: ClientReport {
                    keys: vec![VerifiedKey {
                        key_id: "zero".into(),
                        issuer: "acme".into(),
                        serial: serial("sw1"),
                        key: Key::permanent("AP", 0),
                    }],
                    ..ClientReport::default()
                },
            },
            CommandError::ZeroCount,
        ),
        (
            Command::Update {
                now_ms: 1,
                id: "sw1".into(),
                report: report_of("sw1", &[("BOGUS", 1)], &[]),
            },
            CommandError::UnknownType(t("BOGUS")),
        ),
        (
            Command::RemoveClient {
                id: "nope".into(),
                by: Actor::Operator("alice".into()),
            },
            CommandError::UnknownClient("nope".into()),
        ),
        (
            Command::RemoveServerKey {
                key_id: "nope".into(),
                by: Actor::Operator("alice".into()),
            },
            CommandError::UnknownKey("nope".into()),
        ),
        (
            Command::InstallServerKey {
                now_ms: 0,
                server: "primary".into(),
                key: verified(
                    &signed("primary-AP", &serial("primary"), "AP", 4, None),
                    &serial("primary"),
                ),
                by: Actor::Server("primary".into()),
            },
            CommandError::KeyExists("primary-AP".into()),
        ),
        (
            Command::InstallServerKey {
                now_ms: 10_000,
                server: "primary".into(),
                key: verified(
                    &signed("eval", &serial("primary"), "AP", 1, Some(10_000)),
                    &serial("primary"),
                ),
                by: Actor::Server("primary".into()),
            },
            CommandError::KeyExpired("eval".into()),
        ),
        (
            Command::Register {
                now_ms: 0,
                id: String::new(),
                serial: "s".into(),
                address: "a".into(),
                version: "v".into(),
                report: ClientReport::default(),
            },
            CommandError::Bound(vipool::table::limits::TokenError::Empty {
                what: "client id".into(),
            }),
        ),
    ];
    for (command, expected) in cases {
        let shown = format!("{command:?}");
        assert_eq!(log.apply(command), Err(expected), "{shown}");
        assert_eq!(log.table.state(), before.state(), "{shown}");
        assert_eq!(log.table.pool(), before.pool(), "{shown}");
    }
}

#[test]
fn snapshot_survives_restore_and_refuses_garbage() {
    let mut log = Log::new();
    log.server_key("primary", "AP", 16);
    log.register(
        0,
        "sw1",
        report_of("sw1", &[("AP", 8), ("PEFV", 1)], &[("AP", 3)]),
    );
    let bytes = log.table.snapshot();
    let mut other = LicenseTable::new(TableConfig::default());
    other.restore(&bytes).unwrap();
    assert_eq!(other, log.table);
    assert_eq!(other.applied_index(), log.index);
    let before = other.clone();
    assert!(other.restore(&bytes[..bytes.len() - 1]).is_err());
    assert!(other.restore(b"garbage").is_err());
    assert_eq!(other, before, "a failed restore leaves the state unchanged");
}

/// SPEC section 4, "limits about to expire": the table lists evaluation keys
/// of servers and clients that stop counting within the window, soonest
/// first; permanent, distant and already expired keys are not listed.
#[test]
fn expiring_evaluation_keys_are_listed_soonest_first() {
    let mut log = Log::new();
    let now = 100 * DAY;
    let eval = |owner: &str, ty: &str, count, at| {
        let key = signed(&format!("{owner}-eval-{ty}"), &serial(owner), ty, count, Some(at));
        verified(&key, &serial(owner))
    };
    log.server_key("primary", "AP", 16);
    log.announce("backup");
    log.apply(Command::InstallServerKey {
        now_ms: now,
        server: "backup".into(),
        key: eval("backup", "XSEC", 4, now + 5 * DAY),
        by: Actor::Operator("alice".into()),
    })
    .unwrap();
    let report = ClientReport {
        keys: vec![
            eval("sw1", "AP", 2, now + DAY),
            eval("sw1", "PEFNG", 2, now + 40 * DAY),
        ],
        ..ClientReport::default()
    };
    log.register(now, "sw1", report.clone());
    // A key already expired is not counted: the report is refused.
    let mut late = report;
    late.keys.push(eval("sw1", "ACR", 1, now - 1000));
    assert_eq!(
        log.heartbeat(now, "sw1", late),
        Err(CommandError::KeyExpired("sw1-eval-ACR".into()))
    );

    let soon = log.table.expiring(now, 7 * DAY);
    let listed: Vec<(String, String, u64)> = soon
        .iter()
        .map(|w| {
            (
                w.owner.clone(),
                w.key.key.license_type.to_string(),
                w.expires_in_ms,
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("client:sw1".to_string(), "AP".to_string(), DAY),
            ("server:backup".to_string(), "XSEC".to_string(), 5 * DAY),
        ]
    );
    assert_eq!(
        soon[0].to_string(),
        "evaluation key \"sw1-eval-AP\" (AP x2) of client:sw1 expires in 1d 0h 0m"
    );
    // Once a key has stopped counting it is the sweep's business, not a warning.
    assert!(log
        .table
        .expiring(now + 6 * DAY, 7 * DAY)
        .iter()
        .all(|w| w.key.key.license_type != t("XSEC")));
}

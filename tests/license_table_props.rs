//! Property tests of the license table over random command sequences:
//! entries as any proposer might have written them (the request-level
//! properties, through `request::command`, are in `license_requests_props`).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use vipool::table::{
    Actor, ClientReport, Command, CommandError, Key, LicenseTable, LicenseType, Pool, PoolEntry, TableConfig,
    VerifiedKey,
};

const IDS: [&str; 4] = ["sw1", "sw2", "sw3", ""];
const TYPES: [&str; 5] = ["AP", "PEFNG", "XSEC", "PEFV", "BOGUS"];

fn config() -> TableConfig {
    // Short timers so random clocks cross every threshold.
    TableConfig {
        heartbeat_interval_ms: 100,
        missed_heartbeats_down: 3,
        silence_remove_ms: 2_000,
        ..TableConfig::default()
    }
}

fn license_type() -> impl Strategy<Value = LicenseType> {
    prop::sample::select(TYPES.to_vec()).prop_map(LicenseType::new)
}

fn id() -> impl Strategy<Value = String> {
    prop::sample::select(IDS.to_vec()).prop_map(str::to_owned)
}

/// A verified key as an entry may carry it: a few key ids (so that the
/// same id turns up in several places), bound to a client's serial
/// ("SN"), another one, or a server's; mostly of acme, the issuer the
/// table starts trusting, sometimes of globex.
fn key() -> impl Strategy<Value = VerifiedKey> {
    (
        0u8..6,
        prop::sample::select(vec!["SN", "S2", "CV1", "CV2"]),
        license_type(),
        0u32..20,
        prop::option::of(0u64..4_000),
        prop::sample::select(vec!["acme", "acme", "acme", "globex"]),
    )
        .prop_map(
            |(n, serial, license_type, count, expires_at_ms, issuer)| VerifiedKey {
                key_id: format!("k{n}"),
                issuer: issuer.into(),
                serial: serial.into(),
                key: Key {
                    license_type,
                    count,
                    expires_at_ms,
                },
            },
        )
}

fn report() -> impl Strategy<Value = ClientReport> {
    (
        prop::collection::btree_map(license_type(), 0u32..20, 0..3),
        prop::collection::vec(key(), 0..4),
        prop::collection::btree_map(license_type(), 0u32..20, 0..3),
    )
        .prop_map(|(builtin, keys, used)| ClientReport { builtin, keys, used })
}

/// The issuers the VIP holder records: of `names`, with their keys.
fn issuers(names: &[&str]) -> Command {
    Command::Issuers {
        issuers: names
            .iter()
            .map(|name| {
                vipool::license::IssuerKey::from_secret_bytes(name, &[name.len() as u8; 32])
                    .unwrap()
                    .trusted()
            })
            .collect::<vipool::license::TrustedIssuers>()
            .by_name_text(),
        by: Actor::Server("primary".into()),
    }
}

/// A table that trusts acme, as the VIP holder records it before any key.
fn fresh() -> LicenseTable {
    let mut table = LicenseTable::new(config());
    table.apply_command(0, issuers(&["acme"])).unwrap();
    table
}

fn server() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["primary", "backup"])
}

/// A command with a time offset; times are made non-decreasing afterwards,
/// as a leader stamps them.
fn command() -> impl Strategy<Value = (u64, Command)> {
    let dt = 0u64..400;
    prop_oneof![
        3 => (dt.clone(), id(), report()).prop_map(|(dt, id, report)| (dt, Command::Register {
            now_ms: 0, id, serial: "SN".into(), address: "a".into(), version: "v".into(), report,
        })),
        4 => (dt.clone(), id(), report()).prop_map(|(dt, id, report)| (dt, Command::Heartbeat {
            now_ms: 0, id, address: "b".into(), report,
        })),
        2 => (dt.clone(), id(), report()).prop_map(|(dt, id, report)| (dt, Command::Update { now_ms: 0, id, report })),
        5 => (dt.clone(), id(), license_type(), 0u32..12).prop_map(|(dt, id, license_type, count)| {
            (dt, Command::Acquire { now_ms: 0, id, license_type, count })
        }),
        3 => (dt.clone(), id(), license_type(), 0u32..12).prop_map(|(dt, id, license_type, count)| {
            (dt, Command::Release { now_ms: 0, id, license_type, count })
        }),
        1 => id().prop_map(|id| (0, Command::RemoveClient { id, by: Actor::Operator("op".into()) })),
        1 => (server(), prop::sample::select(vec!["CV1", "CV2"])).prop_map(|(server, serial)| {
            (0, Command::ServerSerial { server: server.into(), serial: serial.into() })
        }),
        3 => (dt.clone(), server(), key())
            .prop_map(|(dt, server, key)| (dt, Command::InstallServerKey {
                now_ms: 0, server: server.into(), key, by: Actor::Server(server.into()),
            })),
        1 => (0u8..6).prop_map(|n| (0, Command::RemoveServerKey {
            key_id: format!("k{n}"), by: Actor::Operator("op".into()),
        })),
        2 => dt.clone().prop_map(|dt| (dt, Command::Sweep { now_ms: 0 })),
        // Another VIP holder's issuers: the keys of an issuer no longer
        // trusted stop counting.
        1 => prop::sample::select(vec![vec!["acme"], vec!["acme", "globex"], vec!["globex"], vec![]])
            .prop_map(|names| (0, issuers(&names))),
        // Switches' commands over certificates of a few issue times: the
        // replaced ones' are refused and change nothing.
        2 => (dt.clone(), id(), report(), 0u64..4).prop_map(|(dt, id, report, issued_s)| (dt, Command::Certified {
            issued_s,
            command: Box::new(Command::Register {
                now_ms: 0, id, serial: "SN".into(), address: "a".into(), version: "v".into(), report,
            }),
        })),
        // The pair's TLS session-ticket keys: never a change of the pool.
        1 => (dt.clone(), 0u32..4, 0u8..3).prop_map(|(dt, id, byte)| (dt, Command::TicketKey {
            key: vipool::table::TicketKey { id, created_ms: u64::from(id), secret: [byte; 32] },
            by: vipool::table::Actor::Server("primary".into()),
        })),
        2 => (dt, id(), license_type(), 0u32..12, 0u64..4).prop_map(|(dt, id, license_type, count, issued_s)| {
            (dt, Command::Certified {
                issued_s,
                command: Box::new(Command::Acquire { now_ms: 0, id, license_type, count }),
            })
        }),
    ]
}

fn stamp(commands: Vec<(u64, Command)>) -> Vec<Command> {
    let mut now = 0;
    commands
        .into_iter()
        .map(|(dt, mut command)| {
            now += dt;
            let inner = match &mut command {
                Command::Certified { command, .. } => &mut **command,
                other => other,
            };
            match inner {
                Command::Register { now_ms, .. }
                | Command::Heartbeat { now_ms, .. }
                | Command::Update { now_ms, .. }
                | Command::Acquire { now_ms, .. }
                | Command::Release { now_ms, .. }
                | Command::InstallServerKey { now_ms, .. }
                | Command::Sweep { now_ms } => *now_ms = now,
                Command::RemoveClient { .. }
                | Command::RemoveServerKey { .. }
                | Command::ServerSerial { .. }
                | Command::Settings { .. }
                | Command::Issuers { .. }
                | Command::TicketKey { .. }
                | Command::Certified { .. } => {}
            }
            command
        })
        .collect()
}

fn stamped_at(command: &Command) -> Option<u64> {
    match command {
        Command::Register { now_ms, .. }
        | Command::Heartbeat { now_ms, .. }
        | Command::Update { now_ms, .. }
        | Command::Acquire { now_ms, .. }
        | Command::Release { now_ms, .. }
        | Command::InstallServerKey { now_ms, .. }
        | Command::Sweep { now_ms } => Some(*now_ms),
        Command::RemoveClient { .. }
        | Command::RemoveServerKey { .. }
        | Command::ServerSerial { .. }
        | Command::Settings { .. }
        | Command::Issuers { .. }
        | Command::TicketKey { .. } => None,
        Command::Certified { command, .. } => stamped_at(command),
    }
}

/// The SPEC's definition, written out independently of the table's code.
fn recomputed(table: &LicenseTable) -> Pool {
    let config = table.config();
    let poolable = |t: &LicenseType| config.is_poolable(t);
    let mut pool: Pool = config
        .poolable()
        .map(|t| (t.clone(), PoolEntry::default()))
        .collect();
    for server_key in table.state().server_keys.values() {
        let key = &server_key.key.key;
        if poolable(&key.license_type) {
            pool.get_mut(&key.license_type).unwrap().total += u64::from(key.count);
        }
    }
    for client in table.state().clients.values() {
        for key in client
            .keys
            .iter()
            .map(|k| &k.key)
            .filter(|k| poolable(&k.license_type))
        {
            pool.get_mut(&key.license_type).unwrap().total += u64::from(key.count);
        }
        for (t, n) in client.used.iter().filter(|(t, _)| poolable(t)) {
            pool.get_mut(t).unwrap().used += u64::from(*n);
        }
    }
    pool
}

/// Every key id is counted once, each key is bound to whoever holds it,
/// a server key to its server's serial, and every key's issuer is one the
/// table records as trusted.
fn keys_are_sound(table: &LicenseTable) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let state = table.state();
    let all = state
        .server_keys
        .values()
        .map(|k| &k.key)
        .chain(state.clients.values().flat_map(|c| &c.keys));
    for k in all {
        if !state.issuers.contains_key(&k.issuer) {
            return Err(format!(
                "key {} of untrusted issuer {} counted",
                k.key_id, k.issuer
            ));
        }
    }
    for (id, k) in &state.server_keys {
        if id != &k.key.key_id || !seen.insert(id.clone()) {
            return Err(format!("server key {id} counted twice"));
        }
        if state.servers.get(&k.server).map(|s| &s.serial) != Some(&k.key.serial) {
            return Err(format!("server key {id} not bound to {}'s serial", k.server));
        }
    }
    for client in state.clients.values() {
        for k in &client.keys {
            if !seen.insert(k.key_id.clone()) {
                return Err(format!("key {} counted twice", k.key_id));
            }
            if k.serial != client.serial {
                return Err(format!("key {} of {} bound to {}", k.key_id, client.id, k.serial));
            }
        }
    }
    Ok(())
}

/// S3: a command that raised what is used of a type left it within the
/// total; over-subscription only ever comes from contributions shrinking.
fn s3(before: &Pool, after: &Pool) -> Result<(), String> {
    for (t, a) in after {
        let b = before.get(t).copied().unwrap_or_default();
        if a.used > b.used && a.used > a.total {
            return Err(format!(
                "{t}: used rose {} -> {} past total {}",
                b.used, a.used, a.total
            ));
        }
        if a.used > a.total && a.total >= b.total && !b.over_subscribed() {
            return Err(format!(
                "{t}: over-subscribed without a contribution shrinking: {b:?} -> {a:?}"
            ));
        }
    }
    Ok(())
}

fn run(commands: &[Command]) -> (LicenseTable, Vec<Result<vipool::table::Reply, CommandError>>) {
    let mut table = fresh();
    let replies = commands
        .iter()
        .enumerate()
        .map(|(i, c)| table.apply_command(i as u64 + 1, c.clone()))
        .collect();
    (table, replies)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pool_always_matches_a_recomputation(commands in prop::collection::vec(command(), 0..60)) {
        let mut table = fresh();
        for (i, command) in stamp(commands).into_iter().enumerate() {
            let shown = format!("{command:?}");
            let before = table.clone();
            let result = table.apply_command(i as u64 + 1, command.clone());
            prop_assert_eq!(table.pool(), &recomputed(&table), "after {}", shown);
            prop_assert_eq!(keys_are_sound(&table), Ok(()), "after {}", shown);
            prop_assert_eq!(s3(before.pool(), table.pool()), Ok(()), "after {}", shown);
            match result {
                Err(_) => {
                    // A refused command changes nothing but the applied index.
                    prop_assert_eq!(table.state(), before.state(), "refused {}", shown);
                    prop_assert_eq!(table.pool(), before.pool());
                }
                Ok(_) => {
                    if let Command::Acquire { license_type, .. } = &command {
                        let entry = table.pool()[license_type];
                        prop_assert!(entry.used <= entry.total, "grant left {:?} after {}", entry, shown);
                    }
                }
            }
            prop_assert_eq!(table.applied_index(), i as u64 + 1);
        }
    }

    #[test]
    fn apply_is_deterministic(commands in prop::collection::vec(command(), 0..60)) {
        let commands = stamp(commands);
        let (a, replies_a) = run(&commands);
        let (b, replies_b) = run(&commands);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(replies_a, replies_b);
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }

    #[test]
    fn snapshot_then_restore_gives_an_equal_table(
        commands in prop::collection::vec(command(), 0..60),
        more in prop::collection::vec(command(), 0..20),
    ) {
        let commands = stamp(commands.into_iter().chain(more).collect());
        let split = commands.len() / 2;
        let (mut whole, _) = run(&commands[..split]);
        let mut restored = LicenseTable::new(config());
        restored.restore(&whole.snapshot()).unwrap();
        prop_assert_eq!(&restored, &whole);
        // And the restored copy goes on exactly as the original.
        for (i, command) in commands[split..].iter().enumerate() {
            let index = (split + i) as u64 + 1;
            prop_assert_eq!(whole.apply_command(index, command.clone()), restored.apply_command(index, command.clone()));
        }
        prop_assert_eq!(&restored, &whole);
    }

    #[test]
    fn heartbeats_are_idempotent(
        commands in prop::collection::vec(command(), 0..40),
        client in prop::sample::select(vec!["sw1", "sw2", "sw3"]),
        report in report(),
        repeats in 2usize..5,
    ) {
        let mut commands = stamp(commands);
        let now = commands.iter().filter_map(stamped_at).max().unwrap_or(0) + 1;
        commands.push(Command::Register {
            now_ms: now, id: client.into(), serial: "SN".into(), address: "a".into(), version: "v".into(),
            report: ClientReport::default(),
        });
        let (mut table, _) = run(&commands);
        let heartbeat = Command::Heartbeat { now_ms: now, id: client.into(), address: "a".into(), report };
        let mut index = commands.len() as u64;
        index += 1;
        let first = table.apply_command(index, heartbeat.clone());
        let after_one = table.clone();
        for _ in 1..repeats {
            index += 1;
            let again = table.apply_command(index, heartbeat.clone());
            prop_assert_eq!(&again.is_ok(), &first.is_ok());
        }
        prop_assert_eq!(table.pool(), after_one.pool());
        // Everything but the heartbeat counter is as after the first one.
        let strip = |t: &LicenseTable| -> BTreeMap<String, _> {
            t.state().clients.iter().map(|(id, c)| {
                let mut c = c.clone();
                c.stats.heartbeats = 0;
                (id.clone(), c)
            }).collect()
        };
        prop_assert_eq!(strip(&table), strip(&after_one));
        prop_assert_eq!(&table.state().server_keys, &after_one.state().server_keys);
    }
}

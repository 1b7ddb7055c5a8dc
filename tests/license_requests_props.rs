//! Property tests through the serving node: random requests from random
//! clients — switches acting for themselves or for others, an operator, a
//! stranger — with keys genuine, bound to someone else, of an untrusted
//! issuer, forged, tampered with, shared, expiring, go through
//! `request::command` (what the VIP holder checks before it proposes) and
//! then `apply` (what every replica does), with the leader's sweeps in
//! between. After every step:
//!
//! - S3: nothing raises what is used of a type past its total; a type is
//!   over-subscribed only after contributions shrank (a key expired or was
//!   withdrawn, a client or a server key left), never by a grant or claim;
//! - a switch changes no other client's entry, nor the servers' keys;
//! - every key the table counts is a genuine key of a trusted issuer,
//!   bound to the serial of whoever holds it, counted once;
//! - the pool is what its definition says;
//! - a refused request changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::OnceLock;

use proptest::prelude::*;
use vipool::license::{IssuerKey, KeyStatement, SeenSignatures, SignedKey, TrustedIssuers};
use vipool::pki::ClientIdentity;
use vipool::proto::{Request, SwitchReport};
use vipool::server::rate::SourceRate;
use vipool::server::request::{command, RequestContext, RequestLimits};
use vipool::table::{Actor, Command, LicenseTable, LicenseType, Pool, PoolEntry, TableConfig, VerifiedKey};

/// The start of the run, in Unix seconds.
const T0: u64 = 1_750_000_000;

fn config() -> TableConfig {
    // Short timers so a run crosses missed heartbeats and removals.
    TableConfig {
        heartbeat_interval_ms: 2_000,
        missed_heartbeats_down: 3,
        silence_remove_ms: 20_000,
        ..TableConfig::default()
    }
}

fn acme() -> IssuerKey {
    IssuerKey::from_secret_bytes("acme", &[7; 32]).unwrap()
}

fn sign(issuer: &IssuerKey, id: &str, serial: &str, ty: &str, count: u32, expires: Option<u64>) -> SignedKey {
    issuer
        .sign(KeyStatement {
            key_id: id.into(),
            license_type: LicenseType::new(ty),
            count,
            serial: serial.into(),
            not_before: T0 - 60,
            expires,
            issuer: issuer.name().into(),
        })
        .unwrap()
}

/// The switches: id and serial.
const SWITCHES: [(&str, &str); 3] = [("sw1", "S1"), ("sw2", "S2"), ("sw3", "S3")];

struct Catalog {
    /// Keys switches may present: genuine ones and every kind of bad one.
    keys: Vec<SignedKey>,
    /// What the table may count: the genuine keys as verified.
    genuine: BTreeSet<VerifiedKey>,
    /// Keys an operator may install on a server.
    server_keys: Vec<SignedKey>,
    /// The servers' keys as the run starts, from their key files.
    initial: Vec<(&'static str, SignedKey)>,
}

/// Signed once for all cases: signing is slow in a debug build.
fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let acme = acme();
        let mut keys = Vec::new();
        for (id, serial) in SWITCHES {
            keys.push(sign(&acme, &format!("{id}-ap"), serial, "AP", 8, None));
            keys.push(sign(&acme, &format!("{id}-pefng"), serial, "PEFNG", 4, None));
            // Evaluation keys that expire during a run.
            keys.push(sign(&acme, &format!("{id}-eval"), serial, "AP", 6, Some(T0 + 10)));
        }
        // The same key id signed for two serials: counted once.
        keys.push(sign(&acme, "shared", "S1", "AP", 5, None));
        keys.push(sign(&acme, "shared", "S2", "AP", 5, None));
        let genuine: BTreeSet<VerifiedKey> = keys.iter().map(|k| k.statement().verified_key()).collect();
        // Bound to nobody here.
        keys.push(sign(&acme, "stray", "S9", "AP", 100, None));
        // An issuer nobody trusts, and one posing as acme.
        let globex = IssuerKey::from_secret_bytes("globex", &[8; 32]).unwrap();
        keys.push(sign(&globex, "untrusted", "S1", "AP", 100, None));
        let impostor = IssuerKey::from_secret_bytes("acme", &[9; 32]).unwrap();
        keys.push(sign(&impostor, "forged", "S2", "AP", 1000, None));
        // A genuine line with a character of its signature changed.
        let line = sign(&acme, "sw3-big", "S3", "AP", 1000, None).to_string();
        let mut chars: Vec<char> = line.chars().collect();
        let at = chars.len() - 5;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        keys.push(chars.into_iter().collect::<String>().parse().unwrap());
        let server_keys = vec![
            sign(&acme, "b-more", "CV2", "AP", 4, None),
            sign(&acme, "p-more", "CV1", "AP", 4, Some(T0 + 5)),
            sign(&acme, "sw1-ap", "CV1", "AP", 8, None),
        ];
        let initial = vec![
            ("primary", sign(&acme, "p-ap", "CV1", "AP", 16, None)),
            // An evaluation key: once it expires, what switches use of
            // PEFNG may be more than there is.
            ("primary", sign(&acme, "p-pefng", "CV1", "PEFNG", 8, Some(T0 + 8))),
            ("backup", sign(&acme, "b-ap", "CV2", "AP", 16, None)),
        ];
        let mut genuine = genuine;
        genuine.extend(server_keys.iter().map(|k| k.statement().verified_key()));
        genuine.extend(initial.iter().map(|(_, k)| k.statement().verified_key()));
        Catalog {
            keys,
            genuine,
            server_keys,
            initial,
        }
    })
}

fn identities() -> Vec<ClientIdentity> {
    let switch = |id: &str, serial: &str, issued_s: u64| ClientIdentity::Switch {
        id: id.into(),
        serial: serial.into(),
        issued_s: Some(issued_s),
    };
    let mut out: Vec<ClientIdentity> = SWITCHES.iter().map(|(id, s)| switch(id, s, 1_000)).collect();
    // sw1's replacement (its certificate issued later), a stranger, an
    // operator.
    out.push(switch("sw1", "S1B", 2_000));
    out.push(switch("mallory", "M1", 1_000));
    out.push(ClientIdentity::Operator { name: "alice".into() });
    out
}

fn id() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["sw1", "sw2", "sw3", "mallory"]).prop_map(str::to_owned)
}

fn license_type() -> impl Strategy<Value = LicenseType> {
    prop::sample::select(vec!["AP", "PEFNG", "PEFV"]).prop_map(LicenseType::new)
}

fn report() -> impl Strategy<Value = SwitchReport> {
    (
        prop::collection::btree_map(license_type(), 0u32..20, 0..2),
        prop::collection::vec(0..catalog().keys.len(), 0..4),
        prop::collection::btree_map(license_type(), 0u32..40, 0..3),
    )
        .prop_map(|(builtin, keys, used)| SwitchReport {
            builtin,
            keys: keys.into_iter().map(|n| catalog().keys[n].clone()).collect(),
            used,
        })
}

#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "test data, a few dozen per case: boxing would only add noise"
)]
enum Step {
    /// A request from identity `who`, `dt` ms after the previous step,
    /// given its `shape` by [`shaped`].
    Request {
        dt: u64,
        who: usize,
        shape: Shape,
        request: Request,
    },
    /// The leader's sweep.
    Sweep { dt: u64 },
}

/// Whom a switch's request names.
#[derive(Debug, Clone, Copy)]
enum Acting {
    /// Itself: its id, and its serial in a registration.
    Itself,
    /// The id the request was generated with (another client's, mostly),
    /// with its own serial: a switch acting for someone else.
    OtherId,
    /// Whatever id and serial the request was generated with.
    Raw,
}

/// How a request is made from the generated one.
#[derive(Debug, Clone, Copy)]
struct Shape {
    acting: Acting,
    /// A report a switch would send: the keys of its own that the flags
    /// pick (its AP, PEFNG and evaluation keys, and "shared") plus, when
    /// the bool says so, one of the catalog's (whatever that is), and a
    /// few of a poolable type used. `None`: the report as generated.
    clean: Option<([bool; 4], bool)>,
}

fn shaped(request: Request, who: &ClientIdentity, shape: Shape) -> Request {
    let ClientIdentity::Switch {
        id: me,
        serial: my_serial,
        ..
    } = who
    else {
        return request;
    };
    let keys = |mut report: SwitchReport| {
        let Some((own, stray)) = shape.clean else {
            return report;
        };
        report.keys.truncate(usize::from(stray));
        report.used = std::mem::take(&mut report.used)
            .into_iter()
            .filter(|(t, _)| t.as_str() != "PEFV")
            .map(|(t, n)| (t, n % 7))
            .collect();
        let mine = [
            format!("{me}-ap"),
            format!("{me}-pefng"),
            format!("{me}-eval"),
            "shared".into(),
        ];
        for (pick, key_id) in own.iter().zip(&mine) {
            let found = catalog()
                .keys
                .iter()
                .find(|k| k.id() == key_id && k.serial() == my_serial);
            if let (true, Some(k)) = (pick, found) {
                if !report.keys.contains(k) {
                    report.keys.push(k.clone());
                }
            }
        }
        report
    };
    let named = |id: String| match shape.acting {
        Acting::Itself => me.clone(),
        Acting::OtherId | Acting::Raw => id,
    };
    match request {
        Request::Register {
            id,
            serial,
            version,
            report,
        } => Request::Register {
            id: named(id),
            serial: match shape.acting {
                Acting::Itself | Acting::OtherId => my_serial.clone(),
                Acting::Raw => serial,
            },
            version,
            report: keys(report),
        },
        Request::Heartbeat { id, report } => Request::Heartbeat {
            id: named(id),
            report: keys(report),
        },
        Request::Update { id, report } => Request::Update {
            id: named(id),
            report: keys(report),
        },
        Request::Acquire {
            id,
            license_type,
            count,
        } => Request::Acquire {
            id: named(id),
            license_type,
            count,
        },
        Request::Release {
            id,
            license_type,
            count,
        } => Request::Release {
            id: named(id),
            license_type,
            count,
        },
        other => other,
    }
}

fn step() -> impl Strategy<Value = Step> {
    // Evaluation keys expire 10 s into a run: about halfway.
    let dt = 0u64..600;
    let who = 0..identities().len();
    let request = prop_oneof![
        5 => (id(), prop::sample::select(vec!["S1", "S2", "S3", "S1B", "M1"]), report()).prop_map(
            |(id, serial, report)| Request::Register { id, serial: serial.into(), version: "v".into(), report }
        ),
        4 => (id(), report()).prop_map(|(id, report)| Request::Heartbeat { id, report }),
        2 => (id(), report()).prop_map(|(id, report)| Request::Update { id, report }),
        4 => (id(), license_type(), 0u32..12).prop_map(|(id, license_type, count)| {
            Request::Acquire { id, license_type, count }
        }),
        2 => (id(), license_type(), 0u32..12).prop_map(|(id, license_type, count)| {
            Request::Release { id, license_type, count }
        }),
        1 => id().prop_map(|id| Request::RemoveClient { id }),
        1 => (prop::sample::select(vec!["primary", "backup"]), 0..catalog().server_keys.len()).prop_map(
            |(server, n)| Request::InstallKey { server: server.into(), key: catalog().server_keys[n].clone() }
        ),
        1 => prop::sample::select(vec!["p-ap", "b-ap", "b-more", "sw1-ap"])
            .prop_map(|key_id| Request::RemoveKey { key_id: key_id.into() }),
    ];
    let acting = prop_oneof![
        6 => Just(Acting::Itself),
        2 => Just(Acting::OtherId),
        1 => Just(Acting::Raw),
    ];
    let clean = prop_oneof![
        1 => Just(None),
        4 => (any::<[bool; 4]>(), prop::bool::weighted(0.2)).prop_map(Some),
    ];
    let shape = (acting, clean).prop_map(|(acting, clean)| Shape { acting, clean });
    prop_oneof![
        12 => (dt.clone(), who, shape, request)
            .prop_map(|(dt, who, shape, request)| Step::Request { dt, who, shape, request }),
        1 => dt.prop_map(|dt| Step::Sweep { dt }),
    ]
}

/// The pair as the run starts: both servers announced, 16 AP on each and
/// 8 PEFNG (an evaluation key) on the primary, from their key files.
fn pair() -> LicenseTable {
    let mut table = LicenseTable::new(config());
    let mut commands = vec![
        Command::Issuers {
            issuers: TrustedIssuers::from_iter([acme().trusted()]).by_name_text(),
            by: Actor::Server("primary".into()),
        },
        Command::ServerSerial {
            server: "primary".into(),
            serial: "CV1".into(),
        },
        Command::ServerSerial {
            server: "backup".into(),
            serial: "CV2".into(),
        },
    ];
    for (server, key) in &catalog().initial {
        commands.push(Command::InstallServerKey {
            now_ms: T0 * 1000,
            server: (*server).into(),
            key: key.statement().verified_key(),
            by: Actor::Server((*server).into()),
        });
    }
    for (n, command) in commands.into_iter().enumerate() {
        table.apply_command(n as u64 + 1, command).unwrap();
    }
    table
}

/// The SPEC's definition, written out independently of the table's code.
fn recomputed(table: &LicenseTable) -> Pool {
    let config = table.config();
    let mut pool: Pool = config
        .poolable()
        .map(|t| (t.clone(), PoolEntry::default()))
        .collect();
    let keys = table.state().server_keys.values().map(|k| &k.key.key).chain(
        table
            .state()
            .clients
            .values()
            .flat_map(|c| c.keys.iter().map(|k| &k.key)),
    );
    for key in keys {
        if let Some(e) = pool.get_mut(&key.license_type) {
            e.total += u64::from(key.count);
        }
    }
    for c in table.state().clients.values() {
        for (t, n) in &c.used {
            if let Some(e) = pool.get_mut(t) {
                e.used += u64::from(*n);
            }
        }
    }
    pool
}

fn check_step(
    before: &LicenseTable,
    after: &LicenseTable,
    who: Option<&ClientIdentity>,
) -> Result<(), String> {
    if after.pool() != &recomputed(after) {
        return Err(format!("pool {:?} is not its definition", after.pool()));
    }
    // S3.
    for (t, a) in after.pool() {
        let b = before.pool().get(t).copied().unwrap_or_default();
        if a.used > b.used && a.used > a.total {
            return Err(format!(
                "{t}: used rose {} -> {} past the total {}",
                b.used, a.used, a.total
            ));
        }
        if a.over_subscribed() && a.total >= b.total && !b.over_subscribed() {
            return Err(format!(
                "{t}: over-subscribed, and no contribution shrank: {b:?} -> {a:?}"
            ));
        }
    }
    // Only genuine keys, bound to their holder, counted once.
    let mut seen = BTreeSet::new();
    let state = after.state();
    for c in state.clients.values() {
        for k in &c.keys {
            if !catalog().genuine.contains(k) || k.serial != c.serial || !seen.insert(&k.key_id) {
                return Err(format!("client {} counts key {k:?}", c.id));
            }
        }
    }
    for k in state.server_keys.values() {
        if !catalog().genuine.contains(&k.key)
            || !seen.insert(&k.key.key_id)
            || state.servers[&k.server].serial != k.key.serial
        {
            return Err(format!("server {} counts key {:?}", k.server, k.key));
        }
    }
    // A switch changes nothing but its own entry.
    match who {
        Some(ClientIdentity::Switch { id, serial, .. }) => {
            let others = |t: &LicenseTable| -> BTreeMap<String, vipool::table::Client> {
                t.state()
                    .clients
                    .iter()
                    .filter(|(k, _)| *k != id)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if others(before) != others(after) {
                return Err(format!("switch {id} changed another client"));
            }
            if before.state().server_keys != after.state().server_keys
                || before.state().servers != after.state().servers
            {
                return Err(format!("switch {id} changed the servers' keys"));
            }
            if let Some(mine) = after.client(id) {
                if before.client(id) != Some(mine) && &mine.serial != serial {
                    return Err(format!(
                        "switch {id} wrote serial {:?} with a certificate for {serial:?}",
                        mine.serial
                    ));
                }
            }
        }
        Some(ClientIdentity::Operator { .. }) => {
            for (t, a) in after.pool() {
                if a.used > before.pool()[t].used {
                    return Err(format!("an operator's change raised {t} used"));
                }
            }
        }
        None => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_request_breaks_s3_or_touches_another_clients_state(
        steps in prop::collection::vec(step(), 1..50),
        two_sources in any::<bool>(),
    ) {
        let trusted = TrustedIssuers::from_iter([acme().trusted()]);
        let limits = RequestLimits { max_clients_per_source: 100, registrations_per_s_per_source: 1000, ..RequestLimits::default() };
        let registrations = SourceRate::new(1000, 100);
        // Signatures remembered, as a server does.
        let seen = SeenSignatures::default();
        let identities = identities();
        let mut table = pair();
        let mut index = table.applied_index();
        let mut now_ms = T0 * 1000;
        for (n, step) in steps.into_iter().enumerate() {
            let before = table.clone();
            let (shown, who, result) = match step {
                Step::Sweep { dt } => {
                    now_ms += dt;
                    index += 1;
                    let r = table.apply_command(index, Command::Sweep { now_ms });
                    ("sweep".to_owned(), None, r.map(|_| ()).map_err(|e| e.to_string()))
                }
                Step::Request { dt, who, shape, request } => {
                    now_ms += dt;
                    let who = &identities[who];
                    let request = shaped(request, who, shape);
                    let peer: SocketAddr = if two_sources && n % 2 == 1 {
                        "192.0.2.51:4000".parse().unwrap()
                    } else {
                        "192.0.2.50:4000".parse().unwrap()
                    };
                    let shown = format!("{who}: {request:?}");
                    let ctx = RequestContext {
                        now_ms,
                        peer,
                        trusted: &trusted,
                        limits: &limits,
                        registrations: &registrations,
                        seen: &seen,
                        table: &table,
                    };
                    let mapped = command(request, who, &ctx);
                    let result = match mapped {
                        Ok(c) => {
                            index += 1;
                            table.apply_command(index, c).map(|_| ()).map_err(|e| format!("apply: {e}"))
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    (shown, Some(who.clone()), result)
                }
            };
            if result.is_err() {
                prop_assert_eq!(table.state(), before.state(), "refused {} changed the table", shown);
            }
            let checked = check_step(&before, &table, who.as_ref());
            prop_assert!(checked.is_ok(), "step {}: {}: {:?}", n, shown, checked);
        }
    }
}

/// The generator reaches the states the properties are about: grants and
/// claims accepted, keys counted, keys refused, over-subscription shown.
#[test]
fn the_generator_covers_grants_refusals_and_over_subscription() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let trusted = TrustedIssuers::from_iter([acme().trusted()]);
    let limits = RequestLimits::default();
    let registrations = SourceRate::new(1000, 1000);
    // Signatures remembered, as a server does.
    let seen = SeenSignatures::default();
    let identities = identities();
    let (mut grants, mut refusals, mut counted, mut over) = (0, 0, 0, 0);
    let mut causes = BTreeMap::new();
    for _ in 0..100 {
        let steps = prop::collection::vec(step(), 30..50)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut table = pair();
        let mut index = table.applied_index();
        let mut now_ms = T0 * 1000;
        for step in steps {
            let (dt, command) = match step {
                Step::Sweep { dt } => (dt, Ok(Command::Sweep { now_ms: now_ms + dt })),
                Step::Request {
                    dt,
                    who,
                    shape,
                    request,
                } => {
                    let request = shaped(request, &identities[who], shape);
                    let ctx = RequestContext {
                        now_ms: now_ms + dt,
                        peer: "192.0.2.50:4000".parse().unwrap(),
                        trusted: &trusted,
                        limits: &limits,
                        registrations: &registrations,
                        seen: &seen,
                        table: &table,
                    };
                    (
                        dt,
                        command(request, &identities[who], &ctx).map_err(|e| e.to_string()),
                    )
                }
            };
            now_ms += dt;
            let grant = matches!(&command, Ok(c) if matches!(c.inner(), Command::Acquire { .. }));
            match command.and_then(|c| {
                index += 1;
                table.apply_command(index, c).map_err(|e| e.to_string())
            }) {
                Ok(_) if grant => grants += 1,
                Ok(_) => {}
                Err(e) => {
                    refusals += 1;
                    let cause: String = e.split(':').next().unwrap_or("").chars().take(40).collect();
                    *causes.entry(cause).or_insert(0) += 1;
                }
            }
            counted += table
                .state()
                .clients
                .values()
                .map(|c| c.keys.len())
                .sum::<usize>();
            over += usize::from(table.pool().values().any(|e| e.over_subscribed()));
        }
    }
    assert!(grants > 30, "{grants} grants; refusals: {causes:#?}");
    assert!(refusals > 300, "{refusals} refusals");
    assert!(counted > 300, "{counted} keys counted; refusals: {causes:#?}");
    assert!(over > 0, "over-subscription never shown");
}

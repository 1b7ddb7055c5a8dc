//! Issue 11, item 1: the table's settings are replicated state.
//!
//! The divergence the issue found, tried on a real pair: the primary pools
//! XSEC (the SPEC's default), the backup's configuration says XSEC is
//! switch-specific. Before, both passed `check-config`, paired up, and
//! after one grant the primary showed a client with XSEC 10 and the backup
//! nothing, at the same commit and applied index, without a word; the
//! witness applied the SPEC's defaults whatever the servers used.
//!
//! Now: every member applies the log with the settings the log set, so
//! the three tables agree at every applied index; the backup names the
//! setting that differs in its log and in `show status`; and when the
//! backup serves (the primary stopped), it proposes its own settings,
//! says so, and every member, the returning primary included, applies
//! them.
//!
//! Hosts: 0 the primary, 1 the backup, 2 a switch, 3 the witness.

mod common;

use std::net::Ipv4Addr;

use common::pair::{PairLab, PairOptions, Which, CLIENT_PORT, VIP, WAIT};
use common::{in_netns, lab_available, lab_key, runtime, switch_tls, wait_for, Host};
use nix::sys::signal::Signal;
use vipool::client::{ClientError, Connection};
use vipool::proto::{ServerError, SwitchReport, TableDump};
use vipool::table::{CommandError, LicenseType};

const SWITCH: &str = "sw-xsec";
const SWITCH_SERIAL: &str = "SN-XSEC-1";

fn xsec() -> LicenseType {
    LicenseType::new("XSEC")
}

/// The backup's `[license]` lines: XSEC switch-specific, the rest as the
/// SPEC has them.
const BACKUP_TYPES: &str = "poolable = [\"AP\", \"PEFNG\", \"RFPROTECT\", \"ACR\"]\n\
                            switch_specific = [\"PEFV\", \"WEBCC\", \"XSEC\"]\n";

/// What one switch request came back with.
type Answer = Result<(), ClientError>;

/// The switch registers with its own 16-XSEC key (if `register`: a
/// registration carries the switch's whole state, so the switch that
/// already holds XSEC does not send another), then asks for `count` XSEC
/// from the pool, through the VIP.
fn register_and_acquire(host: &Host, register: bool, count: u32) -> (Answer, Answer) {
    let tls = switch_tls(host, SWITCH, SWITCH_SERIAL);
    in_netns(host, move || {
        runtime().block_on(async move {
            let mut conn = match Connection::connect((VIP, CLIENT_PORT), &tls).await {
                Ok(c) => c,
                Err(e) => return (Err(e), Err(ClientError::Closed)),
            };
            let report = SwitchReport {
                keys: vec![lab_key("sw-xsec-key", SWITCH_SERIAL, "XSEC", 16)],
                ..SwitchReport::default()
            };
            let registered = if register {
                conn.register(SWITCH, SWITCH_SERIAL, "8.10", report)
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            };
            let acquired = conn.acquire(SWITCH, &xsec(), count).await.map(|_| ());
            (registered, acquired)
        })
    })
    .join()
    .expect("switch thread")
}

/// Every member's table, once all three show the same applied index
/// (entries keep committing: sweeps, key checks). Panics after `WAIT`.
fn tables_at_one_index(pair: &PairLab, from: &Host, witness: Ipv4Addr) -> [TableDump; 3] {
    let mut last = None;
    let agreed = wait_for(WAIT, || {
        let dumps = [
            pair.show(from, Which::Primary),
            pair.show(from, Which::Backup),
            common::pair::show(from, witness),
        ];
        let Ok(dumps) = dumps.into_iter().collect::<Result<Vec<_>, _>>() else {
            return false;
        };
        let index = dumps[0].status.applied_index;
        let same = dumps.iter().all(|d| d.status.applied_index == index);
        last = Some(dumps);
        same
    });
    let dumps = last.expect("no member answered");
    assert!(
        agreed,
        "the members never showed one applied index: {:?}\n{}",
        dumps.iter().map(|d| d.status.applied_index).collect::<Vec<_>>(),
        pair.log_tails(40)
    );
    dumps.try_into().expect("three dumps")
}

/// The three tables are one table: state, pool and settings.
fn assert_equal(what: &str, [p, b, w]: &[TableDump; 3]) {
    let index = p.status.applied_index;
    for (name, d) in [("backup", b), ("witness", w)] {
        assert_eq!(
            d.state, p.state,
            "{what}: {name}'s clients and keys differ from the primary's at index {index}"
        );
        assert_eq!(
            d.pool, p.pool,
            "{what}: {name}'s pool differs from the primary's at index {index}"
        );
        assert_eq!(
            d.types, p.types,
            "{what}: {name}'s license types differ from the primary's at index {index}"
        );
    }
}

fn used_xsec(d: &TableDump) -> Option<u32> {
    d.state.clients.get(SWITCH).map(|c| c.used_of(&xsec()))
}

#[test]
fn servers_configured_differently_keep_one_table() {
    let test = "servers_configured_differently_keep_one_table";
    if !lab_available(test) {
        return;
    }
    let opts = PairOptions {
        witness: true,
        node_license_extra: [String::new(), BACKUP_TYPES.to_owned()],
        ..PairOptions::default()
    };
    let mut pair = PairLab::start(opts);
    let switch = pair.host(2);
    let witness = pair.host(3).addr;
    pair.wait_settled(&switch);

    // The primary serves with its settings: XSEC poolable as the SPEC's,
    // but the lab's heartbeat interval (60 s) is not the SPEC's, so it
    // proposed them when it started serving.
    let proposed = pair.primary.log_lines("proposing them for every member");
    assert!(
        !proposed.is_empty()
            && proposed[0].contains("license.heartbeat_interval_ms: configured 60000, the pair's 30000"),
        "the primary did not propose its settings: {proposed:?}"
    );
    let (registered, acquired) = register_and_acquire(&switch, true, 10);
    assert!(registered.is_ok(), "register: {registered:?}");
    assert!(acquired.is_ok(), "acquire 10 XSEC: {acquired:?}");
    let tables = tables_at_one_index(&pair, &switch, witness);
    assert_equal("the primary serving", &tables);
    for (name, d) in ["primary", "backup", "witness"].iter().zip(&tables) {
        assert_eq!(used_xsec(d), Some(10), "{name}: the switch's grant of 10 XSEC");
        assert_eq!(
            d.pool.get(&xsec()).map(|e| e.used),
            Some(10),
            "{name}: XSEC used in the pool"
        );
    }
    println!(
        "{test}: primary serving: the three tables agree at applied index {}: {SWITCH} uses 10 XSEC everywhere",
        tables[0].status.applied_index
    );

    // The backup names the setting that differs, in its status and its log.
    let [primary, backup, _] = &tables;
    let warning = backup
        .status
        .warnings
        .iter()
        .find(|w| w.contains("table settings differ"))
        .unwrap_or_else(|| panic!("the backup's status does not warn: {:?}", backup.status.warnings));
    assert!(
        warning.contains("license type XSEC: configured switch-specific, the pair's poolable"),
        "{warning}"
    );
    assert!(
        !primary
            .status
            .warnings
            .iter()
            .any(|w| w.contains("table settings")),
        "the primary's settings are the pair's: {:?}",
        primary.status.warnings
    );
    let logged = || {
        pair.backup
            .log_lines("settings differ from the pair's replicated ones")
    };
    assert!(
        wait_for(WAIT, || !logged().is_empty()),
        "the backup never logged the difference"
    );
    assert!(logged()[0].contains("XSEC"), "{}", logged()[0]);
    // Rate-limited: the rules run every raft tick (50 ms here), the line
    // comes once a minute.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(logged().len(), 1, "{:?}", logged());
    println!("{test}: the backup says: {warning}");

    // The primary stops: the backup serves and proposes its settings,
    // which every member then applies.
    pair.primary.signal(Signal::SIGTERM);
    assert!(
        pair.primary.process.wait_exit(WAIT).is_some(),
        "the primary did not stop"
    );
    let switched = wait_for(WAIT, || {
        pair.show(&switch, Which::Backup).is_ok_and(|d| {
            d.status.serving && d.types.get(&xsec()) == Some(&vipool::table::TypeKind::SwitchSpecific)
        })
    });
    assert!(
        switched,
        "the backup did not serve with its settings:\n{}",
        pair.log_tails(40)
    );
    let proposed = pair.backup.log_lines("proposing them for every member");
    assert!(
        !proposed.is_empty() && proposed[0].contains("XSEC"),
        "{proposed:?}"
    );
    assert!(!pair.backup.log_lines("table settings committed").is_empty());

    // XSEC is no longer pooled: the switch keeps what it reported, but may
    // take no more of it.
    let (_, more) = register_and_acquire(&switch, false, 1);
    assert!(
        matches!(&more, Err(ClientError::Server(ServerError::Refused(CommandError::NotPoolable(t)))) if *t == xsec()),
        "an XSEC grant under the backup's settings: {more:?}"
    );

    // The primary returns, catches up and, once it holds the VIP again,
    // proposes its own settings: the pair runs with the settings of
    // whoever serves, and every member applies them alike.
    pair.restart(Which::Primary);
    let back = wait_for(2 * WAIT, || {
        pair.show(&switch, Which::Primary).is_ok_and(|d| {
            d.status.serving && d.types.get(&xsec()) == Some(&vipool::table::TypeKind::Poolable)
        })
    });
    assert!(
        back,
        "the primary did not serve again with its settings:\n{}",
        pair.log_tails(40)
    );
    assert!(
        !pair
            .primary
            .run_log_lines("proposing them for every member")
            .is_empty(),
        "the returning primary did not say it proposed its settings"
    );
    let tables = tables_at_one_index(&pair, &switch, witness);
    assert_equal("the primary serving again", &tables);
    for (name, d) in ["primary", "backup", "witness"].iter().zip(&tables) {
        assert_eq!(used_xsec(d), Some(10), "{name}: what the switch reported stays");
        assert_eq!(
            d.pool.get(&xsec()).map(|e| e.used),
            Some(10),
            "{name}: XSEC used in the pool again"
        );
    }
    println!(
        "{test}: the primary serving again: the three tables agree at applied index {} with XSEC poolable",
        tables[0].status.applied_index
    );
}

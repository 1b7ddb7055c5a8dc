//! Issue 11, item 5: SIGHUP reloads what may change while a server runs
//! (its key files, the trusted issuers, the table settings, the log
//! filter), names what else changed and needs a restart, and refuses a
//! broken file without stopping: the node runs on with what it has.
//!
//! On a real pair: both servers' key files gain a key and the table
//! settings change on disk (XSEC switch-specific, another heartbeat
//! interval; the primary's VRRP priority too, which needs a restart); a
//! SIGHUP to each and the views of both members show the new pool and
//! settings. Then the primary's files are broken twice (a key bound to
//! another serial, a file that is not TOML): each SIGHUP is refused with
//! the reason in the log while the node keeps serving the same table.
//! Last, a key removed from the files leaves the pool on both members.
//!
//! Hosts: 0 the primary, 1 the backup, 2 a switch and the operator.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pair::{ap, PairLab, PairOptions, Which, CLIENT_PORT, VIP, WAIT};
use common::{in_netns, lab_available, lab_key, runtime, switch_tls, wait_for, Host};
use nix::sys::signal::Signal;
use vipool::client::Connection;
use vipool::proto::{SwitchReport, TableDump};
use vipool::table::{LicenseType, TypeKind};

/// The lines the settings change puts into each server's `[license]`.
const NEW_SETTINGS: &str = "poolable = [\"AP\", \"PEFNG\", \"RFPROTECT\", \"ACR\"]\n\
                            switch_specific = [\"PEFV\", \"WEBCC\", \"XSEC\"]\n";

fn pefng() -> LicenseType {
    LicenseType::new("PEFNG")
}

fn xsec() -> LicenseType {
    LicenseType::new("XSEC")
}

/// The PEFNG total of a member's pool, and whether XSEC is switch-specific
/// and the heartbeat interval `hb` in its replicated settings.
fn shows(d: &TableDump, pefng_total: u64, hb: u64) -> bool {
    d.pool.get(&pefng()).map_or(0, |e| e.total) == pefng_total
        && d.types.get(&xsec()) == Some(&TypeKind::SwitchSpecific)
        && d.heartbeat_interval_ms == hb
}

/// A switch registers through the VIP and takes one AP: the pair serves.
fn served(host: &Host, id: &str) -> Result<(), String> {
    let tls = switch_tls(host, id, &format!("SN-{id}"));
    let (id, serial) = (id.to_owned(), format!("SN-{id}"));
    in_netns(host, move || {
        runtime().block_on(async move {
            let mut conn = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect((VIP, CLIENT_PORT), &tls),
            )
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
            conn.register(&id, &serial, "8.10", SwitchReport::default())
                .await
                .map_err(|e| e.to_string())?;
            conn.acquire(&id, &ap(), 1).await.map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .join()
    .expect("switch thread")
}

fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).expect("read");
    std::fs::write(path, f(text)).expect("write");
}

/// The node is still running `within` after now.
fn alive(pair: &PairLab, which: Which, within: Duration) -> bool {
    pair.node(which).process.wait_exit(within).is_none()
}

#[test]
fn sighup_reloads_keys_and_settings_and_refuses_a_broken_file() {
    let test = "sighup_reloads_keys_and_settings_and_refuses_a_broken_file";
    if !lab_available(test) {
        return;
    }
    let pair = PairLab::start(PairOptions::default());
    let op = pair.host(2);
    pair.wait_settled(&op);
    let license = pair.lab.dir().join("license");
    let (primary_keys, backup_keys) = (license.join("primary.keys"), license.join("backup.keys"));
    let original_primary_keys = std::fs::read_to_string(&primary_keys).unwrap();
    let hb = pair.opts.heartbeat_interval_ms;
    let new_hb = hb / 2;

    // On disk: a PEFNG key in each server's key file, XSEC switch-specific
    // and another heartbeat interval in both configurations, and on the
    // primary a VRRP priority that only a restart applies.
    let pefng_key =
        |name: &str, count| lab_key(&format!("{name}-PEFNG"), &format!("SN-{name}"), "PEFNG", count);
    edit(&primary_keys, |t| format!("{t}{}\n", pefng_key("primary", 8)));
    edit(&backup_keys, |t| format!("{t}{}\n", pefng_key("backup", 4)));
    for which in [Which::Primary, Which::Backup] {
        edit(&pair.node(which).config, |t| {
            t.replace("[license]\n", &format!("[license]\n{NEW_SETTINGS}"))
                .replace(
                    &format!("heartbeat_interval_ms = {hb}"),
                    &format!("heartbeat_interval_ms = {new_hb}"),
                )
                .replace("priority = 200", "priority = 210")
        });
    }
    pair.primary.signal(Signal::SIGHUP);
    pair.backup.signal(Signal::SIGHUP);

    // Both members' views: PEFNG 8 + 4 in the pool, the new settings.
    let mut last = None;
    let reloaded = wait_for(WAIT, || {
        let dumps = [pair.show(&op, Which::Primary), pair.show(&op, Which::Backup)];
        let ok = dumps
            .iter()
            .all(|d| d.as_ref().is_ok_and(|d| shows(d, 12, new_hb)));
        last = Some(dumps);
        ok
    });
    assert!(
        reloaded,
        "the reload never reached both views: {:?}\n{}",
        last.map(|d| d.map(|d| d.map(|d| (d.pool, d.types, d.heartbeat_interval_ms)))),
        pair.log_tails(40)
    );
    for which in [Which::Primary, Which::Backup] {
        assert!(alive(&pair, which, Duration::ZERO), "{which:?} exited on SIGHUP");
        let d = pair.show(&op, which).unwrap();
        assert!(
            !d.status
                .warnings
                .iter()
                .any(|w| w.contains("table settings differ")),
            "{which:?}: its reloaded settings are the pair's: {:?}",
            d.status.warnings
        );
    }
    let said = pair.primary.log_lines("SIGHUP: configuration reloaded");
    assert_eq!(said.len(), 1, "{said:?}");
    for what in [
        "license type XSEC: switch-specific (was poolable)",
        &format!("license.heartbeat_interval_ms: {new_hb} (was {hb})"),
        "license.key_files: keys added: primary-PEFNG",
    ] {
        assert!(said[0].contains(what), "{what:?} not in {}", said[0]);
    }
    let restart = pair.primary.log_lines("take effect only at the next start");
    assert!(
        restart.len() == 1 && restart[0].contains("vrrp.priority"),
        "{restart:?}"
    );
    assert!(
        pair.backup
            .log_lines("take effect only at the next start")
            .is_empty(),
        "the backup's changes all reload: {:?}",
        pair.backup.log_lines("take effect only at the next start")
    );
    // Once at start (the lab's heartbeat interval is not the SPEC's), once
    // after the reload.
    let proposed = pair
        .primary
        .log_lines("VIP holder: this server's [license] settings differ");
    assert!(
        proposed.len() == 2 && proposed[1].contains("XSEC"),
        "the primary did not propose its reloaded settings: {proposed:?}"
    );
    println!("{test}: reloaded on both: {}", said[0]);
    served(&op, "sw-reload-1").expect("served after the reload");
    let before = pair.show(&op, Which::Primary).unwrap();

    // A key file with a key of another serial: the whole file is refused,
    // named in the log, and the node serves on with what it had.
    let refused_lines = |n| {
        let lines = pair.primary.log_lines("SIGHUP: configuration refused");
        (lines.len() == n).then_some(lines)
    };
    edit(&primary_keys, |t| {
        format!("{t}{}\n", lab_key("stolen-PEFNG", "SN-backup", "PEFNG", 100))
    });
    pair.primary.signal(Signal::SIGHUP);
    let mut refused = None;
    assert!(
        wait_for(WAIT, || {
            refused = refused_lines(1);
            refused.is_some()
        }),
        "no refusal logged:\n{}",
        pair.log_tails(20)
    );
    let log = pair.primary.log();
    let why = log
        .lines()
        .skip_while(|l| !l.contains("SIGHUP: configuration refused"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        why.contains("primary.keys") && why.contains("SN-backup"),
        "the refusal does not name the key file and the binding: {why}"
    );
    println!("{test}: refused: {why}");
    // The Glue took nothing: the pool and the settings are as they were,
    // and in a key round (2 s) the stolen key would have been proposed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(alive(&pair, Which::Primary, Duration::ZERO), "the primary exited");
    let after = pair.show(&op, Which::Primary).unwrap();
    assert!(after.status.serving, "the primary stopped serving");
    assert_eq!(after.pool.get(&pefng()), before.pool.get(&pefng()));
    assert!(!after.state.server_keys.contains_key("stolen-PEFNG"));
    served(&op, "sw-reload-2").expect("served after a refused reload");

    // Not TOML at all: refused the same way.
    let config = pair.primary.config.clone();
    let good_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "[node\nname = ").unwrap();
    pair.primary.signal(Signal::SIGHUP);
    assert!(
        wait_for(WAIT, || refused_lines(2).is_some()),
        "no refusal logged for a broken file:\n{}",
        pair.log_tails(20)
    );
    assert!(alive(&pair, Which::Primary, Duration::from_millis(500)));
    served(&op, "sw-reload-3").expect("served after a broken file");

    // The files fixed, the PEFNG key removed: it leaves the pool on both
    // members; the priority change is still reported as waiting, and so is
    // the primary's certificate, renewed on disk (a line added here).
    std::fs::write(&config, good_config).unwrap();
    std::fs::write(&primary_keys, original_primary_keys).unwrap();
    let cert = pair.lab.dir().join("pki").join("primary.crt");
    edit(&cert, |t| format!("{t}\n"));
    pair.primary.signal(Signal::SIGHUP);
    let removed = wait_for(WAIT, || {
        [Which::Primary, Which::Backup].iter().all(|w| {
            pair.show(&op, *w)
                .is_ok_and(|d| shows(&d, 4, new_hb) && !d.state.server_keys.contains_key("primary-PEFNG"))
        })
    });
    assert!(removed, "the removed key stayed:\n{}", pair.log_tails(40));
    let said = pair.primary.log_lines("SIGHUP: configuration reloaded");
    assert!(
        said.len() == 2 && said[1].contains("keys removed: primary-PEFNG"),
        "{said:?}"
    );
    let restart = pair.primary.log_lines("take effect only at the next start");
    assert!(
        restart.len() == 2
            && restart[1].contains("vrrp.priority")
            && restart[1].contains("primary.crt (changed on disk)"),
        "{restart:?}"
    );
    assert!(!restart[0].contains("primary.crt"), "{restart:?}");
    for which in [Which::Primary, Which::Backup] {
        assert!(alive(&pair, which, Duration::ZERO), "{which:?} exited");
    }
    served(&op, "sw-reload-4").expect("served at the end");
}

/// `systemctl reload` is the SIGHUP the test above sends: both units say so.
#[test]
fn the_units_reload_with_sighup() {
    for unit in ["vipool-node.service", "vipool-witness.service"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd/").to_owned() + unit;
        let text = std::fs::read_to_string(&path).unwrap();
        let reload: Vec<&str> = text.lines().filter(|l| l.starts_with("ExecReload=")).collect();
        assert_eq!(reload, ["ExecReload=/bin/kill -HUP $MAINPID"], "{unit}");
    }
}

//! A server's own license keys (`license.key_files`) in the replicated table.
//!
//! Both servers' keys count in the pool (SPEC §2: 16 + 16 = 32), whichever
//! node holds the VIP. Each server keeps the table equal to its key files
//! (read and verified against its serial once, at start):
//!
//! - it announces its serial (`node.serial`) when the table holds another
//!   or none, so that keys bound to it can be installed, and an
//!   operator's key for it checked, on whichever node proposes;
//! - it installs the keys of its files that count now (valid from their
//!   start, evaluation keys until they expire), and
//! - removes the keys it installed itself that are no longer in its files
//!   or no longer count.
//!
//! Keys an operator installed for it at run time are left alone: they
//! stay until an operator removes them or they expire (a key of the files
//! that an operator already installed counts as installed).
//!
//! The VIP holder proposes the changes; the other server submits them to
//! the leader (raft forwards them) and checks its applied table again
//! later: every change is idempotent in effect (a duplicate install is
//! refused by the table with `KeyExists`, a duplicate removal as an unknown
//! key, and neither changes anything).

use crate::license::ServerKeyEntry;
use crate::table::{Actor, Command, TableState, VerifiedKey};

/// The commands that bring `server`'s entries in `state` to its key files
/// `files` at `now_ms`, in the order to apply them: the serial first, then
/// removals of entries that are gone or changed, then installs.
pub(super) fn key_changes(
    state: &TableState,
    server: &str,
    serial: &str,
    files: &[ServerKeyEntry],
    now_ms: u64,
) -> Vec<Command> {
    let me = Actor::Server(server.to_owned());
    let mut changes = Vec::new();
    if state.servers.get(server).map(|s| s.serial.as_str()) != Some(serial) {
        // Once applied, keys bound to another serial are gone: they are
        // not counted as present below.
        changes.push(Command::ServerSerial {
            server: server.to_owned(),
            serial: serial.to_owned(),
        });
    }
    // A key counts only once the pair trusts its issuer (the table
    // refuses it before): it waits until the VIP holder's issuers, which
    // it proposes before its keys, are in the log.
    let wanted: Vec<&VerifiedKey> = files
        .iter()
        .filter(|e| e.counts_at(now_ms) && state.issuers.contains_key(&e.key.issuer))
        .map(|e| &e.key)
        .collect();
    let ours = state
        .server_keys
        .iter()
        .filter(|(_, k)| k.server == server && k.key.serial == serial);
    for (key_id, entry) in ours {
        if entry.installed_by == me && !wanted.contains(&&entry.key) {
            changes.push(Command::RemoveServerKey {
                key_id: key_id.clone(),
                by: me.clone(),
            });
        }
    }
    for key in wanted {
        let installed = state
            .server_keys
            .get(&key.key_id)
            .is_some_and(|entry| entry.server == server && entry.key == *key);
        // An entry of that id owned by someone else is not ours to
        // replace: the install is refused and the refusal logged.
        if !installed {
            changes.push(Command::InstallServerKey {
                now_ms,
                server: server.to_owned(),
                key: key.clone(),
                by: me.clone(),
            });
        }
    }
    changes
}

/// The keys of `files` that count at `now_ms` but wait for the pair to
/// trust their issuer (see [`key_changes`]).
pub(super) fn waiting_for_issuer<'a>(
    state: &TableState,
    files: &'a [ServerKeyEntry],
    now_ms: u64,
) -> Vec<&'a ServerKeyEntry> {
    files
        .iter()
        .filter(|e| e.counts_at(now_ms) && !state.issuers.contains_key(&e.key.issuer))
        .collect()
}

/// What changed between two readings of a server's key files (a SIGHUP),
/// for the log: key ids added, removed, and changed (the same id, another
/// key); `None` if nothing did.
pub(super) fn file_changes(old: &[ServerKeyEntry], new: &[ServerKeyEntry]) -> Option<String> {
    use std::collections::BTreeMap;
    let by_id = |entries: &[ServerKeyEntry]| -> BTreeMap<String, VerifiedKey> {
        entries
            .iter()
            .map(|e| (e.key.key_id.clone(), e.key.clone()))
            .collect()
    };
    let (old, new) = (by_id(old), by_id(new));
    let ids = |f: &dyn Fn(&String, &VerifiedKey) -> bool, of: &BTreeMap<String, VerifiedKey>| {
        of.iter()
            .filter(|(id, k)| f(id, k))
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let added = ids(&|id, _| !old.contains_key(id), &new);
    let removed = ids(&|id, _| !new.contains_key(id), &old);
    let changed = ids(&|id, k| old.get(id).is_some_and(|o| o != k), &new);
    let parts: Vec<String> = [("added", added), ("removed", removed), ("changed", changed)]
        .into_iter()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(what, ids)| format!("keys {what}: {ids}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::table::{Key, ServerInfo, ServerKey};

    fn key(id: &str, serial: &str, key: Key) -> VerifiedKey {
        VerifiedKey {
            key_id: id.into(),
            issuer: "acme".into(),
            serial: serial.into(),
            key,
        }
    }

    fn file(key: VerifiedKey) -> ServerKeyEntry {
        ServerKeyEntry {
            path: "/etc/vipool/keys/backup.keys".into(),
            line: 1,
            key,
            not_before_ms: 5,
        }
    }

    fn state(serial: &str, entries: &[(&str, VerifiedKey, Actor)]) -> TableState {
        TableState {
            servers: BTreeMap::from([(
                "backup".to_owned(),
                ServerInfo {
                    serial: serial.into(),
                },
            )]),
            server_keys: entries
                .iter()
                .map(|(server, k, by)| {
                    (
                        k.key_id.clone(),
                        ServerKey {
                            server: (*server).into(),
                            key: k.clone(),
                            installed_by: by.clone(),
                        },
                    )
                })
                .collect(),
            issuers: acme(),
            ..TableState::default()
        }
    }

    /// The pair trusts "acme" (the issuer of every key here).
    fn acme() -> BTreeMap<String, String> {
        BTreeMap::from([("acme".to_owned(), "its public key".to_owned())])
    }

    fn backup() -> Actor {
        Actor::Server("backup".into())
    }

    fn install(k: &VerifiedKey) -> Command {
        Command::InstallServerKey {
            now_ms: 10,
            server: "backup".into(),
            key: k.clone(),
            by: backup(),
        }
    }

    /// Before the pair records the issuers (a brand-new pair) or while it
    /// does not trust this key's, the key waits: proposed, the table would
    /// refuse it. Once recorded, it is installed.
    #[test]
    fn a_key_waits_until_the_pair_trusts_its_issuer() {
        let ap = key("b-ap", "CV2", Key::permanent("AP", 16));
        let files = [file(ap.clone())];
        let mut present = state("CV2", &[]);
        present.issuers.clear();
        assert_eq!(key_changes(&present, "backup", "CV2", &files, 10), vec![]);
        assert_eq!(waiting_for_issuer(&present, &files, 10).len(), 1);
        present.issuers.insert("globex".into(), "another key".into());
        assert_eq!(key_changes(&present, "backup", "CV2", &files, 10), vec![]);
        present.issuers = acme();
        assert_eq!(
            key_changes(&present, "backup", "CV2", &files, 10),
            vec![install(&ap)]
        );
        assert!(waiting_for_issuer(&present, &files, 10).is_empty());
    }

    #[test]
    fn file_changes_name_the_keys_added_removed_and_changed() {
        let ap = key("b-ap", "CV2", Key::permanent("AP", 16));
        let xsec = key("b-xsec", "CV2", Key::permanent("XSEC", 4));
        let pefng = key("b-pefng", "CV2", Key::permanent("PEFNG", 8));
        let more_xsec = key("b-xsec", "CV2", Key::permanent("XSEC", 8));
        let old = [file(ap.clone()), file(xsec)];
        assert_eq!(file_changes(&old, &old), None);
        assert_eq!(
            file_changes(&old, &[file(ap), file(more_xsec), file(pefng)]).as_deref(),
            Some("keys added: b-pefng; keys changed: b-xsec")
        );
        assert_eq!(
            file_changes(&old, &[]).as_deref(),
            Some("keys removed: b-ap, b-xsec")
        );
    }

    #[test]
    fn announces_the_serial_then_installs_what_is_missing_and_nothing_when_equal() {
        let ap = key("b-ap", "CV2", Key::permanent("AP", 16));
        let files = [file(ap.clone())];
        let fresh = TableState {
            issuers: acme(),
            ..TableState::default()
        };
        assert_eq!(
            key_changes(&fresh, "backup", "CV2", &files, 10),
            vec![
                Command::ServerSerial {
                    server: "backup".into(),
                    serial: "CV2".into()
                },
                install(&ap)
            ]
        );
        let present = state("CV2", &[("backup", ap, backup())]);
        assert_eq!(key_changes(&present, "backup", "CV2", &files, 10), vec![]);
    }

    #[test]
    fn removes_its_own_keys_gone_from_the_files_and_leaves_the_rest() {
        let ap = key("b-ap", "CV2", Key::permanent("AP", 16));
        let xsec = key("b-xsec", "CV2", Key::permanent("XSEC", 4));
        let by_operator = key("op-1", "CV2", Key::permanent("PEFNG", 2));
        let primary = key("p-ap", "CV1", Key::permanent("AP", 16));
        let present = state(
            "CV2",
            &[
                ("backup", ap.clone(), backup()),
                ("backup", xsec, backup()),
                ("backup", by_operator, Actor::Operator("alice".into())),
                ("primary", primary, Actor::Server("primary".into())),
            ],
        );
        assert_eq!(
            key_changes(&present, "backup", "CV2", &[file(ap)], 10),
            vec![Command::RemoveServerKey {
                key_id: "b-xsec".into(),
                by: backup()
            }]
        );
    }

    #[test]
    fn installs_keys_once_valid_and_removes_them_once_expired() {
        let eval = key(
            "b-eval",
            "CV2",
            Key {
                license_type: "PEFNG".into(),
                count: 8,
                expires_at_ms: Some(100),
            },
        );
        let files = [file(eval.clone())];
        let none = state("CV2", &[]);
        assert_eq!(key_changes(&none, "backup", "CV2", &files, 4), vec![]);
        assert_eq!(
            key_changes(&none, "backup", "CV2", &files, 10),
            vec![install(&eval)]
        );
        let present = state("CV2", &[("backup", eval, backup())]);
        assert_eq!(
            key_changes(&present, "backup", "CV2", &files, 100),
            vec![Command::RemoveServerKey {
                key_id: "b-eval".into(),
                by: backup()
            }]
        );
    }

    #[test]
    fn a_new_serial_is_announced_and_the_old_keys_are_not_counted_as_present() {
        let old = key("b-ap", "CV2", Key::permanent("AP", 16));
        let new = key("b-ap-2", "CV3", Key::permanent("AP", 16));
        let present = state("CV2", &[("backup", old, backup())]);
        assert_eq!(
            key_changes(&present, "backup", "CV3", &[file(new.clone())], 10),
            vec![
                Command::ServerSerial {
                    server: "backup".into(),
                    serial: "CV3".into()
                },
                install(&new)
            ]
        );
    }
}

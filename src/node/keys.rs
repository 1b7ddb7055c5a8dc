//! A server's own license keys (`license.keys`) in the replicated table.
//!
//! Both servers' keys count in the pool (SPEC §2: 16 + 16 = 32), whichever
//! node holds the VIP. Each server owns the entries it installed (named
//! `NAME-TYPE`, with `server = NAME`) and keeps them equal to its
//! configuration: missing keys are installed, keys whose count or expiry
//! changed are replaced, keys no longer configured are removed. The VIP
//! holder proposes the changes; the other server submits them to the leader
//! (raft forwards them) and checks its applied table again later: every
//! change is idempotent in effect (a duplicate install is refused by the
//! table with `KeyExists`, a duplicate removal as an unknown key, and
//! neither changes anything).

use std::collections::BTreeMap;

use crate::table::{Command, ServerKey};

/// The commands that bring `server`'s entries in `present` to `wanted` (the
/// configuration's install commands), in the order to apply them: removals
/// of entries that are gone or changed first, then installs. Configured
/// keys already expired at `now_ms` are left out: the table refuses them.
pub(super) fn key_changes(
    present: &BTreeMap<String, ServerKey>,
    server: &str,
    wanted: &[Command],
    now_ms: u64,
) -> Vec<Command> {
    let installs: Vec<&Command> = wanted
        .iter()
        .filter(|c| matches!(c, Command::InstallServerKey { key, .. } if !key.is_expired(now_ms)))
        .collect();
    let same = |id: &str, entry: &ServerKey| {
        installs.iter().any(|c| {
            matches!(c, Command::InstallServerKey { key_id, server, key, .. }
                if key_id == id && *server == entry.server && *key == entry.key)
        })
    };
    let mut changes: Vec<Command> = present
        .iter()
        .filter(|(id, entry)| entry.server == server && !same(id, entry))
        .map(|(id, _)| Command::RemoveServerKey { key_id: id.clone() })
        .collect();
    for c in &installs {
        let Command::InstallServerKey { key_id, .. } = c else {
            continue;
        };
        let installed = present.get(key_id).is_some_and(|entry| same(key_id, entry));
        // An entry of that id owned by another server is not ours to
        // replace: the install is refused and the refusal logged.
        if !installed {
            changes.push((*c).clone());
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Key;

    fn install(server: &str, key: Key) -> Command {
        Command::InstallServerKey {
            now_ms: 1,
            key_id: format!("{server}-{}", key.license_type),
            server: server.into(),
            key,
        }
    }

    fn entry(server: &str, key: Key) -> (String, ServerKey) {
        (
            format!("{server}-{}", key.license_type),
            ServerKey {
                server: server.into(),
                key,
            },
        )
    }

    #[test]
    fn installs_what_is_missing_and_nothing_when_equal() {
        let wanted = vec![install("backup", Key::permanent("AP", 16))];
        let none = BTreeMap::new();
        assert_eq!(key_changes(&none, "backup", &wanted, 10), wanted);
        let present = BTreeMap::from([entry("backup", Key::permanent("AP", 16))]);
        assert_eq!(key_changes(&present, "backup", &wanted, 10), vec![]);
    }

    #[test]
    fn replaces_a_changed_key_and_removes_an_unconfigured_one() {
        let wanted = vec![install("backup", Key::permanent("AP", 32))];
        let present = BTreeMap::from([
            entry("backup", Key::permanent("AP", 16)),
            entry("backup", Key::permanent("XSEC", 4)),
            entry("primary", Key::permanent("AP", 16)),
        ]);
        assert_eq!(
            key_changes(&present, "backup", &wanted, 10),
            vec![
                Command::RemoveServerKey {
                    key_id: "backup-AP".into()
                },
                Command::RemoveServerKey {
                    key_id: "backup-XSEC".into()
                },
                wanted[0].clone(),
            ]
        );
    }

    #[test]
    fn leaves_the_other_servers_keys_and_expired_ones_alone() {
        let expired = Key {
            license_type: "PEFNG".into(),
            count: 8,
            expires_at_ms: Some(5),
        };
        let wanted = vec![install("backup", expired)];
        let present = BTreeMap::from([entry("primary", Key::permanent("PEFNG", 8))]);
        assert_eq!(key_changes(&present, "backup", &wanted, 10), vec![]);
    }
}

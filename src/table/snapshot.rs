//! Snapshot encoding: a versioned envelope around bincode.
//!
//! Layout: the 4-byte magic `VPLT`, a little-endian `u16` format version,
//! then `(applied_index, TableConfig, TableState)` in bincode's standard
//! configuration (format 2: `(applied_index, TableState)`; formats 2 and 3
//! hold no certificate floors).
//! bincode because a table of 10,000 clients is snapshotted and shipped to a
//! joining node: it is several times smaller and faster than JSON. The
//! envelope makes a format change an explicit, refusable event instead of a
//! garbled table. The settings are in the snapshot (format 3): they are
//! replicated state, so a member restored from a snapshot applies what
//! follows exactly as the one that took it.
//!
//! Format 2 (before the settings were replicated) still reads, with the
//! SPEC's default settings: the same on every member, so members that
//! restore it stay equal, until the VIP holder's first `Settings` entry.

/// Why a snapshot could not be restored; the table is left unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with a table snapshot's magic.
    #[error("not a license table snapshot")]
    NotASnapshot,
    /// A format this build does not read (a newer release wrote it).
    #[error("snapshot format {found}, this build reads {OLDEST_READ} to {SNAPSHOT_VERSION}")]
    Format {
        /// The format the snapshot says it is.
        found: u16,
    },
    /// The body does not decode.
    #[error("corrupt snapshot: {0}")]
    Corrupt(#[source] bincode::error::DecodeError),
    /// Bytes follow the decoded table.
    #[error("trailing bytes after snapshot")]
    Trailing,
    /// The settings it carries are not ones a table runs with.
    #[error("snapshot settings refused: {0}")]
    Settings(#[source] super::SettingsError),
}

use super::{TableConfig, TableState};

/// The snapshot format this build writes. 5: the pair's TLS
/// session-ticket keys (`ticket_keys`). 4: the table remembers the
/// newest certificate each client id registered with (`cert_floors`), and
/// the issuers the pair trusts (`issuers`).
/// 3: the settings are in it. 2: keys are verified signed keys (key id,
/// issuer, serial), server keys say who installed them, and the table
/// records each server's serial.
pub const SNAPSHOT_VERSION: u16 = 5;

/// The table's state as formats 2 and 3 hold it: no certificate floors.
#[derive(serde::Deserialize)]
struct StateV3 {
    clients: std::collections::BTreeMap<String, super::Client>,
    server_keys: std::collections::BTreeMap<String, super::ServerKey>,
    servers: std::collections::BTreeMap<String, super::ServerInfo>,
}

impl From<StateV3> for TableState {
    fn from(v: StateV3) -> TableState {
        TableState {
            clients: v.clients,
            server_keys: v.server_keys,
            servers: v.servers,
            cert_floors: Default::default(),
            issuers: Default::default(),
            ticket_keys: Vec::new(),
        }
    }
}

/// The table's state as format 4 holds it: no ticket keys (the serving
/// member proposes one once it runs this build).
#[derive(serde::Deserialize)]
struct StateV4 {
    clients: std::collections::BTreeMap<String, super::Client>,
    server_keys: std::collections::BTreeMap<String, super::ServerKey>,
    servers: std::collections::BTreeMap<String, super::ServerInfo>,
    cert_floors: std::collections::BTreeMap<String, u64>,
    issuers: std::collections::BTreeMap<String, String>,
}

impl From<StateV4> for TableState {
    fn from(v: StateV4) -> TableState {
        TableState {
            clients: v.clients,
            server_keys: v.server_keys,
            servers: v.servers,
            cert_floors: v.cert_floors,
            issuers: v.issuers,
            ticket_keys: Vec::new(),
        }
    }
}

/// The oldest format this build reads.
const OLDEST_READ: u16 = 2;

const MAGIC: &[u8; 4] = b"VPLT";
const HEADER: usize = MAGIC.len() + 2;
// Guards allocations made from lengths inside a corrupt snapshot.
const LIMIT: usize = 1 << 30;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

pub(super) fn encode(applied_index: u64, config: &TableConfig, state: &TableState) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 64 * state.clients.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    // Writing plain data into a Vec cannot fail: no I/O, and the table's
    // types serialize without custom impls.
    let body = bincode::serde::encode_to_vec((applied_index, config, state), bincode_config())
        .expect("encoding a table snapshot into memory cannot fail");
    out.extend_from_slice(&body);
    out
}

pub(super) fn decode(bytes: &[u8]) -> Result<(u64, TableConfig, TableState), SnapshotError> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let corrupt = SnapshotError::Corrupt;
    let (decoded, read) = match version {
        SNAPSHOT_VERSION => {
            bincode::serde::decode_from_slice(&bytes[HEADER..], bincode_config()).map_err(corrupt)?
        }
        4 => {
            let ((index, config, state), read): ((u64, TableConfig, StateV4), usize) =
                bincode::serde::decode_from_slice(&bytes[HEADER..], bincode_config()).map_err(corrupt)?;
            ((index, config, state.into()), read)
        }
        3 => {
            let ((index, config, state), read): ((u64, TableConfig, StateV3), usize) =
                bincode::serde::decode_from_slice(&bytes[HEADER..], bincode_config()).map_err(corrupt)?;
            ((index, config, state.into()), read)
        }
        OLDEST_READ => {
            let ((index, state), read): ((u64, StateV3), usize) =
                bincode::serde::decode_from_slice(&bytes[HEADER..], bincode_config()).map_err(corrupt)?;
            ((index, TableConfig::default(), state.into()), read)
        }
        _ => return Err(SnapshotError::Format { found: version }),
    };
    if read != bytes.len() - HEADER {
        return Err(SnapshotError::Trailing);
    }
    let (_, config, _): &(u64, TableConfig, TableState) = &decoded;
    config.check().map_err(SnapshotError::Settings)?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_wrong_magic_version_and_garbage() {
        let good = encode(7, &TableConfig::default(), &TableState::default());
        assert_eq!(decode(&good).unwrap().0, 7);
        assert!(decode(b"").is_err());
        assert!(decode(b"XXXX\x01\x00").is_err());
        let mut newer = good.clone();
        newer[4] = 6;
        assert!(decode(&newer).unwrap_err().to_string().contains("format 6"));
        let mut older = good.clone();
        older[4] = 1;
        assert!(decode(&older)
            .unwrap_err()
            .to_string()
            .contains("format 1, this build reads 2 to 5"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let mut huge = good[..HEADER].to_vec();
        huge.extend_from_slice(&[0xff; 32]);
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn settings_round_trip_and_bad_ones_are_refused() {
        let mut settings = TableConfig::default();
        settings.types.insert(
            crate::table::LicenseType::new("XSEC"),
            crate::table::TypeKind::SwitchSpecific,
        );
        let (_, back, _) = decode(&encode(3, &settings, &TableState::default())).unwrap();
        assert_eq!(back, settings);
        settings.heartbeat_interval_ms = 0;
        let e = decode(&encode(3, &settings, &TableState::default())).unwrap_err();
        assert!(e.to_string().contains("heartbeat_interval_ms"), "{e:?}");
    }

    /// A format-2 snapshot (written before the settings were replicated)
    /// restores with the SPEC's settings, the same on every member.
    #[test]
    fn format_2_reads_with_default_settings() {
        let mut state = TableState::default();
        state.servers.insert(
            "primary".into(),
            crate::table::ServerInfo { serial: "CV1".into() },
        );
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&2u16.to_le_bytes());
        // Format 2's state: clients, server keys, servers (no floors).
        let v2_state = (&state.clients, &state.server_keys, &state.servers);
        v2.extend(bincode::serde::encode_to_vec((9u64, v2_state), bincode_config()).unwrap());
        let (index, settings, back) = decode(&v2).unwrap();
        assert_eq!((index, settings, back), (9, TableConfig::default(), state));
    }

    /// A format-4 snapshot (before ticket keys) keeps everything it holds
    /// and has no ticket key; format 5 carries them.
    #[test]
    fn format_4_reads_without_ticket_keys_and_5_carries_them() {
        let mut state = TableState::default();
        state.cert_floors.insert("sw1".into(), 1_700_000_000);
        state.issuers.insert("acme".into(), "k".into());
        let mut v4 = MAGIC.to_vec();
        v4.extend_from_slice(&4u16.to_le_bytes());
        let v4_state = (
            &state.clients,
            &state.server_keys,
            &state.servers,
            &state.cert_floors,
            &state.issuers,
        );
        let config = TableConfig::default();
        v4.extend(bincode::serde::encode_to_vec((5u64, &config, v4_state), bincode_config()).unwrap());
        let (index, _, back) = decode(&v4).unwrap();
        assert_eq!((index, &back), (5, &state));

        state.ticket_keys.push(crate::table::TicketKey {
            id: 3,
            created_ms: 10,
            secret: [9; 32],
        });
        let (_, _, back) = decode(&encode(6, &config, &state)).unwrap();
        assert_eq!(back, state);
    }
}

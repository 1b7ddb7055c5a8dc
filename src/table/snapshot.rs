//! Snapshot encoding: a versioned envelope around bincode.
//!
//! Layout: the 4-byte magic `VPLT`, a little-endian `u16` format version,
//! then `(applied_index, TableState)` in bincode's standard configuration.
//! bincode because a table of 10,000 clients is snapshotted and shipped to a
//! joining node: it is several times smaller and faster than JSON. The
//! envelope makes a format change an explicit, refusable event instead of a
//! garbled table. The configuration is not in the snapshot: it is each
//! node's own, and both nodes of a pair must use the same.

use cluster::SnapshotError;

use super::TableState;

/// The snapshot format this build writes and reads. 2: keys are verified
/// signed keys (key id, issuer, serial), server keys say who installed
/// them, and the table records each server's serial.
pub const SNAPSHOT_VERSION: u16 = 2;

const MAGIC: &[u8; 4] = b"VPLT";
const HEADER: usize = MAGIC.len() + 2;
// Guards allocations made from lengths inside a corrupt snapshot.
const LIMIT: usize = 1 << 30;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

pub(super) fn encode(applied_index: u64, state: &TableState) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 64 * state.clients.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    // Writing plain data into a Vec cannot fail: no I/O, and the table's
    // types serialize without custom impls.
    let body = bincode::serde::encode_to_vec((applied_index, state), bincode_config())
        .expect("encoding a table snapshot into memory cannot fail");
    out.extend_from_slice(&body);
    out
}

pub(super) fn decode(bytes: &[u8]) -> Result<(u64, TableState), SnapshotError> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError("not a license table snapshot".into()));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError(format!(
            "snapshot format {version}, this build reads {SNAPSHOT_VERSION}"
        )));
    }
    let (decoded, read): ((u64, TableState), usize) =
        bincode::serde::decode_from_slice(&bytes[HEADER..], bincode_config())
            .map_err(|e| SnapshotError(format!("corrupt snapshot: {e}")))?;
    if read != bytes.len() - HEADER {
        return Err(SnapshotError("trailing bytes after snapshot".into()));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_wrong_magic_version_and_garbage() {
        let good = encode(7, &TableState::default());
        assert_eq!(decode(&good).unwrap().0, 7);
        assert!(decode(b"").is_err());
        assert!(decode(b"XXXX\x01\x00").is_err());
        let mut newer = good.clone();
        newer[4] = 3;
        assert!(decode(&newer).unwrap_err().0.contains("format 3"));
        let mut older = good.clone();
        older[4] = 1;
        assert!(decode(&older)
            .unwrap_err()
            .0
            .contains("format 1, this build reads 2"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let mut huge = good[..HEADER].to_vec();
        huge.extend_from_slice(&[0xff; 32]);
        assert!(decode(&huge).is_err());
    }
}

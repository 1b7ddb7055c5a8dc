//! Damage sweeps: a small real store (entries, hard state, conf state and
//! index, a snapshot) with one byte flipped at a time, opened each time. The
//! only acceptable outcomes are a [`StoreError`] that says the file is
//! damaged, or a load identical to the undamaged store: never a panic, never
//! different data.
//!
//! Two images are swept: the file as a clean stop leaves it, and as a crash
//! (SIGKILL) right after a flush leaves it (redb then runs its repair at the
//! next open, which is where it can fall back to an older commit).
//!
//! `cargo test` sweeps the first 512 bytes (redb's header and its two
//! commit slots) and every 61st byte after them. The full sweep, every byte with
//! `^ 0xff` and `^ 0x01` on both images, is `#[ignore]`d; run it with
//!
//! ```text
//! cargo test -p cluster --release --lib storage::sweep -- --ignored --nocapture
//! ```

use std::path::Path;
use std::sync::Once;
use std::time::Instant;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::{Disk, LogStore, StoreError};

/// What a load must reproduce.
type View = (Vec<Entry>, HardState, ConfState, u64, Snapshot, Option<String>);

fn view(s: &LogStore) -> View {
    let (cs, ci) = s.conf();
    (
        s.all_entries().to_vec(),
        s.hard_state().clone(),
        cs.clone(),
        ci,
        s.snapshot_ref().clone(),
        s.rebuilding().map(str::to_string),
    )
}

/// The two images of one small store, and what loading it gives.
struct Images {
    clean: Vec<u8>,
    crashed: Vec<u8>,
    expected: View,
}

fn build(dir: &Path) -> Images {
    let path = dir.join("sweep.redb");
    let mut s = LogStore::open(Disk::create(&path).unwrap()).unwrap();
    let entries: Vec<Entry> = (1..=8)
        .map(|i| Entry {
            index: i,
            term: 1 + i / 4,
            data: format!("command {i}: client sw{i} takes {i} AP")
                .into_bytes()
                .into(),
            ..Default::default()
        })
        .collect();
    s.append(&entries).unwrap();
    let cs = ConfState {
        voters: vec![1, 2],
        learners: vec![3],
        ..Default::default()
    };
    s.set_conf(cs.clone(), 2);
    s.set_hard_state(HardState {
        term: 3,
        vote: 1,
        commit: 6,
        ..Default::default()
    });
    s.flush().unwrap();
    s.compact(3, cs, b"table state at 3: AP total 64, used 20".repeat(8))
        .unwrap();
    s.append(&[Entry {
        index: 9,
        term: 3,
        data: b"command 9".to_vec().into(),
        ..Default::default()
    }])
    .unwrap();
    s.set_commit(8);
    s.flush().unwrap();
    // What a crash right after this flush leaves: the file as it is now,
    // with the store still open.
    let crashed = std::fs::read(&path).unwrap();
    let expected = view(&s);
    drop(s);
    let clean = std::fs::read(&path).unwrap();
    let check = dir.join("check.redb");
    for (name, image) in [("clean", &clean), ("crashed", &crashed)] {
        std::fs::write(&check, image).unwrap();
        let s = Disk::open(&check).and_then(LogStore::open).unwrap();
        assert_eq!(expected, view(&s), "the {name} image loads the last flush");
    }
    Images {
        clean,
        crashed,
        expected,
    }
}

/// redb's panics are caught (see `disk::guarded`), but the default hook
/// would still print each one; keep the sweep's own threads quiet and
/// leave every other thread's panics as they were.
fn quiet_sweep_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let sweeping = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("store-sweep"));
            if !sweeping {
                previous(info);
            }
        }));
    });
}

#[derive(Debug, Default)]
struct Tally {
    opened: u64,
    refused: u64,
    /// Refusals that were panics inside redb, caught.
    panics: u64,
    /// Offsets where the load differed from the original: must stay empty.
    different: Vec<usize>,
    /// Errors that do not say "damaged": must stay empty.
    unclear: Vec<(usize, String)>,
}

fn sweep(name: &str, image: &[u8], expected: &View, offsets: &[usize], xor: u8, scratch: &Path) -> Tally {
    let mut tally = Tally::default();
    for &off in offsets {
        let mut bytes = image.to_vec();
        bytes[off] ^= xor;
        std::fs::write(scratch, &bytes).unwrap();
        match Disk::open(scratch).and_then(LogStore::open) {
            Ok(s) => {
                if view(&s) == *expected {
                    tally.opened += 1;
                } else {
                    tally.different.push(off);
                }
            }
            Err(e) => {
                tally.refused += 1;
                if matches!(e, StoreError::Panicked(_)) {
                    tally.panics += 1;
                }
                if !e.is_damage() {
                    tally.unclear.push((off, e.to_string()));
                }
            }
        }
    }
    println!(
        "sweep {name} ^{xor:#04x}: {} offsets, {} loaded identical, {} refused ({} of them redb panics, caught)",
        offsets.len(),
        tally.opened,
        tally.refused,
        tally.panics
    );
    tally
}

fn run(stride: Option<usize>, xors: &[u8]) {
    quiet_sweep_panics();
    let dir = tempfile::tempdir().unwrap();
    let images = build(dir.path());
    let scratch = dir.path().join("damaged.redb");
    let started = Instant::now();
    let mut failures = Vec::new();
    for (name, image) in [("clean", &images.clean), ("crashed", &images.crashed)] {
        let offsets: Vec<usize> = match stride {
            None => (0..image.len()).collect(),
            Some(s) => (0..image.len()).filter(|&o| o < 512 || o % s == 0).collect(),
        };
        for &xor in xors {
            let tally = std::thread::Builder::new()
                .name("store-sweep".into())
                .spawn({
                    let (image, expected, offsets, scratch) = (
                        image.clone(),
                        images.expected.clone(),
                        offsets.clone(),
                        scratch.clone(),
                    );
                    move || sweep(name, &image, &expected, &offsets, xor, &scratch)
                })
                .unwrap()
                .join()
                .expect("a panic escaped the store");
            if !tally.different.is_empty() || !tally.unclear.is_empty() {
                failures.push(format!(
                    "{name} ^{xor:#04x} ({} bytes): different data loaded at offsets {:?}; unclear errors {:?}",
                    image.len(),
                    tally.different,
                    tally.unclear
                ));
            }
        }
    }
    println!(
        "sweep of a {} / {} byte store took {:?}",
        images.clean.len(),
        images.crashed.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn damage_anywhere_in_the_header_or_on_a_stride_is_refused_or_harmless() {
    run(Some(61), &[0xff]);
}

#[test]
#[ignore = "every byte, twice, of two images: minutes; see the module docs for the command"]
fn damage_at_every_byte_is_refused_or_harmless() {
    run(None, &[0xff, 0x01]);
}

/// The property the second commit of every batch buys, shown on the two
/// ways redb falls back to its previous commit in a crash image: the
/// newest commit slot's own checksum fails (redb swaps slots while reading
/// the header, silently), or a page of the newest commit's tree fails its
/// checksum (its repair falls back, which we log). Either way the commit
/// it lands on holds the same log.
#[test]
fn a_fallback_to_the_previous_commit_loads_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let images = build(dir.path());
    let path = dir.path().join("fallback.redb");
    let open = |image: &[u8]| {
        std::fs::write(&path, image).unwrap();
        let cap = crate::logger::tests::Captured::default();
        let loaded = cap.during(|| Disk::open(&path).and_then(LogStore::open));
        (loaded, cap.text().contains("fell back to the one before"))
    };

    // redb's super-header: the god byte at 9 names the primary slot (bit 0);
    // slots of 128 bytes at 64 and 192; the user root checksum at 16 in a slot.
    let mut image = images.crashed.clone();
    let primary = usize::from(image[9] & 1);
    image[64 + 128 * primary + 16] ^= 0xff;
    let (loaded, _) = open(&image);
    assert_eq!(
        view(&loaded.expect("the other slot holds the same log")),
        images.expected
    );

    // A byte of each page after the super-header: some belong to the newest
    // commit only, and make the repair fall back.
    let mut fell_back = 0;
    for page in 1..images.crashed.len() / 4096 {
        let mut image = images.crashed.clone();
        image[page * 4096 + 64] ^= 0xff;
        let (loaded, logged) = open(&image);
        if let Ok(s) = loaded {
            assert_eq!(view(&s), images.expected, "page {page}");
            fell_back += usize::from(logged);
        }
    }
    assert!(fell_back > 0, "no page of the newest commit made redb fall back");
}

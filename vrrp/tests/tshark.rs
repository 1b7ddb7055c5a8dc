//! Wireshark must agree with our codec.
//!
//! Advertisements emitted by `vrrp::wire` are wrapped in IPv4 headers,
//! written to a classic pcap file (LINKTYPE_RAW) and dissected by `tshark`.
//! Every packet must come out as VRRP with the version, router id, priority
//! and addresses we wrote and a Good checksum; one deliberately corrupted
//! packet must come out Bad, which proves the check is not vacuous.
//!
//! The v3 checksum is checked over the RFC 5798 pseudo-header:
//! `vrrp.v3_checksum_as_in_v2:FALSE` (also Wireshark's default, spelled out
//! so a changed default cannot hide a wrong checksum).
//!
//! Skipped with a message when `tshark` is missing, unless `CI=true`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use vrrp::wire::{self, Auth, Checksum, Repr, Version, MULTICAST_GROUP, TTL};

/// LINKTYPE_RAW: each record is a bare IPv4 (or IPv6) datagram.
const LINKTYPE_RAW: u32 = 101;
const V3_PREF: &str = "vrrp.v3_checksum_as_in_v2:FALSE";

struct Case {
    name: &'static str,
    src: Ipv4Addr,
    repr: Repr,
    /// Flip checksum bits after emitting; tshark must say Bad.
    corrupt: bool,
}

impl Case {
    fn new(name: &'static str, src_last: u8, repr: Repr) -> Case {
        Case {
            name,
            src: Ipv4Addr::new(192, 0, 2, src_last),
            repr,
            corrupt: false,
        }
    }

    fn checksum(&self) -> Checksum {
        match self.repr.version {
            Version::V3 => Checksum::PseudoHeader {
                src: self.src,
                dst: MULTICAST_GROUP,
            },
            _ => Checksum::MessageOnly,
        }
    }

    fn datagram(&self) -> Vec<u8> {
        let mut bytes = self.repr.to_bytes(self.checksum());
        if self.corrupt {
            bytes[6] ^= 0x01;
            bytes[7] ^= 0x10;
        }
        wire::ipv4::build(self.src, MULTICAST_GROUP, TTL, &bytes)
    }
}

fn vip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}

fn cases() -> Vec<Case> {
    let v2_pass = Repr {
        auth: Auth::simple_text(b"s3cret").unwrap(),
        ..Repr::advertisement(Version::V2, 12, 100, 100, vec![vip(120), vip(121)])
    };
    let mut corrupt = Case::new(
        "v3 corrupted checksum",
        16,
        Repr::advertisement(Version::V3, 16, 100, 100, vec![vip(160)]),
    );
    corrupt.corrupt = true;
    vec![
        Case::new(
            "v2 no auth",
            11,
            Repr::advertisement(Version::V2, 11, 150, 100, vec![vip(110)]),
        ),
        Case::new("v2 simple text", 12, v2_pass),
        Case::new(
            "v3 pseudo-header",
            13,
            Repr::advertisement(Version::V3, 13, 200, 100, vec![vip(130)]),
        ),
        Case::new(
            "v3 three addresses",
            14,
            Repr::advertisement(Version::V3, 14, 254, 25, vec![vip(140), vip(141), vip(142)]),
        ),
        Case::new(
            "v3 priority 0",
            15,
            Repr::advertisement(Version::V3, 15, 0, 100, vec![vip(150)]),
        ),
        Case::new(
            "v2 priority 0",
            17,
            Repr::advertisement(Version::V2, 17, 0, 300, vec![vip(170)]),
        ),
        corrupt,
    ]
}

/// Writes a classic (microsecond, little-endian) pcap file.
fn write_pcap(path: &Path, datagrams: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic
    out.extend_from_slice(&2u16.to_le_bytes()); // version major
    out.extend_from_slice(&4u16.to_le_bytes()); // version minor
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    for (i, datagram) in datagrams.iter().enumerate() {
        let len = u32::try_from(datagram.len()).unwrap();
        out.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes()); // ts_sec
        out.extend_from_slice(&0u32.to_le_bytes()); // ts_usec
        out.extend_from_slice(&len.to_le_bytes()); // incl_len
        out.extend_from_slice(&len.to_le_bytes()); // orig_len
        out.extend_from_slice(datagram);
    }
    std::fs::write(path, out).unwrap();
}

/// A temp dir removed on drop, also when an assertion fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("vrrp-tshark-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Splits `tshark -V` output into one chunk per frame.
fn frames(text: &str) -> Vec<&str> {
    let starts: Vec<usize> = text
        .match_indices("Frame ")
        .filter(|(at, _)| *at == 0 || text.as_bytes()[at - 1] == b'\n')
        .map(|(at, _)| at)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &at)| &text[at..starts.get(i + 1).copied().unwrap_or(text.len())])
        .collect()
}

fn lines(section: &str) -> impl Iterator<Item = &str> {
    section.lines().map(str::trim)
}

#[test]
fn tshark_dissects_our_advertisements() {
    if !tshark_available() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("tshark is required in CI");
        }
        eprintln!("SKIPPED tshark_dissects_our_advertisements: tshark is not installed");
        return;
    }

    let cases = cases();
    let dir = TempDir::new();
    let pcap = dir.0.join("adverts.pcap");
    let datagrams: Vec<Vec<u8>> = cases.iter().map(Case::datagram).collect();
    write_pcap(&pcap, &datagrams);

    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-V", "-o", V3_PREF])
        .output()
        .expect("run tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );

    let frames = frames(&text);
    assert_eq!(frames.len(), cases.len(), "one frame per packet:\n{text}");

    let mut good = 0;
    let mut bad = 0;
    for (case, frame) in cases.iter().zip(&frames) {
        let ctx = format!("case {:?}:\n{frame}", case.name);
        let (ip, vrrp) = frame
            .split_once("\nVirtual Router Redundancy Protocol")
            .unwrap_or_else(|| panic!("not dissected as VRRP, {ctx}"));

        // The IPv4 framing our `ipv4::build` wrote.
        assert!(lines(ip).any(|l| l == "Time to Live: 255"), "{ctx}");
        assert!(lines(ip).any(|l| l == "Protocol: VRRP (112)"), "{ctx}");
        assert!(
            lines(ip).any(|l| l == format!("Source Address: {}", case.src)),
            "{ctx}"
        );
        assert!(lines(ip).any(|l| l == "Destination Address: 224.0.0.18"), "{ctx}");

        let version = u8::from(case.repr.version);
        assert!(
            lines(vrrp).any(|l| l.ends_with(&format!("= VRRP protocol version: {version}"))),
            "{ctx}"
        );
        assert!(
            lines(vrrp).any(|l| l.ends_with("= VRRP packet type: Advertisement (1)")),
            "{ctx}"
        );
        assert!(
            lines(vrrp).any(|l| l == format!("Virtual Rtr ID: {}", case.repr.vrid)),
            "{ctx}"
        );
        let priority = format!("Priority: {}", case.repr.priority);
        assert!(
            lines(vrrp).any(|l| l == priority || l.starts_with(&format!("{priority} ("))),
            "{ctx}"
        );
        assert!(
            lines(vrrp).any(|l| l == format!("Addr Count: {}", case.repr.addresses.len())),
            "{ctx}"
        );
        let addresses: Vec<&str> = lines(vrrp)
            .filter_map(|l| l.strip_prefix("IP Address: "))
            .collect();
        let expected: Vec<String> = case.repr.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addresses, expected, "{ctx}");

        if case.repr.version == Version::V2 {
            let (auth_type, auth_string) = match case.repr.auth {
                Auth::None => ("(0)", None),
                Auth::SimpleText(_) => ("(1)", Some("Authentication String: s3cret")),
            };
            assert!(
                lines(vrrp).any(|l| l.starts_with("Auth Type: ") && l.ends_with(auth_type)),
                "{ctx}"
            );
            if let Some(auth_string) = auth_string {
                assert!(lines(vrrp).any(|l| l == auth_string), "{ctx}");
            }
            let secs = case.repr.interval_cs / 100;
            assert!(lines(vrrp).any(|l| l == format!("Adver Int: {secs}")), "{ctx}");
        } else {
            let cs = case.repr.interval_cs;
            assert!(
                lines(vrrp).any(|l| l.ends_with(&format!("= Adver Int: {cs}"))),
                "{ctx}"
            );
        }

        let frame_good = lines(vrrp).filter(|l| *l == "[Checksum Status: Good]").count();
        let frame_bad = lines(vrrp).filter(|l| *l == "[Checksum Status: Bad]").count();
        if case.corrupt {
            assert_eq!((frame_good, frame_bad), (0, 1), "{ctx}");
        } else {
            assert_eq!((frame_good, frame_bad), (1, 0), "{ctx}");
        }
        good += frame_good;
        bad += frame_bad;
    }

    let corrupted = cases.iter().filter(|c| c.corrupt).count();
    assert_eq!(good, cases.len() - corrupted, "Good checksums:\n{text}");
    assert_eq!(bad, corrupted, "Bad checksums:\n{text}");
    // Whole-output counts too, in case a frame boundary was misread.
    assert_eq!(text.matches("[Checksum Status: Good]").count(), good);
    assert_eq!(text.matches("[Checksum Status: Bad]").count(), bad);
}

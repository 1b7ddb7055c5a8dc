//! `vipool license` as a real process: an operator makes an issuer, issues
//! keys and checks them as a server would; every refusal exits non-zero
//! with one message that says what to do.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_vipool");
const SERIAL: &str = "CV0012345";

/// Runs `vipool license ARGS` with `stdin`; a backtrace is asked for, so
/// that the test sees one is never printed.
fn license(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("license")
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vipool license");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = license(args, "");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exit code 1, and returns its
/// standard error: one `Error:` line, after one `refused:` line per key
/// when several were checked.
fn refused(args: &[&str], stdin: &str) -> String {
    let out = license(args, stdin);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    let mut lines = stderr.lines().rev();
    assert!(lines.next().is_some_and(|l| l.starts_with("Error: ")), "{stderr}");
    assert!(lines.all(|l| l.starts_with("refused: ")), "{stderr}");
    stderr
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_issue_verify_and_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let issuers = dir.path().join("issuers");
    let out = ok(&["keygen", "--name", "acme", "--out", path(&issuers)]);
    assert!(out.contains("acme.key"), "{out}");
    let (secret, public) = (issuers.join("acme.key"), issuers.join("acme.pub"));
    assert_eq!((mode(&secret), mode(&public)), (0o600, 0o600));
    let pem = std::fs::read_to_string(&secret).unwrap();
    assert!(pem.contains("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let pub_line = std::fs::read_to_string(&public).unwrap();
    assert!(pub_line.starts_with("vipool-issuer acme "), "{pub_line}");

    // keygen never overwrites.
    let err = refused(&["keygen", "--name", "acme", "--out", path(&issuers)], "");
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), pem);

    // issue prints one key line and nothing else on stdout.
    let issue = |extra: &[&str]| {
        let mut args = vec![
            "issue",
            "--issuer",
            path(&secret),
            "--type",
            "ap",
            "--count",
            "16",
        ];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let out = issue(&["--serial", SERIAL]);
    let key = out.trim_end();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        key.starts_with("vpk1.") && key.bytes().all(|b| b.is_ascii_graphic()),
        "{key}"
    );

    // verify: valid for its serial, exit 0.
    let out = ok(&["verify", key, "--issuer", path(&public), "--serial", SERIAL]);
    assert!(out.starts_with("valid: key "), "{out}");
    assert!(
        out.contains("16 AP for serial CV0012345, issued by acme"),
        "{out}"
    );
    assert!(out.contains("permanent"), "{out}");

    // Presented by another switch: refused, naming both serials.
    let err = refused(
        &["verify", key, "--issuer", path(&public), "--serial", "CV0099999"],
        "",
    );
    assert!(err.contains("bound to serial \"CV0012345\""), "{err}");
    assert!(err.contains("presented by serial \"CV0099999\""), "{err}");

    // Checked against another issuer's public key: refused.
    let others = dir.path().join("others");
    ok(&["keygen", "--name", "globex", "--out", path(&others)]);
    let err = refused(&["verify", key, "--issuer", path(&others.join("globex.pub"))], "");
    assert!(err.contains("issuer \"acme\", which is not trusted"), "{err}");
    // Another key that calls itself acme: its public key does not verify acme's keys.
    ok(&["keygen", "--name", "acme", "--out", path(&others)]);
    let err = refused(&["verify", key, "--issuer", path(&others.join("acme.pub"))], "");
    assert!(err.contains("does not match its signature"), "{err}");

    // One character of the signature changed: refused.
    let mut tampered = key.to_owned().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let err = refused(
        &["verify", &tampered, "--issuer", path(&public), "--serial", SERIAL],
        "",
    );
    assert!(err.contains("does not match its signature"), "{err}");
    let err = refused(&["verify", "not-a-key", "--issuer", path(&public)], "");
    assert!(err.contains("starts with \"vpk1.\""), "{err}");

    // An evaluation key; a key file with both, and the same through stdin.
    let eval = issue(&["--serial", SERIAL, "--days", "30", "--key-id", "eval-1"]);
    let eval = eval.trim_end();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("# primary\n{key}  # 16 AP\n\n{eval}\n")).unwrap();
    let at_file = format!("@{}", keys.display());
    let out = ok(&["verify", &at_file, "--issuer", path(&public), "--serial", SERIAL]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("key eval-1: 16 AP") && out.contains("evaluation key until"),
        "{out}"
    );
    let stdin = license(
        &["verify", "-", "--issuer", path(&public), "--serial", SERIAL],
        &format!("{eval}\n"),
    );
    assert!(
        stdin.status.success(),
        "{}",
        String::from_utf8_lossy(&stdin.stderr)
    );
    let err = refused(
        &["verify", &at_file, "--issuer", path(&public), "--serial", "X"],
        "",
    );
    assert!(err.contains("2 of 2 keys refused"), "{err}");

    // show decodes without checking, and says so.
    let out = ok(&["show", eval]);
    assert!(out.contains("key id:     eval-1"), "{out}");
    assert!(out.contains("(evaluation key)"), "{out}");
    assert!(out.contains("NOT CHECKED"), "{out}");

    // Issue refuses what could never count, and swapped files.
    let err = refused(
        &[
            "issue",
            "--issuer",
            path(&secret),
            "--type",
            "AP",
            "--count",
            "1",
            "--serial",
            SERIAL,
            "--expires",
            "2020-01-01",
        ],
        "",
    );
    assert!(err.contains("expired already"), "{err}");
    let err = refused(
        &[
            "issue",
            "--issuer",
            path(&public),
            "--type",
            "AP",
            "--count",
            "1",
            "--serial",
            SERIAL,
        ],
        "",
    );
    assert!(err.contains("not an issuer's secret key"), "{err}");
    let err = refused(&["verify", key, "--issuer", path(&secret)], "");
    assert!(err.contains("servers trust NAME.pub"), "{err}");
}

#[test]
fn a_secret_key_others_can_read_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["keygen", "--name", "acme", "--out", path(dir.path())]);
    let secret = dir.path().join("acme.key");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = refused(
        &[
            "issue",
            "--issuer",
            path(&secret),
            "--type",
            "AP",
            "--count",
            "1",
            "--serial",
            SERIAL,
        ],
        "",
    );
    assert!(err.contains("chmod 600"), "{err}");
}

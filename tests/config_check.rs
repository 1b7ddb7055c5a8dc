//! `vipool check-config` as a real process: the shipped example
//! configurations pass and print their effective form; a broken file fails
//! naming its fields; the TLS files a configuration names are checked as
//! the peers will check them, and its license keys as the node will count
//! them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vipool::config::{AnyConfig, Role};

const BIN: &str = env!("CARGO_BIN_EXE_vipool");

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(name)
}

/// `check-config` of a file alone: the shipped examples name certificates
/// under /etc/vipool/pki that only their hosts have.
fn check(path: &Path) -> Output {
    check_with(path, &["--syntax-only"])
}

fn check_with(path: &Path, flags: &[&str]) -> Output {
    Command::new(BIN)
        .arg("check-config")
        .args(flags)
        .arg(path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run vipool check-config")
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("config_check-{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn deploy_examples_pass_and_print_the_effective_config() {
    for (file, role, name) in [
        ("primary.toml", Role::Server, "primary"),
        ("backup.toml", Role::Server, "backup"),
        ("witness.toml", Role::Witness, "witness"),
    ] {
        let out = check(&deploy(file));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{file}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("configuration OK"), "{stdout}");
        // What is printed is itself a valid configuration, equal to the file's.
        let printed: AnyConfig = stdout.parse().unwrap_or_else(|e| panic!("{file}: {e}\n{stdout}"));
        let loaded = AnyConfig::load(deploy(file)).unwrap();
        assert_eq!(printed, loaded, "{file}");
        assert_eq!(printed.role(), role, "{file}");
        assert_eq!(printed.node().name, name, "{file}");
        // Defaults are written out.
        assert!(stdout.contains("request_timeout_ms = 5000"), "{stdout}");
        if role == Role::Server {
            assert!(stdout.contains("heartbeat_interval_ms = 30000"), "{stdout}");
            assert!(stdout.contains("accept_mode = true"), "{stdout}");
        } else {
            assert!(
                !stdout.contains("[vrrp]") && !stdout.contains("[license]"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn deploy_examples_form_one_pair() {
    let load = |f: &str| match AnyConfig::load(deploy(f)).unwrap() {
        AnyConfig::Server(c) => c,
        AnyConfig::Witness(_) => panic!("{f} is a witness"),
    };
    let (primary, backup) = (load("primary.toml"), load("backup.toml"));
    let AnyConfig::Witness(witness) = AnyConfig::load(deploy("witness.toml")).unwrap() else {
        panic!("witness.toml is not a witness");
    };
    assert_eq!(primary.cluster.peers, backup.cluster.peers);
    assert_eq!(primary.cluster.peers, witness.cluster.peers);
    assert_eq!(primary.node.cluster_id, backup.node.cluster_id);
    assert_eq!(primary.node.cluster_id, witness.node.cluster_id);
    assert_eq!(primary.table_config(), backup.table_config());
    assert_eq!(primary.vrrp.vrid, backup.vrrp.vrid);
    assert_eq!(primary.vrrp.vips, backup.vrrp.vips);
    assert!(primary.vrrp.priority > backup.vrrp.priority);
    assert_eq!(primary.pair_peer().name, "backup");
    assert_eq!(backup.pair_peer().name, "primary");
    for c in [&primary, &backup] {
        c.vrrp_config().validate().unwrap();
        for addr in [c.vrrp.source.unwrap().to_string(), c.client_vip().to_string()] {
            assert!(addr.starts_with("192.0.2."), "{addr} is not TEST-NET-1");
        }
    }
}

#[test]
fn broken_file_fails_naming_the_fields() {
    let text = std::fs::read_to_string(deploy("primary.toml")).unwrap();
    let broken = text
        .replace("priority = 200", "priority = 0")
        .replace("missed_heartbeats = 3", "missed_heartbeats = 0");
    assert_ne!(broken, text);
    let out = check(&scratch("broken", &broken));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("configuration refused"), "{stderr}");
    assert!(
        stderr.contains("vrrp.priority = 0: must be 1-254 (255 only if a vip is this node's own address)"),
        "{stderr}"
    );
    assert!(stderr.contains("license.missed_heartbeats = 0"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn unparsable_file_fails_showing_the_line() {
    let text = std::fs::read_to_string(deploy("backup.toml")).unwrap();
    let broken = text.replace("vrid = 51", "vrid = 51\nprioirty = 7");
    let out = check(&scratch("typo", &broken));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown field `prioirty`"), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");

    let out = check(Path::new("/nonexistent/vipool/node.toml"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/vipool/node.toml"),
        "{stderr}"
    );
}

/// The primary's example file with `[tls]` pointing into `pki`, and its
/// issuers and key files into `license` (`acme.pub`, `primary.keys`).
fn primary_with_pki(pki: &Path, license: &Path, tag: &str) -> PathBuf {
    let text = std::fs::read_to_string(deploy("primary.toml")).unwrap();
    let text = text[..text.find("[tls]").unwrap()].to_owned()
        + &format!(
            "[tls]\nca = \"{0}/ca.crt\"\ncert = \"{0}/primary.crt\"\nkey = \"{0}/primary.key\"\n",
            pki.display()
        );
    let text = text
        .replace("/etc/vipool/issuers", &license.display().to_string())
        .replace("/etc/vipool/keys", &license.display().to_string());
    scratch(tag, &text)
}

/// An issuer `acme` in `dir` (acme.key, acme.pub) made by `vipool license
/// keygen`, and `primary.keys` holding `lines`.
fn license_files(dir: &Path, lines: &[String]) {
    if !dir.join("acme.key").exists() {
        let out = vipool(&[
            "license",
            "keygen",
            "--name",
            "acme",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(dir.join("primary.keys"), lines.join("\n")).unwrap();
}

/// `vipool license issue` with `args` by acme of `dir`: the key line.
fn issue(dir: &Path, args: &[&str]) -> String {
    let issuer = dir.join("acme.key");
    let out = vipool(
        &[
            &["license", "issue", "--issuer", issuer.to_str().unwrap()][..],
            args,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn vipool(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run vipool")
}

#[test]
fn check_config_loads_the_tls_files_and_checks_them_as_a_peer_would() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    assert!(vipool(&["pki", "init", "--dir", p, "--cluster-id", "1"])
        .status
        .success());
    let out = vipool(&["pki", "member", "--dir", p, "--name", "primary"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let license = dir.path().join("license");
    std::fs::create_dir(&license).unwrap();
    license_files(&license, &[]);
    let ap = issue(
        &license,
        &["--type", "AP", "--count", "16", "--serial", "CV0012345"],
    );
    license_files(&license, &[ap]);
    let config = primary_with_pki(&pki, &license, "tls-ok");
    let out = check_with(&config, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A key others may read is refused, saying how to fix it.
    use std::os::unix::fs::PermissionsExt;
    let key = pki.join("primary.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check_with(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("chmod 600 {}", key.display())), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The backup's certificate in the primary's place: it names another member.
    let out = vipool(&["pki", "member", "--dir", p, "--name", "backup"]);
    assert!(out.status.success());
    std::fs::rename(pki.join("backup.crt"), pki.join("primary.crt")).unwrap();
    std::fs::rename(pki.join("backup.key"), pki.join("primary.key")).unwrap();
    let out = check_with(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not valid as member \"primary\""), "{err}");
    assert!(err.contains("primary.crt"), "names the file: {err}");

    // Missing files are named too.
    std::fs::remove_file(pki.join("ca.crt")).unwrap();
    let out = check_with(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("cannot read {}/ca.crt", pki.display())),
        "{err}"
    );

    // --syntax-only does not look at them.
    assert!(check_with(&config, &["--syntax-only"]).status.success());
}

#[test]
fn check_config_verifies_every_license_key_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    assert!(vipool(&["pki", "init", "--dir", p, "--cluster-id", "1"])
        .status
        .success());
    assert!(vipool(&["pki", "member", "--dir", p, "--name", "primary"])
        .status
        .success());
    let license = dir.path().join("license");
    std::fs::create_dir(&license).unwrap();
    license_files(&license, &[]);
    let config = primary_with_pki(&pki, &license, "keys");
    let key = |args: &[&str]| issue(&license, args);
    let ap = key(&[
        "--type",
        "AP",
        "--count",
        "16",
        "--serial",
        "CV0012345",
        "--key-id",
        "p-ap",
    ]);
    let pefng = key(&[
        "--type",
        "PEFNG",
        "--count",
        "16",
        "--serial",
        "CV0012345",
        "--key-id",
        "p-pefng",
    ]);

    // Keys that verify: OK; one valid only from a later date: a warning.
    let later = key(&[
        "--type",
        "XSEC",
        "--count",
        "16",
        "--serial",
        "CV0012345",
        "--key-id",
        "p-xsec",
        "--not-before",
        "2999-01-01",
    ]);
    license_files(&license, &["# primary".into(), ap.clone(), pefng.clone(), later]);
    let out = check_with(&config, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("# warning: ")
            && stdout.contains("line 4: license key p-xsec counts only from 2999-01-01"),
        "{stdout}"
    );

    // The backup's key in the primary's file: refused, naming file and line.
    let backup = key(&[
        "--type",
        "AP",
        "--count",
        "16",
        "--serial",
        "CV0012346",
        "--key-id",
        "b-ap",
    ]);
    license_files(&license, &[ap.clone(), backup]);
    let out = check_with(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let keys = license.join("primary.keys");
    assert!(
        err.contains(&format!(
            "license.key_files[0]: {}, line 2: license key b-ap is bound to serial \"CV0012346\"",
            keys.display()
        )),
        "{err}"
    );

    // A key of an issuer the server does not trust.
    let other = dir.path().join("other");
    let out = vipool(&[
        "license",
        "keygen",
        "--name",
        "globex",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let out = vipool(&[
        "license",
        "issue",
        "--issuer",
        other.join("globex.key").to_str().unwrap(),
        "--type",
        "AP",
        "--count",
        "9",
        "--serial",
        "CV0012345",
        "--key-id",
        "g-1",
    ]);
    let globex = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    license_files(&license, &[globex]);
    let err = String::from_utf8_lossy(&check_with(&config, &[]).stderr).into_owned();
    assert!(
        err.contains("line 1: license key g-1 is signed by issuer \"globex\", which is not trusted"),
        "{err}"
    );

    // An evaluation key that has expired (`vipool license issue` refuses
    // to make one; the issuer's library does not).
    let acme = vipool::license::IssuerKey::load(&license.join("acme.key")).unwrap();
    let expired = acme
        .sign(vipool::license::KeyStatement {
            key_id: "p-eval".into(),
            license_type: vipool::table::LicenseType::new("AP"),
            count: 8,
            serial: "CV0012345".into(),
            not_before: 1_600_000_000,
            expires: Some(1_700_000_000),
            issuer: "acme".into(),
        })
        .unwrap();
    license_files(&license, &[ap.clone(), expired.to_string()]);
    let err = String::from_utf8_lossy(&check_with(&config, &[]).stderr).into_owned();
    assert!(
        err.contains("line 2: license key p-eval expired at 2023-11-14 22:13:20 UTC: it no longer counts; remove the line"),
        "{err}"
    );

    // A damaged line, and a plain count where a key belongs.
    let mut damaged: Vec<char> = ap.chars().collect();
    let at = damaged.len() - 3;
    damaged[at] = if damaged[at] == 'A' { 'B' } else { 'A' };
    license_files(&license, &[damaged.into_iter().collect()]);
    let err = String::from_utf8_lossy(&check_with(&config, &[]).stderr).into_owned();
    assert!(err.contains("line 1: ") && err.contains("p-ap"), "{err}");
    license_files(&license, &["AP = 16".into()]);
    let err = String::from_utf8_lossy(&check_with(&config, &[]).stderr).into_owned();
    assert!(err.contains("line 1: not a vipool license key"), "{err}");

    // A key file that is not there.
    std::fs::remove_file(&keys).unwrap();
    let err = String::from_utf8_lossy(&check_with(&config, &[]).stderr).into_owned();
    assert!(
        err.contains(&format!("license.key_files[0]: {}", keys.display())),
        "{err}"
    );
    // --syntax-only does not read them.
    assert!(check_with(&config, &["--syntax-only"]).status.success());
}

#[test]
fn check_config_refuses_a_notify_script_that_is_missing_or_unsafe() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    assert!(vipool(&["pki", "init", "--dir", p, "--cluster-id", "1"])
        .status
        .success());
    assert!(vipool(&["pki", "member", "--dir", p, "--name", "primary"])
        .status
        .success());
    let license = dir.path().join("license");
    std::fs::create_dir(&license).unwrap();
    license_files(&license, &[]);
    let base = primary_with_pki(&pki, &license, "notify");
    let script = dir.path().join("notify.sh");
    let config = scratch(
        "notify-on",
        &format!(
            "{}\n[notify]\nserving = \"{}\"\n",
            std::fs::read_to_string(&base).unwrap(),
            script.display()
        ),
    );
    let refused = |why: &str| {
        let out = check_with(&config, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("notify.serving") && err.contains(why), "{err}");
    };
    refused("cannot be read");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&format!("chmod 755 {}", script.display()));
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(&format!("chmod o-w {}", script.display()));
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = check_with(&config, &[]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        shown.contains("[notify]") && shown.contains("timeout_ms = 5000"),
        "{shown}"
    );
}

#[test]
fn check_config_checks_trackers_a_missing_interface_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    assert!(vipool(&["pki", "init", "--dir", p, "--cluster-id", "1"])
        .status
        .success());
    assert!(vipool(&["pki", "member", "--dir", p, "--name", "primary"])
        .status
        .success());
    let license = dir.path().join("license");
    std::fs::create_dir(&license).unwrap();
    license_files(&license, &[]);
    let base = primary_with_pki(&pki, &license, "track");
    let check = dir.path().join("check.sh");
    let config = scratch(
        "track-on",
        &format!(
            "{}\n[[track.interface]]\nname = \"nosuchif0\"\nweight = -50\n\
             [[track.script]]\nname = \"gw\"\ncommand = [\"{}\", \"192.0.2.254\"]\nfall = 3\n",
            std::fs::read_to_string(&base).unwrap(),
            check.display()
        ),
    );
    let out = check_with(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("track.script[0].command") && err.contains("cannot be read"),
        "{err}"
    );
    std::fs::write(&check, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = check_with(&config, &[]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        shown.contains("# warning: track.interface[0].name = \"nosuchif0\": no such interface")
            && shown.contains("[[track.script]]")
            && shown.contains("fall = 3")
            && shown.contains("rise = 1"),
        "{shown}"
    );
    // A bad value is refused by name, with what to do.
    let bad = scratch(
        "track-bad",
        &format!(
            "{}\n[[track.script]]\nname = \"gw\"\ncommand = [\"ping\"]\n",
            std::fs::read_to_string(&base).unwrap()
        ),
    );
    let out = check_with(&bad, &["--syntax-only"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("track.script[0].command = \"ping\"") && err.contains("absolute path"),
        "{err}"
    );
}

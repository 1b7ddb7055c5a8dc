//! `vipool check-config` as a real process: the shipped example
//! configurations pass and print their effective form; a broken file fails
//! naming its fields; the TLS files a configuration names are checked as
//! the peers will check them.

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

/// The primary's example file with `[tls]` pointing into `pki`.
fn primary_with_pki(pki: &Path, tag: &str) -> PathBuf {
    let text = std::fs::read_to_string(deploy("primary.toml")).unwrap();
    let text = text[..text.find("[tls]").unwrap()].to_owned()
        + &format!(
            "[tls]\nca = \"{0}/ca.crt\"\ncert = \"{0}/primary.crt\"\nkey = \"{0}/primary.key\"\n",
            pki.display()
        );
    scratch(tag, &text)
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
    let config = primary_with_pki(&pki, "tls-ok");
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

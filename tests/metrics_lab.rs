//! The metrics endpoint and the status page (`[metrics] listen`) on a lab
//! pair: both nodes scraped from the switches' host before a failover,
//! the primary stopped (SIGTERM), the backup scraped again, then the
//! primary restarted until it takes the VIP back, then killed (SIGKILL);
//! each step's numbers are checked against what the pair did. The status page is loaded in real
//! headless Chromium (Debian's `chromium`) from the same host, before and
//! after the failover: its text must name the VIP holder of the moment.
//!
//! `VIPOOL_STATUS_PAGE_PNG=PATH` keeps the screenshot taken after the
//! failover (README's `docs/status-page.png` is one).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::pair::{PairLab, PairOptions, Which, METRICS_PORT, VIP, WAIT};
use common::{in_netns, lab_available, tool_available, wait_for, Host};

/// One HTTP GET from `from` to `addr:METRICS_PORT`: the status line and the body.
fn get(from: &Host, addr: Ipv4Addr, path: &str) -> Result<(String, String), String> {
    let path = path.to_owned();
    in_netns(from, move || {
        let to = SocketAddr::from((addr, METRICS_PORT));
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| format!("{to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no head in {raw:?}"))?;
        let status = head.lines().next().unwrap_or_default().to_owned();
        Ok((status, body.to_owned()))
    })
    .join()
    .expect("GET thread")
}

/// Samples of one scrape: `name{labels}` as written, and the value.
#[derive(Debug, Clone)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn of(from: &Host, addr: Ipv4Addr) -> Result<Scrape, String> {
        let (status, body) = get(from, addr, "/metrics")?;
        if status != "HTTP/1.1 200 OK" {
            return Err(format!("{addr}: {status}"));
        }
        if !body.ends_with("# EOF\n") {
            return Err(format!("{addr}: not an OpenMetrics exposition:\n{body}"));
        }
        let mut samples = BTreeMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("bad sample {line:?}"))?;
            let value = value.parse().map_err(|_| format!("bad value in {line:?}"))?;
            samples.insert(name.to_owned(), value);
        }
        Ok(Scrape(samples))
    }

    /// A sample's value; panics with the whole scrape if it is missing.
    #[track_caller]
    fn v(&self, name: &str) -> f64 {
        *self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no sample {name} in {:#?}", self.0))
    }
}

/// The page in headless Chromium, run in `from`'s namespace: its DOM as
/// the browser built it, and a screenshot at `png`.
fn chromium(lab_dir: &Path, from: &Host, addr: Ipv4Addr, png: &Path) -> String {
    let url = format!("http://{addr}:{METRICS_PORT}/");
    let profile = lab_dir.join("chromium-profile");
    let run = |what: &str| {
        let out = from
            .command("timeout")
            .args(["90", "chromium", "--headless", "--no-sandbox", "--disable-gpu"])
            .arg("--disable-dev-shm-usage")
            .arg("--hide-scrollbars")
            .arg("--window-size=1280,900")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(what)
            .arg(&url)
            .env("HOME", lab_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium {what} {url} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run("--dump-dom");
    run(&format!("--screenshot={}", png.display()));
    let image = std::fs::read(png).expect("chromium wrote the screenshot");
    assert!(
        image.starts_with(b"\x89PNG\r\n\x1a\n") && image.len() > 10_000,
        "not a screenshot of a page: {} bytes",
        image.len()
    );
    dom
}

#[test]
fn metrics_and_the_status_page_follow_a_failover() {
    let test = "metrics_and_the_status_page_follow_a_failover";
    if !lab_available(test) {
        return;
    }
    let browser = tool_available(test, "chromium", "chromium");
    // A small pool: the page's bars show what the switches use.
    let opts = PairOptions {
        metrics: true,
        server_ap: 16,
        ..PairOptions::default()
    };
    let mut pair = PairLab::start(opts);
    let client = pair.host(2);
    let (a, b) = (pair.primary.addr(), pair.backup.addr());
    pair.wait_settled(&client);
    // The VIP holder makes the pair's first session-ticket key; both
    // servers seal and open with it before any switch connects.
    assert!(
        wait_for(WAIT, || [a, b].iter().all(
            |n| Scrape::of(&client, *n).is_ok_and(|s| s.v("vipool_tls_ticket_keys") == 1.0)
        )),
        "the pair never shared a ticket key: {:?} {:?}",
        Scrape::of(&client, a),
        Scrape::of(&client, b)
    );
    let switches = pair.switches(&client, 3, 2, 1000);

    // Before: the primary serves and leads, the backup follows.
    let settled = |s: &Scrape| s.v("vipool_clients{state=\"up\"}") == 3.0;
    assert!(
        wait_for(WAIT, || Scrape::of(&client, a).is_ok_and(|s| settled(&s))),
        "the primary never counted 3 clients up: {:?}",
        Scrape::of(&client, a)
    );
    let p = Scrape::of(&client, a).unwrap();
    let bk = Scrape::of(&client, b).unwrap();
    let pool = f64::from(2 * pair.opts.server_ap);
    for (s, serving, vrrp, raft) in [(&p, 1.0, "Master", "Leader"), (&bk, 0.0, "Backup", "Follower")] {
        assert_eq!(s.v("vipool_serving"), serving);
        assert_eq!(s.v(&format!("vipool_vrrp_state{{state=\"{vrrp}\"}}")), 1.0);
        assert_eq!(s.v(&format!("vipool_raft_role{{role=\"{raft}\"}}")), 1.0);
        assert_eq!(s.v("vipool_failovers_total"), 0.0);
        assert_eq!(s.v("vipool_failover_duration_seconds_count"), 0.0);
        assert_eq!(s.v("vipool_pool_size_licenses{type=\"AP\"}"), pool);
        // Every node writes its log with fsync.
        assert!(s.v("vipool_raft_fsync_duration_seconds_count") > 0.0);
    }
    assert_eq!(p.v("vipool_vrrp_priority"), 200.0);
    assert_eq!(bk.v("vipool_vrrp_priority"), 100.0);
    assert_eq!(p.v("vipool_raft_term"), bk.v("vipool_raft_term"));
    // Three switches hold 2 APs each, beyond their built-in licenses or not:
    // the pool's used and available add up on both nodes.
    for s in [&p, &bk] {
        let used = s.v("vipool_pool_used_licenses{type=\"AP\"}");
        assert_eq!(s.v("vipool_pool_available_licenses{type=\"AP\"}"), pool - used);
    }
    // Only the leader tracks its follower; the backup keeps up.
    assert!(
        wait_for(WAIT, || Scrape::of(&client, a).is_ok_and(|s| s
            .v("vipool_raft_follower_lag_entries{peer=\"backup\"}")
            == 0.0)),
        "the backup never caught up: {:?}",
        Scrape::of(&client, a)
    );
    assert!(!bk
        .0
        .keys()
        .any(|k| k.starts_with("vipool_raft_follower_lag_entries")));
    // No switch has been to the backup yet.
    assert_eq!(bk.v("vipool_tls_handshakes_total{kind=\"resumed\"}"), 0.0);
    assert!(p.v("vipool_tls_handshakes_total{kind=\"full\"}") >= 3.0);
    let backup_full = bk.v("vipool_tls_handshakes_total{kind=\"full\"}");
    let backup_became_master = bk.v("vipool_vrrp_transitions_total{to=\"master\"}");
    let term_before = p.v("vipool_raft_term");

    let shots = pair.lab.dir();
    if browser {
        let dom = chromium(&shots, &client, b, &shots.join("before.png"));
        assert!(dom.contains("id=\"holder\">primary (192.0.2.1)</p>"), "{dom}");
        assert!(dom.contains("this node does not serve"), "{dom}");
    }

    // The failover: the primary stops; the backup takes over.
    pair.primary.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        pair.primary.process.wait_exit(WAIT),
        Some(0),
        "{}",
        pair.primary.log()
    );
    assert!(
        wait_for(WAIT, || Scrape::of(&client, b)
            .is_ok_and(
                |s| s.v("vipool_serving") == 1.0 && s.v("vipool_clients{state=\"up\"}") == 3.0
            )),
        "the backup never served the 3 switches: {:?}\n{}",
        Scrape::of(&client, b),
        pair.backup.log()
    );
    let after = Scrape::of(&client, b).unwrap();
    assert_eq!(after.v("vipool_vrrp_state{state=\"Master\"}"), 1.0);
    assert_eq!(after.v("vipool_raft_role{role=\"Leader\"}"), 1.0);
    assert_eq!(
        after.v("vipool_vrrp_transitions_total{to=\"master\"}"),
        backup_became_master + 1.0
    );
    assert_eq!(after.v("vipool_failovers_total"), 1.0);
    assert_eq!(after.v("vipool_failover_duration_seconds_count"), 1.0);
    // The switches resumed, on the backup, the TLS sessions the primary
    // gave them: no full handshake.
    assert!(
        after.v("vipool_tls_handshakes_total{kind=\"resumed\"}") >= 3.0,
        "{:?}",
        after
    );
    assert_eq!(after.v("vipool_tls_handshakes_total{kind=\"full\"}"), backup_full);
    // A graceful handoff: far shorter than the crash bound (the backup's
    // Master_Down_Interval), and measured, not zero.
    let gap = after.v("vipool_failover_duration_seconds_sum");
    let bound = pair.opts.master_down(100).as_secs_f64();
    assert!(gap > 0.0 && gap < bound, "gap {gap} s, bound {bound} s");
    assert!(after.v("vipool_raft_term") >= term_before);
    assert_eq!(after.v("vipool_pool_size_licenses{type=\"AP\"}"), pool);
    // The backup takes over as sole voter: the primary is a learner.
    assert!(
        wait_for(WAIT, || Scrape::of(&client, b)
            .is_ok_and(
                |s| s.0.get("vipool_raft_learners{peer=\"primary\"}") == Some(&1.0)
            )),
        "the primary never became a learner: {:?}",
        Scrape::of(&client, b)
    );
    let stopped = Scrape::of(&client, a);
    assert!(stopped.is_err(), "the stopped primary still answers: {stopped:?}");
    eprintln!(
        "{test}: graceful failover, gap measured by the backup {:.1} ms",
        gap * 1000.0
    );

    if browser {
        let png = shots.join("after.png");
        let dom = chromium(&shots, &client, b, &png);
        assert!(dom.contains("id=\"holder\">backup (192.0.2.2)</p>"), "{dom}");
        assert!(dom.contains("this node serves license requests"), "{dom}");
        assert!(
            dom.contains("took over") && dom.contains("the peer left (priority 0)"),
            "{dom}"
        );
        assert!(dom.contains("<span class=\"holder\">3</span> up"), "{dom}");
        // The primary stopped gracefully: the backup took over as sole
        // voter, the primary is a learner until it returns.
        assert!(dom.contains("primary is a raft learner"), "{dom}");
        if let Ok(keep) = std::env::var("VIPOOL_STATUS_PAGE_PNG") {
            std::fs::copy(&png, &keep).expect("keep the screenshot");
        }
    }

    // The primary comes back, catches up and takes the VIP back: a
    // takeover on its side, a loss on the backup's.
    pair.restart(Which::Primary);
    assert!(
        wait_for(2 * WAIT, || Scrape::of(&client, a)
            .is_ok_and(|s| s.v("vipool_serving") == 1.0)
            && Scrape::of(&client, b).is_ok_and(|s| s.v("vipool_serving") == 0.0)),
        "the primary never took the VIP back: {:?}\n{}",
        Scrape::of(&client, a),
        pair.primary.log()
    );
    let back = Scrape::of(&client, a).unwrap();
    assert_eq!(back.v("vipool_failovers_total"), 1.0);
    assert_eq!(back.v("vipool_vrrp_state{state=\"Master\"}"), 1.0);
    let handed = Scrape::of(&client, b).unwrap();
    assert_eq!(
        handed.v("vipool_failovers_total"),
        1.0,
        "a loss is not a takeover"
    );
    assert_eq!(handed.v("vipool_vrrp_state{state=\"Backup\"}"), 1.0);
    let (status, page) = get(&client, b, "/").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        page.contains("stopped serving") && page.contains("took over"),
        "{page}"
    );
    assert!(page.contains(&format!("VIP {VIP}")), "{page}");

    // A crash: the primary is killed. The backup waits out its
    // Master_Down_Interval, and its measured gap holds that silence: at
    // least the interval less the advert period the crash may fall into.
    let before = Scrape::of(&client, b).unwrap();
    pair.primary.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(
        wait_for(2 * WAIT, || Scrape::of(&client, b)
            .is_ok_and(|s| s.v("vipool_serving") == 1.0)),
        "the backup never took over from the killed primary: {:?}\n{}",
        Scrape::of(&client, b),
        pair.backup.log()
    );
    let crash = Scrape::of(&client, b).unwrap();
    assert_eq!(
        crash.v("vipool_failovers_total"),
        2.0,
        "the crash is a takeover (adverts received before the crash {}, after {}):\n{}",
        before.v("vipool_vrrp_adverts_received_total"),
        crash.v("vipool_vrrp_adverts_received_total"),
        pair.backup.log()
    );
    let gap =
        crash.v("vipool_failover_duration_seconds_sum") - before.v("vipool_failover_duration_seconds_sum");
    let down = pair.opts.master_down(100).as_secs_f64();
    let advert = pair.opts.advert().as_secs_f64();
    assert!(
        gap >= down - advert && gap < down + 5.0,
        "crash gap {gap} s, Master_Down_Interval {down} s"
    );
    let (_, page) = get(&client, b, "/").unwrap();
    assert!(
        page.contains("the peer fell silent (Master_Down_Interval)"),
        "{page}"
    );
    eprintln!(
        "{test}: crash failover, gap measured by the backup {:.1} ms (Master_Down_Interval {:.0} ms)",
        gap * 1000.0,
        down * 1000.0
    );
    drop(switches);
}

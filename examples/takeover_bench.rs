//! Benchmark: VIP takeover time after SIGKILL and SIGTERM of the master, for
//! a vipool pair and a keepalived pair in the same namespaced lab, with the
//! same priorities (200 and 100) and advert intervals (1 s and 100 ms).
//!
//! ```text
//! cargo build --release && sudo target/release/examples/takeover_bench [RUNS]
//! ```
//! (or `cargo run --release --example takeover_bench -- 5` as root).
//!
//! The takeover time is measured from the signal to the moment the kernel of
//! the backup's host reports the VIP added (`ip monitor address`, event
//! driven, no polling). Prints median, min and max per case, side by side.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{lab_available, tool_available, wait_for, Host, Lab, VipWatch};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Impl {
    Vipool,
    /// vipool with `--pair-handoff`: a leaving master's backup takes over at once.
    VipoolPair,
    Keepalived,
}

/// Starts a speaker of `which` on `host`; returns its pid.
fn start(lab: &mut Lab, which: Impl, host: &Host, priority: u8, advert_ms: u32, tag: &str) -> i32 {
    match which {
        Impl::Vipool | Impl::VipoolPair => {
            let (p, a) = (priority.to_string(), advert_ms.to_string());
            let mut args = vec!["--vrid", "50", "--priority", &p, "--vip", "192.0.2.100/24"];
            args.extend(["--advert-interval-ms", &a]);
            if which == Impl::VipoolPair {
                args.push("--pair-handoff");
            }
            lab.vipool_vrrp(host, &args).pid()
        }
        Impl::Keepalived => {
            let child = lab.keepalived(
                host,
                tag,
                &common::bench_keepalived_conf(VIP, priority, advert_ms),
            );
            let pid = child.lock().unwrap().id() as i32;
            pid
        }
    }
}

/// One takeover; `None` when it did not happen within 20 s.
/// `phase` in [0, 1) sets where in the advert cycle the signal lands, so a
/// crash is measured at spread-out points of the master's cycle rather
/// than at whatever offset the lab's start-up happens to give.
fn run_once(which: Impl, advert_ms: u32, sig: Signal, phase: f64) -> Option<Duration> {
    let mut lab = Lab::new(2);
    let (h0, h1) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let master = start(&mut lab, which, &h0, 200, advert_ms, "m");
    start(&mut lab, which, &h1, 100, advert_ms, "b");
    let settle = Duration::from_millis(u64::from(advert_ms) * 5 + 5000);
    if !wait_for(settle, || h0.has_addr(VIP) && !h1.has_addr(VIP)) {
        eprintln!("{which:?}: pair did not settle");
        return None;
    }
    // Let the backup hear a few adverts (and learn the interval).
    std::thread::sleep(Duration::from_millis(u64::from(advert_ms) * 4));
    let watch = VipWatch::new(&h1, VIP);
    std::thread::sleep(Duration::from_millis(u64::from(advert_ms)).mul_f64(phase));
    // A crash takes the whole host's speaker down at once: keepalived's VRRP
    // child would otherwise get SIGTERM from its dying parent and leave
    // gracefully, which is not a crash.
    let victims: Vec<i32> = if sig == Signal::SIGKILL {
        common::sh(&["ip", "netns", "pids", &h0.ns])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    } else {
        vec![master]
    };
    let t0 = Instant::now();
    if sig == Signal::SIGKILL {
        // Freeze the whole host first, so no process can see another die and
        // leave gracefully in the gap between two kills.
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
    }
    for pid in victims {
        let _ = kill(Pid::from_raw(pid), sig);
    }
    let at = watch.added(Duration::from_secs(20))?;
    Some(at.saturating_duration_since(t0))
}

fn stats(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "no successful run".into();
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:8.1} ms  min {:8.1}  max {:8.1}  (n={})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    if !lab_available("takeover_bench") || !tool_available("takeover_bench", "keepalived", "keepalived") {
        return;
    }
    println!("VIP takeover time, {runs} runs per case, priorities 200 -> 100, VRRPv3");
    for advert_ms in [1000u32, 100] {
        for sig in [Signal::SIGKILL, Signal::SIGTERM] {
            let bound = Duration::from_millis(u64::from(advert_ms)) * 3
                + Duration::from_micros(u64::from(advert_ms) * 1000 * 156 / 256);
            println!(
                "\nadvert {advert_ms} ms, {sig:?} (Master_Down_Interval {:.1} ms)",
                bound.as_secs_f64() * 1e3
            );
            for which in [Impl::Vipool, Impl::VipoolPair, Impl::Keepalived] {
                let times: Vec<Duration> = (0..runs)
                    .filter_map(|i| run_once(which, advert_ms, sig, i as f64 / runs as f64))
                    .collect();
                println!("  {:<11} {}", format!("{which:?}"), stats(times));
            }
        }
    }
}

//! Interoperability with keepalived as the VRRP peer, for VRRPv2 (with
//! simple-text authentication) and VRRPv3, each side the higher priority in
//! turn: exactly one master at a time, and failover in both directions.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{lab_available, tool_available, wait_for, Host, Lab};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// Master_Down_Interval at advert 1 s is under 4 s; the rest is start-up and scheduling.
const BOUND: Duration = Duration::from_secs(8);

fn keepalived_conf(version: u8, vrid: u8, priority: u8) -> String {
    let auth = if version == 2 {
        "    authentication {\n        auth_type PASS\n        auth_pass s3cret\n    }\n"
    } else {
        ""
    };
    format!(
        "global_defs {{\n    router_id vipool_interop\n    vrrp_version {version}\n}}\n\
         vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    \
         priority {priority}\n    advert_int 1\n{auth}    virtual_ipaddress {{\n        {VIP}/24 dev eth0\n    }}\n}}\n"
    )
}

/// The longest both hosts may be seen holding the VIP at once. RFC 9568
/// preemption has an inherent overlap: the new master installs the VIP right
/// after its first advert, and the old one removes it when that advert
/// arrives. A second master that lasts longer than this is a real failure.
const OVERLAP: Duration = Duration::from_millis(250);

/// Samples both hosts until `until` holds, failing if both hold the VIP for
/// longer than [`OVERLAP`] in a row.
fn never_two_masters(a: &Host, b: &Host, timeout: Duration, mut until: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut both_since: Option<Instant> = None;
    loop {
        let (ha, hb) = (a.has_addr(VIP), b.has_addr(VIP));
        if ha && hb {
            let since = *both_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() <= OVERLAP,
                "both {} and {} hold the VIP for {:?}",
                a.ns,
                b.ns,
                since.elapsed()
            );
        } else {
            if let Some(since) = both_since.take() {
                eprintln!("transient overlap of {:?} during a takeover", since.elapsed());
            }
        }
        if until() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn interop(version: u8, vipool_higher: bool) {
    let name = format!(
        "keepalived_v{version}_vipool_{}",
        if vipool_higher { "higher" } else { "lower" }
    );
    if !lab_available(&name) || !tool_available(&name, "keepalived", "keepalived") {
        return;
    }
    let vrid = 20 + version + u8::from(vipool_higher) * 10;
    let (vp_prio, ka_prio) = if vipool_higher { (200u8, 100u8) } else { (100, 200) };
    let mut lab = Lab::new(2);
    let (hv, hk) = (lab.hosts[0].clone(), lab.hosts[1].clone());
    let vrid_s = vrid.to_string();
    let prio_s = vp_prio.to_string();
    let version_s = version.to_string();
    let mut args = vec![
        "--vrid",
        &vrid_s,
        "--priority",
        &prio_s,
        "--vip",
        "192.0.2.100/24",
        "--version",
        &version_s,
    ];
    if version == 2 {
        args.extend(["--auth-pass", "s3cret"]);
    }
    let conf = keepalived_conf(version, vrid, ka_prio);

    let ka = lab.keepalived(&hk, "ka", &conf);
    let vp = lab.vipool_vrrp(&hv, &args);
    let (high, low) = if vipool_higher { (&hv, &hk) } else { (&hk, &hv) };
    assert!(
        never_two_masters(&hv, &hk, BOUND * 2, || high.has_addr(VIP) && !low.has_addr(VIP)),
        "{name}: the higher priority never became the only master"
    );
    let vp_state = if vipool_higher { "Master" } else { "Backup" };
    assert!(
        vp.wait_state(vp_state, BOUND),
        "{name}: vipool is {} not {vp_state}",
        vp.state()
    );
    // Steady state: still exactly one master over several adverts.
    let t = Instant::now();
    never_two_masters(&hv, &hk, Duration::from_secs(3), || {
        t.elapsed() > Duration::from_secs(3)
    });
    assert!(
        high.has_addr(VIP) && !low.has_addr(VIP),
        "{name}: mastership moved in steady state"
    );

    // Stop the higher one gracefully: the lower takes over.
    if vipool_higher {
        vp.signal(Signal::SIGTERM);
        assert_eq!(vp.wait_exit(BOUND), Some(0));
    } else {
        let pid = ka.lock().unwrap().id() as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("stop keepalived");
    }
    assert!(
        never_two_masters(&hv, &hk, BOUND, || low.has_addr(VIP) && !high.has_addr(VIP)),
        "{name}: the lower priority did not take over"
    );

    // Start it again: it preempts back.
    let vp2 = if vipool_higher {
        Some(lab.vipool_vrrp(&hv, &args))
    } else {
        assert!(
            wait_for(BOUND, || ka.lock().unwrap().try_wait().ok().flatten().is_some()),
            "{name}: keepalived did not exit on SIGTERM"
        );
        lab.keepalived(&hk, "ka2", &conf);
        None
    };
    assert!(
        never_two_masters(&hv, &hk, BOUND * 2, || high.has_addr(VIP) && !low.has_addr(VIP)),
        "{name}: the returning higher priority did not preempt"
    );
    let vp_now = vp2.as_ref().unwrap_or(&vp);
    assert!(
        vp_now.wait_state(vp_state, BOUND),
        "{name}: vipool ended {} not {vp_state}",
        vp_now.state()
    );
}

#[test]
fn keepalived_v2_vipool_higher() {
    interop(2, true);
}

#[test]
fn keepalived_v2_vipool_lower() {
    interop(2, false);
}

#[test]
fn keepalived_v3_vipool_higher() {
    interop(3, true);
}

#[test]
fn keepalived_v3_vipool_lower() {
    interop(3, false);
}

//! The receive path as the driver runs it: raw-socket datagrams into a
//! running state machine. Nothing may panic, and garbage never moves the
//! state of a master or a backup.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vrrp::proto::{Config, Instance, State};

fuzz_target!(|data: &[u8]| {
    let _ = vrrp::wire::ipv4::parse(data);
    let vip = Ipv4Addr::new(192, 0, 2, 100);
    let mut vr = Instance::new(Config::v3(10, 100, Ipv4Addr::new(192, 0, 2, 1), vec![vip])).unwrap();
    let t0 = Instant::now();
    vr.startup(t0);
    while vr.poll_event().is_some() {}
    let before = (vr.state(), vr.poll_timeout());
    vr.handle_datagram(t0 + Duration::from_millis(1), data);
    // A datagram that passes every check may legitimately move a backup's
    // timer; one that is dropped must change nothing.
    if vr.counters().adverts_received == 0 {
        assert_eq!((vr.state(), vr.poll_timeout()), before);
    }
    assert_ne!(vr.state(), State::Initialize);
});

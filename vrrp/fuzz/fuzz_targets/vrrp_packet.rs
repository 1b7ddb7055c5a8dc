//! The VRRP message decoder: any bytes, under every checksum mode, must
//! parse or fail cleanly, and whatever parses must re-emit to bytes that
//! parse to the same representation.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vrrp::wire::{Checksum, Packet, Repr};

fuzz_target!(|data: &[u8]| {
    let src = Ipv4Addr::new(192, 0, 2, 1);
    let modes = [
        Checksum::PseudoHeader { src, dst: vrrp::wire::MULTICAST_GROUP },
        Checksum::MessageOnly,
        Checksum::Ignore,
    ];
    let Ok(packet) = Packet::new_checked(data) else { return };
    // Every accessor is safe after check_len.
    let _ = (packet.version(), packet.msg_type(), packet.vrid(), packet.priority());
    let _ = (packet.max_adver_int(), packet.auth_type(), packet.adver_int(), packet.checksum());
    let _ = (packet.addrs().count(), packet.auth_data());
    for mode in modes {
        if let Ok(repr) = Repr::parse(&packet, mode) {
            let bytes = repr.to_bytes(mode);
            let again = Repr::parse(&Packet::new_checked(&bytes[..]).expect("emitted length"), mode)
                .expect("emitted bytes parse");
            assert_eq!(again, repr);
        }
    }
});

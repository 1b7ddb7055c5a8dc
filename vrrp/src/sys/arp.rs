//! Gratuitous ARP, so that hosts and switches on the link learn at once which
//! MAC answers for the virtual addresses (RFC 9568 §6.4.1 "broadcast a
//! gratuitous ARP request containing the virtual router MAC address for
//! each IP address associated with the virtual router").

use std::io;
use std::net::Ipv4Addr;

use pnet_datalink::{Channel, Config, DataLinkSender, MacAddr, NetworkInterface};
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};

const FRAME_LEN: usize = 14 + 28;

/// The RFC 5798 §7.3 virtual router MAC address for `vrid` (IPv4).
pub fn virtual_mac(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vrid]
}

/// Builds a gratuitous ARP request frame: broadcast, sender and target IP
/// both `addr`, sender hardware address `mac`.
pub fn gratuitous_arp_frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; FRAME_LEN] {
    gratuitous_frame(mac, addr, false)
}

/// Builds a gratuitous ARP reply frame: broadcast, sender and target IP
/// both `addr`, sender and target hardware address `mac` (the form of
/// `arping -A`). Some hosts update their cache from unsolicited replies
/// only, some from requests only: a new master sends both.
pub fn gratuitous_arp_reply_frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; FRAME_LEN] {
    gratuitous_frame(mac, addr, true)
}

fn gratuitous_frame(mac: [u8; 6], addr: Ipv4Addr, reply: bool) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    let mac = MacAddr::from(mac);
    {
        let mut eth = MutableEthernetPacket::new(&mut frame).expect("frame sized for ethernet");
        eth.set_destination(MacAddr::broadcast());
        eth.set_source(mac);
        eth.set_ethertype(EtherTypes::Arp);
    }
    let mut arp = MutableArpPacket::new(&mut frame[14..]).expect("frame sized for ARP");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    if reply {
        arp.set_operation(ArpOperations::Reply);
        arp.set_target_hw_addr(mac);
    } else {
        arp.set_operation(ArpOperations::Request);
        arp.set_target_hw_addr(MacAddr::zero());
    }
    arp.set_sender_hw_addr(mac);
    arp.set_sender_proto_addr(addr);
    arp.set_target_proto_addr(addr);
    frame
}

/// A link-layer sender on one interface (an `AF_PACKET` socket).
pub struct ArpSender {
    tx: Box<dyn DataLinkSender>,
    mac: [u8; 6],
}

impl std::fmt::Debug for ArpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArpSender")
            .field("mac", &MacAddr::from(self.mac))
            .finish()
    }
}

impl ArpSender {
    /// Opens the interface named `interface`; frames carry `mac`, or the
    /// interface's own address when `None`.
    ///
    /// # Errors
    /// Unknown interface, no MAC address, or the OS error (needs `CAP_NET_RAW`).
    pub fn open(interface: &str, mac: Option<[u8; 6]>) -> io::Result<ArpSender> {
        let iface: NetworkInterface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == interface)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {interface}")))?;
        let mac = match (mac, iface.mac) {
            (Some(mac), _) => mac,
            (None, Some(m)) => m.octets(),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("interface {interface} has no MAC address"),
                ))
            }
        };
        let config = Config {
            // We only send; keep the receive ring small.
            read_buffer_size: 4096,
            write_buffer_size: 4096,
            ..Config::default()
        };
        match pnet_datalink::channel(&iface, config)? {
            Channel::Ethernet(tx, _rx) => Ok(ArpSender { tx, mac }),
            _ => Err(io::Error::other("unexpected datalink channel type")),
        }
    }

    /// Sends one gratuitous ARP request and one gratuitous ARP reply for `addr`.
    ///
    /// # Errors
    /// The OS error.
    pub fn announce(&mut self, addr: Ipv4Addr) -> io::Result<()> {
        for frame in [
            gratuitous_arp_frame(self.mac, addr),
            gratuitous_arp_reply_frame(self.mac, addr),
        ] {
            self.tx
                .send_to(&frame, None)
                .unwrap_or_else(|| Err(io::Error::other("datalink sender refused the frame")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_fields() {
        let frame = gratuitous_arp_frame(virtual_mac(7), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &[0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        // htype 1, ptype 0x0800, hlen 6, plen 4, op 1 (request)
        assert_eq!(&frame[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&frame[22..28], &[0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(&frame[28..32], &[192, 0, 2, 7]);
        assert_eq!(&frame[32..38], &[0; 6]);
        assert_eq!(&frame[38..42], &[192, 0, 2, 7]);
    }

    #[test]
    fn garp_reply_frame_fields() {
        let frame = gratuitous_arp_reply_frame(virtual_mac(7), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &[0, 0, 0x5e, 0, 1, 7]);
        // op 2 (reply)
        assert_eq!(&frame[14..22], &[0, 1, 8, 0, 6, 4, 0, 2]);
        assert_eq!(&frame[22..28], &[0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(&frame[28..32], &[192, 0, 2, 7]);
        assert_eq!(&frame[32..38], &[0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(&frame[38..42], &[192, 0, 2, 7]);
    }
}

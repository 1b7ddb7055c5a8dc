//! Virtual addresses and the virtual-MAC interface, through rtnetlink.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, MacVlanMode};
use rtnetlink::{AddressMessageBuilder, Handle, LinkMacVlan, LinkUnspec};

/// Errno values the kernel answers when an address is already there or already gone.
const EEXIST: i32 = libc::EEXIST;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;
const ENODEV: i32 = libc::ENODEV;

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

/// A route-netlink connection for address and link changes.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection and spawns its task on the current tokio runtime.
    ///
    /// # Errors
    /// The OS error opening the netlink socket.
    pub fn open() -> io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The index of interface `name`.
    ///
    /// # Errors
    /// `NotFound` when there is no such interface.
    pub async fn link_index(&self, name: &str) -> io::Result<u32> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {name}"),
            )),
            Err(e) if errno(&e) == Some(ENODEV) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {name}"),
            )),
            Err(e) => Err(to_io(e)),
        }
    }

    /// Whether interface `name` is up and running (`IFF_UP` and
    /// `IFF_RUNNING`: administratively up, with a carrier), as keepalived's
    /// `track_interface` judges it; `None` when there is no such interface.
    ///
    /// # Errors
    /// A netlink error other than "no such device".
    pub async fn link_running(&self, name: &str) -> io::Result<Option<bool>> {
        use rtnetlink::packet_route::link::LinkFlags;
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => {
                let f = link.header.flags;
                Ok(Some(f.contains(LinkFlags::Up) && f.contains(LinkFlags::Running)))
            }
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }

    /// The IPv4 addresses (with prefix lengths) on interface `index`.
    ///
    /// # Errors
    /// The netlink error.
    pub async fn ipv4_addresses(&self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut stream = self.handle.address().get().set_link_index_filter(index).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(to_io)? {
            if let Some(addr) = local_v4(&msg) {
                out.push((addr, msg.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Adds `addr/prefix_len` to interface `index`; already present is success.
    ///
    /// # Errors
    /// The netlink error.
    pub async fn add_address(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .execute()
            .await
        {
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            other => other.map_err(to_io),
        }
    }

    /// Removes `addr/prefix_len` from interface `index`; already gone is success.
    ///
    /// # Errors
    /// The netlink error.
    pub async fn del_address(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, prefix_len)
            .build();
        match self.handle.address().del(msg).execute().await {
            Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(()),
            other => other.map_err(to_io),
        }
    }

    /// Creates (or recreates) a bridge-mode macvlan `name` on `parent` with
    /// the MAC address `mac`, left down so that the caller can disable IPv6
    /// on it before [`Netlink::set_up`]: a link that comes up with IPv6
    /// sends MLD reports and neighbour solicitations from the virtual MAC at
    /// once, and the switch then sends the VIP's traffic to a backup.
    /// Returns its index.
    ///
    /// Bridge mode, not private: a private (or passthru) macvlan takes every
    /// multicast frame whose source is its own MAC for a frame of its own
    /// reflected by the switch, and keeps it from the parent. The peer's
    /// adverts come from the same virtual MAC, so with a private macvlan
    /// they could be received only on the macvlan, after joining 224.0.0.18
    /// there, and a join sends IGMP reports from the virtual MAC (see
    /// [`super::socket`]). In bridge mode they reach the parent. The one
    /// difference besides: frames between macvlans of one parent in bridge
    /// mode stay in the host, and the speaker makes one per VRID.
    ///
    /// # Errors
    /// The netlink error.
    pub async fn create_macvlan(&self, parent: u32, name: &str, mac: [u8; 6]) -> io::Result<u32> {
        if let Ok(old) = self.link_index(name).await {
            self.delete_link(old).await?;
        }
        let msg = LinkMacVlan::new(name, parent, MacVlanMode::Bridge)
            .address(mac.to_vec())
            .build();
        self.handle.link().add(msg).execute().await.map_err(to_io)?;
        self.link_index(name).await
    }

    /// Sets link `index` up. It stays up for the speaker's life: a link set
    /// up later (on becoming master, say) may not transmit for a while
    /// (ENETDOWN until the kernel's link watch activates it).
    ///
    /// # Errors
    /// The netlink error.
    pub async fn set_up(&self, index: u32) -> io::Result<()> {
        let up = LinkUnspec::new_with_index(index).up().build();
        self.handle.link().set(up).execute().await.map_err(to_io)
    }

    /// Deletes link `index`.
    ///
    /// # Errors
    /// The netlink error.
    pub async fn delete_link(&self, index: u32) -> io::Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
            other => other.map_err(to_io),
        }
    }

    /// The MAC address of link `index`.
    ///
    /// # Errors
    /// The netlink error, or `NotFound` when the link has no address.
    pub async fn link_mac(&self, index: u32) -> io::Result<[u8; 6]> {
        let mut links = self.handle.link().get().match_index(index).execute();
        if let Some(link) = links.try_next().await.map_err(to_io)? {
            for attr in link.attributes {
                if let LinkAttribute::Address(bytes) = attr {
                    if let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice()) {
                        return Ok(mac);
                    }
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("link {index} has no MAC address"),
        ))
    }
}

fn local_v4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links and equals IFA_LOCAL elsewhere.
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => return Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    address
}

//! Per-interface IPv4 sysctls the virtual-MAC mode needs, restored on exit.
//!
//! With the VIP on a macvlan, the parent interface would also answer ARP for
//! it (Linux answers for any local address on any interface by default) with
//! the parent's own MAC, which defeats the virtual MAC. `arp_ignore=1` on the
//! parent makes it answer only for its own addresses; `arp_filter=1` keeps
//! replies on the interface the route points at; `arp_announce=2` stops the
//! parent from asking "who has X, tell VIP" with its own MAC, which would
//! teach every neighbour the parent's MAC for the VIP. The macvlan gets
//! `arp_ignore=1` and `arp_announce=2` too, for the mirror image: it must not
//! answer ARP for the host's own address with the virtual MAC. IPv6 is
//! disabled on the macvlan so the backup's copy of the virtual MAC never
//! sends a neighbour discovery frame.

use std::io;
use std::path::PathBuf;

/// Written values and what they were before, restored by [`Sysctls::restore`].
#[derive(Debug, Default)]
pub struct Sysctls {
    saved: Vec<(PathBuf, String)>,
}

impl Sysctls {
    /// Sets `/proc/sys/net/{family}/conf/{interface}/{key}` to `value`,
    /// remembering the old value.
    ///
    /// # Errors
    /// The file cannot be read or written (no such interface, not root).
    pub fn set(&mut self, family: &str, interface: &str, key: &str, value: &str) -> io::Result<()> {
        let path = PathBuf::from(format!("/proc/sys/net/{family}/conf/{interface}/{key}"));
        let old = std::fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std::fs::write(&path, value)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        self.saved.push((path, old.trim().to_string()));
        Ok(())
    }

    /// Puts every value back, newest first. Values of interfaces that are
    /// gone are skipped.
    pub fn restore(&mut self) {
        while let Some((path, old)) = self.saved.pop() {
            if path.exists() {
                if let Err(e) = std::fs::write(&path, &old) {
                    tracing::warn!(path = %path.display(), error = %e, "sysctl not restored");
                }
            }
        }
    }
}

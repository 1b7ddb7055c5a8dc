//! Readiness notification for systemd (`Type=notify` units): `READY=1` once
//! a node is up, `STOPPING=1` when a graceful stop begins.
//!
//! The protocol is one unix datagram per state to the socket named by
//! `$NOTIFY_SOCKET`: a path, or an abstract socket when the name starts with
//! `@`. Without the variable (not started by systemd) nothing is sent. A
//! failure to notify is logged and otherwise ignored: the service works the
//! same, only systemd's view of it lags.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::{debug, warn};

/// The node is up: store open, VRRP speaker started, listeners bound.
pub(crate) const READY: &str = "READY=1";
/// A graceful stop has begun.
pub(crate) const STOPPING: &str = "STOPPING=1";

/// Sends `state` to `$NOTIFY_SOCKET`, if set; logs (never returns) errors.
pub(crate) fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    match send(&socket, state) {
        Ok(()) => debug!(state, "notified the service manager"),
        Err(e) => warn!(state, socket = ?socket, error = %e, "cannot notify the service manager"),
    }
}

/// Sends one datagram with `state` to the notification socket `socket`.
fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = address(socket)?;
    let sender = UnixDatagram::unbound()?;
    let sent = sender.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

/// `@name` is an abstract socket (Linux); anything else a filesystem path.
fn address(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.split_first() {
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is empty",
        )),
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        Some(_) => SocketAddr::from_pathname(socket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_ready_and_stopping_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("vipool-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind path socket");
        send(path.as_os_str(), READY).expect("send READY");
        assert_eq!(receive(&socket), "READY=1");
        send(path.as_os_str(), STOPPING).expect("send STOPPING");
        assert_eq!(receive(&socket), "STOPPING=1");
        drop(socket);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vipool-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
        send(OsStr::new(&format!("@{name}")), READY).expect("send READY");
        assert_eq!(receive(&socket), "READY=1");
    }

    #[test]
    fn refuses_an_empty_name_and_reports_a_missing_socket() {
        assert!(send(OsStr::new(""), READY).is_err());
        let missing = std::env::temp_dir().join(format!("vipool-no-such-{}.sock", std::process::id()));
        assert!(send(missing.as_os_str(), READY).is_err());
    }
}

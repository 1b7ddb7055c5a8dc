//! The VRRP message itself.
//!
//! ```text
//! RFC 9568 §5.1 (VRRPv3, IPv4)            RFC 3768 §5.1 (VRRPv2)
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |  v3
//! |   Auth Type   |   Adver Int   |          Checksum             |  v2
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     IPv4 Address(es) ...                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Authentication Data (8 octets, v2 only)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use super::{fold, ones_complement_sum, Error, Result, HEADER_LEN, IP_PROTOCOL, V2_AUTH_LEN};

/// Byte offsets of the fields.
pub mod field {
    #![allow(missing_docs)]
    pub type Field = core::ops::Range<usize>;

    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v3: 4 reserved bits and the 12-bit Max Adver Int (centiseconds).
    pub const MAX_ADVER_INT: Field = 4..6;
    /// v2: authentication type.
    pub const AUTH_TYPE: usize = 4;
    /// v2: advertisement interval (seconds).
    pub const ADVER_INT: usize = 5;
    pub const CHECKSUM: Field = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// RFC 3768.
    V2,
    /// RFC 5798 / RFC 9568.
    V3,
    /// Anything else seen on the wire.
    Unknown(u8),
}

impl From<u8> for Version {
    fn from(n: u8) -> Self {
        match n {
            2 => Version::V2,
            3 => Version::V3,
            n => Version::Unknown(n),
        }
    }
}

impl From<Version> for u8 {
    fn from(v: Version) -> u8 {
        match v {
            Version::V2 => 2,
            Version::V3 => 3,
            Version::Unknown(n) => n,
        }
    }
}

/// VRRP message type; 1 (ADVERTISEMENT) is the only one defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// An advertisement.
    Advertisement,
    /// Anything else seen on the wire.
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(n: u8) -> Self {
        match n {
            1 => MessageType::Advertisement,
            n => MessageType::Unknown(n),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Advertisement => 1,
            MessageType::Unknown(n) => n,
        }
    }
}

/// VRRPv2 authentication type (RFC 2338 §5.3.6, kept as "reserved" by RFC 3768).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// 0: no authentication.
    None,
    /// 1: simple text password, up to 8 octets, zero padded.
    SimpleText,
    /// 2: IP Authentication Header (not supported).
    IpAh,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for AuthType {
    fn from(n: u8) -> Self {
        match n {
            0 => AuthType::None,
            1 => AuthType::SimpleText,
            2 => AuthType::IpAh,
            n => AuthType::Unknown(n),
        }
    }
}

impl From<AuthType> for u8 {
    fn from(t: AuthType) -> u8 {
        match t {
            AuthType::None => 0,
            AuthType::SimpleText => 1,
            AuthType::IpAh => 2,
            AuthType::Unknown(n) => n,
        }
    }
}

/// How the checksum is computed.
///
/// RFC 5798 computes the VRRPv3 checksum over an IPv4 pseudo-header followed
/// by the message; some older VRRPv3 speakers (and every VRRPv2 speaker)
/// checksum the message alone. VRRPv2 messages always use [`Checksum::MessageOnly`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// VRRPv3 per RFC 5798 §5.2.8: pseudo-header of source, destination,
    /// zero, protocol 112 and the VRRP length, then the message.
    PseudoHeader {
        /// IP source address.
        src: Ipv4Addr,
        /// IP destination address.
        dst: Ipv4Addr,
    },
    /// The message alone (VRRPv2; VRRPv3 in "v2 checksum" compatibility mode).
    MessageOnly,
    /// Do not verify (parse only). Emit still writes a message-only checksum.
    Ignore,
}

/// A read-only or read-write view over one VRRP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length. Accessors may panic on a
    /// short buffer; use [`Packet::new_checked`] on received data.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks that every accessor is safe to call.
    ///
    /// # Errors
    /// See [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds exactly the header, the announced address
    /// list and, for VRRPv2, the authentication data. After this succeeds no
    /// accessor panics.
    ///
    /// # Errors
    /// [`Error::Truncated`] when bytes are missing, [`Error::Length`] when
    /// there are bytes past the end the header announces.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                len,
                need: HEADER_LEN,
            });
        }
        let need = self.expected_len();
        if len < need {
            Err(Error::Truncated { len, need })
        } else if len > need {
            Err(Error::Length { len, expected: need })
        } else {
            Ok(())
        }
    }

    /// The length the header announces: header, addresses and (v2) auth data.
    fn expected_len(&self) -> usize {
        let auth = if self.version() == Version::V2 {
            V2_AUTH_LEN
        } else {
            0
        };
        HEADER_LEN + 4 * usize::from(self.addr_count()) + auth
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (high nibble of octet 0).
    pub fn version(&self) -> Version {
        Version::from(self.buffer.as_ref()[field::VER_TYPE] >> 4)
    }

    /// Type field (low nibble of octet 0).
    pub fn msg_type(&self) -> MessageType {
        MessageType::from(self.buffer.as_ref()[field::VER_TYPE] & 0x0f)
    }

    /// Virtual Rtr ID.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Priority.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Count IPvX Addr.
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v3 Max Adver Int in centiseconds (reserved bits masked off).
    pub fn max_adver_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::MAX_ADVER_INT];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    /// v2 Auth Type.
    pub fn auth_type(&self) -> AuthType {
        AuthType::from(self.buffer.as_ref()[field::AUTH_TYPE])
    }

    /// v2 Adver Int in seconds.
    pub fn adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The `i`th address, or `None` past the announced count.
    pub fn addr(&self, i: usize) -> Option<Ipv4Addr> {
        if i >= usize::from(self.addr_count()) {
            return None;
        }
        let at = field::ADDRESSES + 4 * i;
        let b = self.buffer.as_ref().get(at..at + 4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }

    /// The addresses the header announces.
    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..usize::from(self.addr_count())).map_while(|i| self.addr(i))
    }

    /// v2 Authentication Data (8 octets after the addresses).
    pub fn auth_data(&self) -> Option<[u8; 8]> {
        let at = field::ADDRESSES + 4 * usize::from(self.addr_count());
        let b = self.buffer.as_ref().get(at..at + V2_AUTH_LEN)?;
        let mut out = [0u8; 8];
        out.copy_from_slice(b);
        Some(out)
    }

    fn sum(&self, mode: Checksum) -> u32 {
        // Only the message the header announces: `Repr::emit` may write into
        // a larger buffer, and bytes past the message are not part of it
        // (smoltcp's UDP checksum likewise covers its length field, not the
        // buffer). `new_checked` buffers are exactly this long anyway.
        let data = self.buffer.as_ref();
        let data = &data[..self.expected_len().min(data.len())];
        let initial = match mode {
            Checksum::PseudoHeader { src, dst } => {
                let mut pseudo = [0u8; 12];
                pseudo[0..4].copy_from_slice(&src.octets());
                pseudo[4..8].copy_from_slice(&dst.octets());
                pseudo[9] = IP_PROTOCOL;
                // The VRRP message is at most 8 + 255*4 + 8 bytes.
                pseudo[10..12].copy_from_slice(&(data.len() as u16).to_be_bytes());
                ones_complement_sum(0, &pseudo)
            }
            Checksum::MessageOnly | Checksum::Ignore => 0,
        };
        ones_complement_sum(initial, data)
    }

    /// Whether the checksum verifies under `mode` ([`Checksum::Ignore`] always does).
    pub fn verify_checksum(&self, mode: Checksum) -> bool {
        match mode {
            Checksum::Ignore => true,
            _ => fold(self.sum(mode)) == 0,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version and type.
    pub fn set_version_type(&mut self, version: Version, msg_type: MessageType) {
        self.buffer.as_mut()[field::VER_TYPE] = (u8::from(version) << 4) | (u8::from(msg_type) & 0x0f);
    }

    /// Sets Virtual Rtr ID.
    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    /// Sets Priority.
    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    /// Sets Count IPvX Addr.
    pub fn set_addr_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Sets the v3 Max Adver Int (centiseconds); the reserved bits are zeroed.
    pub fn set_max_adver_int(&mut self, cs: u16) {
        self.buffer.as_mut()[field::MAX_ADVER_INT].copy_from_slice(&(cs & 0x0fff).to_be_bytes());
    }

    /// Sets the v2 Auth Type.
    pub fn set_auth_type(&mut self, t: AuthType) {
        self.buffer.as_mut()[field::AUTH_TYPE] = t.into();
    }

    /// Sets the v2 Adver Int (seconds).
    pub fn set_adver_int(&mut self, secs: u8) {
        self.buffer.as_mut()[field::ADVER_INT] = secs;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sets the `i`th address.
    pub fn set_addr(&mut self, i: usize, addr: Ipv4Addr) {
        let at = field::ADDRESSES + 4 * i;
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&addr.octets());
    }

    /// Sets the v2 authentication data (after the announced addresses).
    pub fn set_auth_data(&mut self, data: [u8; 8]) {
        let at = field::ADDRESSES + 4 * usize::from(self.addr_count());
        self.buffer.as_mut()[at..at + V2_AUTH_LEN].copy_from_slice(&data);
    }

    /// Computes and writes the checksum under `mode`.
    pub fn fill_checksum(&mut self, mode: Checksum) {
        self.set_checksum(0);
        let sum = fold(self.sum(mode));
        self.set_checksum(sum);
    }
}

/// VRRPv2 authentication as carried in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Auth type 0; the data octets are carried but meaningless.
    None,
    /// Auth type 1: a password of up to 8 octets, zero padded.
    SimpleText([u8; 8]),
}

impl Auth {
    /// Builds simple-text authentication from a password of at most 8 bytes.
    ///
    /// Returns `None` when the password is longer than 8 bytes.
    pub fn simple_text(password: &[u8]) -> Option<Auth> {
        if password.len() > 8 {
            return None;
        }
        let mut data = [0u8; 8];
        data[..password.len()].copy_from_slice(password);
        Some(Auth::SimpleText(data))
    }
}

/// A parsed, validated VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// V2 or V3 (never `Unknown` after a successful parse).
    pub version: Version,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Sender's priority; 0 means "I am leaving", 255 "I own the addresses".
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2 carries whole seconds).
    pub interval_cs: u16,
    /// The virtual addresses.
    pub addresses: Vec<Ipv4Addr>,
    /// v2 authentication; always [`Auth::None`] for v3.
    pub auth: Auth,
}

impl Repr {
    /// An advertisement without authentication.
    pub fn advertisement(
        version: Version,
        vrid: u8,
        priority: u8,
        interval_cs: u16,
        addresses: Vec<Ipv4Addr>,
    ) -> Repr {
        Repr {
            version,
            vrid,
            priority,
            interval_cs,
            addresses,
            auth: Auth::None,
        }
    }

    /// Parses and validates a message whose length was checked.
    ///
    /// # Errors
    /// The first of: [`Error::Version`], [`Error::Type`], [`Error::Checksum`]
    /// (v2 is always checked message-only unless `checksum` is `Ignore`),
    /// [`Error::Vrid`], [`Error::NoAddresses`], [`Error::Interval`],
    /// [`Error::AuthType`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, checksum: Checksum) -> Result<Repr> {
        packet.check_len()?;
        let version = packet.version();
        if !matches!(version, Version::V2 | Version::V3) {
            return Err(Error::Version(version.into()));
        }
        if let MessageType::Unknown(t) = packet.msg_type() {
            return Err(Error::Type(t));
        }
        let mode = match (version, checksum) {
            (_, Checksum::Ignore) => Checksum::Ignore,
            (Version::V2, _) => Checksum::MessageOnly,
            (_, mode) => mode,
        };
        if !packet.verify_checksum(mode) {
            return Err(Error::Checksum);
        }
        if packet.vrid() == 0 {
            return Err(Error::Vrid);
        }
        if packet.addr_count() == 0 {
            return Err(Error::NoAddresses);
        }
        let (interval_cs, auth) = if version == Version::V2 {
            let auth = match packet.auth_type() {
                AuthType::None => Auth::None,
                AuthType::SimpleText => Auth::SimpleText(packet.auth_data().unwrap_or_default()),
                other => return Err(Error::AuthType(other.into())),
            };
            (u16::from(packet.adver_int()) * 100, auth)
        } else {
            (packet.max_adver_int(), Auth::None)
        };
        if interval_cs == 0 {
            return Err(Error::Interval);
        }
        Ok(Repr {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            interval_cs,
            addresses: packet.addrs().collect(),
            auth,
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let auth = if self.version == Version::V2 {
            V2_AUTH_LEN
        } else {
            0
        };
        HEADER_LEN + 4 * self.addresses.len() + auth
    }

    /// Writes the message into a buffer of at least [`Repr::buffer_len`] bytes
    /// and fills the checksum (v2 always message-only; `Ignore` means
    /// message-only too).
    ///
    /// v2 intervals are written in whole seconds (rounded down, at least 1);
    /// v3 intervals are clamped to 12 bits. At most 255 addresses are written.
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>, checksum: Checksum) {
        let count = self.addresses.len().min(255);
        packet.set_version_type(self.version, MessageType::Advertisement);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_addr_count(count as u8);
        match self.version {
            Version::V2 => {
                let (kind, data) = match self.auth {
                    Auth::None => (AuthType::None, [0u8; 8]),
                    Auth::SimpleText(d) => (AuthType::SimpleText, d),
                };
                packet.set_auth_type(kind);
                packet.set_adver_int((self.interval_cs / 100).clamp(1, 255) as u8);
                packet.set_auth_data(data);
            }
            _ => packet.set_max_adver_int(self.interval_cs.min(super::V3_MAX_INTERVAL_CS)),
        }
        for (i, addr) in self.addresses.iter().take(count).enumerate() {
            packet.set_addr(i, *addr);
        }
        let mode = match (self.version, checksum) {
            (Version::V2, _) | (_, Checksum::Ignore) => Checksum::MessageOnly,
            (_, mode) => mode,
        };
        packet.fill_checksum(mode);
    }

    /// Emits into a fresh vector.
    pub fn to_bytes(&self, checksum: Checksum) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]), checksum);
        buf
    }
}

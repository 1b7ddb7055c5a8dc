//! The client side of the protocol: one connection to the license server.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::license::SignedKey;
use crate::proto::frame::{self, FrameError};
use crate::proto::{Request, RequestFrame, Response, ServerError, ServerMessage, SwitchReport, TableDump};
use crate::table::{Client, LicenseType, Pool};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent something this client cannot read.
    #[error("bad frame from the server: {0}")]
    Frame(#[from] FrameError),
    /// The server answered with an error.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The server answered with something that does not fit the request.
    #[error("unexpected answer from the server")]
    Unexpected,
}

/// A connection to a license server.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    seq: u64,
    max_frame: u32,
    last_push: Option<Pool>,
}

impl Connection {
    /// Connects to the server at `addr` (the VIP and port).
    ///
    /// # Errors
    /// The TCP connection could not be made.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            seq: 0,
            max_frame: frame::DEFAULT_MAX_RESPONSE,
            last_push: None,
        })
    }

    /// The server's address.
    ///
    /// # Errors
    /// The socket is no longer connected.
    pub fn peer_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.stream.peer_addr()?)
    }

    /// The pool of the most recent push, if any came.
    pub fn last_push(&self) -> Option<&Pool> {
        self.last_push.as_ref()
    }

    /// Sends `request` and waits for its answer, keeping pushes that arrive meanwhile.
    ///
    /// # Errors
    /// The connection failed, or the server refused the request.
    pub async fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        self.seq += 1;
        let seq = self.seq;
        let bytes = frame::encode(&RequestFrame { seq, request }, u32::MAX)?;
        self.stream.write_all(&bytes).await?;
        loop {
            match self.read_message().await? {
                ServerMessage::Push { pool } => self.last_push = Some(pool),
                ServerMessage::Reply { seq: got, response } if got == seq => return Ok(response?),
                // The late answer to a request the caller gave up waiting for.
                ServerMessage::Reply { seq: got, .. } if got != 0 && got < seq => {}
                // A reply to no request of ours: the server could not read what we sent.
                ServerMessage::Reply {
                    seq: 0,
                    response: Err(e),
                } => return Err(e.into()),
                ServerMessage::Reply { .. } => return Err(ClientError::Unexpected),
            }
        }
    }

    /// Waits for the next push of revised totals. Cancel-safe.
    ///
    /// # Errors
    /// The connection failed or the server sent a reply nobody asked for.
    pub async fn next_push(&mut self) -> Result<Pool, ClientError> {
        loop {
            match self.read_message().await? {
                ServerMessage::Push { pool } => {
                    self.last_push = Some(pool.clone());
                    return Ok(pool);
                }
                ServerMessage::Reply {
                    seq: 0,
                    response: Err(e),
                } => return Err(e.into()),
                // The late answer to a request the caller gave up waiting for.
                ServerMessage::Reply { seq, .. } if seq <= self.seq => {}
                ServerMessage::Reply { .. } => return Err(ClientError::Unexpected),
            }
        }
    }

    /// Reads one message. Cancel-safe: bytes read are kept for the next call.
    async fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((message, used)) = frame::decode::<ServerMessage>(&self.buf, self.max_frame)? {
                self.buf.drain(..used);
                return Ok(message);
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn client_request(&mut self, request: Request) -> Result<(Client, Pool), ClientError> {
        match self.request(request).await? {
            Response::Client { client, pool } => Ok((*client, pool)),
            Response::Table(_) | Response::Changed { .. } => Err(ClientError::Unexpected),
        }
    }

    async fn operator_request(&mut self, request: Request) -> Result<Pool, ClientError> {
        match self.request(request).await? {
            Response::Changed { pool } => Ok(pool),
            Response::Client { .. } | Response::Table(_) => Err(ClientError::Unexpected),
        }
    }

    /// Registers the client.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn register(
        &mut self,
        id: &str,
        serial: &str,
        version: &str,
        report: SwitchReport,
    ) -> Result<(Client, Pool), ClientError> {
        let request = Request::Register {
            id: id.into(),
            serial: serial.into(),
            version: version.into(),
            report,
        };
        self.client_request(request).await
    }

    /// Sends a heartbeat with the client's whole state.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn heartbeat(&mut self, id: &str, report: SwitchReport) -> Result<(Client, Pool), ClientError> {
        self.client_request(Request::Heartbeat {
            id: id.into(),
            report,
        })
        .await
    }

    /// Sends an immediate update with the client's whole state.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn update(&mut self, id: &str, report: SwitchReport) -> Result<(Client, Pool), ClientError> {
        self.client_request(Request::Update {
            id: id.into(),
            report,
        })
        .await
    }

    /// Asks for `count` licenses of `license_type`.
    ///
    /// # Errors
    /// See [`Connection::request`]; a refusal is [`ClientError::Server`].
    pub async fn acquire(
        &mut self,
        id: &str,
        license_type: &LicenseType,
        count: u32,
    ) -> Result<(Client, Pool), ClientError> {
        let request = Request::Acquire {
            id: id.into(),
            license_type: license_type.clone(),
            count,
        };
        self.client_request(request).await
    }

    /// Gives back `count` licenses of `license_type`.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn release(
        &mut self,
        id: &str,
        license_type: &LicenseType,
        count: u32,
    ) -> Result<(Client, Pool), ClientError> {
        let request = Request::Release {
            id: id.into(),
            license_type: license_type.clone(),
            count,
        };
        self.client_request(request).await
    }

    /// The whole table and the node's status, for the operator views.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn show(&mut self) -> Result<TableDump, ClientError> {
        match self.request(Request::Show).await? {
            Response::Table(dump) => Ok(*dump),
            Response::Client { .. } | Response::Changed { .. } => Err(ClientError::Unexpected),
        }
    }

    /// Operator: removes a client; the pool after it.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn remove_client(&mut self, id: &str) -> Result<Pool, ClientError> {
        self.operator_request(Request::RemoveClient { id: id.into() })
            .await
    }

    /// Operator: installs `key` on server `server`; the pool after it.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn install_key(&mut self, server: &str, key: SignedKey) -> Result<Pool, ClientError> {
        self.operator_request(Request::InstallKey {
            server: server.into(),
            key,
        })
        .await
    }

    /// Operator: removes the server key `key_id`; the pool after it.
    ///
    /// # Errors
    /// See [`Connection::request`].
    pub async fn remove_key(&mut self, key_id: &str) -> Result<Pool, ClientError> {
        self.operator_request(Request::RemoveKey {
            key_id: key_id.into(),
        })
        .await
    }
}

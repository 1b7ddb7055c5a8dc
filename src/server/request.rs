//! From a client's request to the table's command: every check the serving
//! node makes before it proposes ([`command`]).
//!
//! The serving node is where the proposal is made, so it checks what only
//! it can check, and refuses early what the table would refuse anyway:
//!
//! | check | where | why there |
//! | --- | --- | --- |
//! | a switch acts only for its own id (and registers with its own serial) | here | who a connection is comes from its certificate, not from the log |
//! | a key's signature, issuer, binding to the switch's serial, validity now | here | the trusted issuers are each node's own configuration: `apply` must not read them |
//! | clients per source address, registrations per second per source | here | each node's own policy, with state (token buckets) that is not replicated |
//! | bounds, known types, a key id counted once, the key bound to the presenter, not expired at `now_ms`, `used` claims against availability (S3) | here **and** in `apply` | here for a clear error before anything is proposed; in `apply` so that no entry, however it got into the log, breaks them |
//!
//! `command` is a pure function of its arguments: the clock, the peer, the
//! trusted issuers, the limits and the table all come in through
//! [`RequestContext`] (the token buckets are the one thing it changes).
//! The table is read through [`TableReader`], for short moments and never
//! while signatures are checked, so that the node applying the log never
//! waits for a verification.
//!
//! It is public so that tests drive it exactly as the serving node does
//! (`tests/license_requests_props.rs`: random requests through `command`,
//! then `apply`).

use std::net::SocketAddr;

use crate::license::{SeenSignatures, SignedKey, TrustedIssuers};
use crate::pki::ClientIdentity;
use crate::proto::{Request, RequestError, ServerError, SwitchReport};
use crate::table::limits::{self, MAX_KEYS_PER_CLIENT, MAX_TYPES_PER_REPORT};
use crate::table::{source_of, Actor, ClientReport, Command, CommandError, LicenseTable};

use super::rate::{ClientRate, SourceRate};

/// The limits a serving node puts on clients by source address
/// (`[license]` `max_clients_per_source`, `registrations_per_s_per_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most clients the table may hold whose address is one source address.
    /// It is also the burst of registrations one address may make at once
    /// (after a failover all its clients re-register).
    pub max_clients_per_source: u32,
    /// Registrations per second one source address may make beyond that burst.
    pub registrations_per_s_per_source: u32,
    /// License requests per second one client id may send beyond a burst
    /// of [`RequestLimits::request_burst_per_client`], over however many
    /// connections: a faster client is paced (its requests wait, the
    /// connection is not read meanwhile), not refused.
    pub requests_per_s_per_client: u32,
    /// The burst of requests one client id may send at once.
    pub request_burst_per_client: u32,
}

/// Clients per source address, unless `license.max_clients_per_source`
/// says otherwise: a rack of switches behind one NAT address fits; one
/// host cannot fill the table.
pub const DEFAULT_MAX_CLIENTS_PER_SOURCE: u32 = 64;
/// Registrations per second per source address, unless
/// `license.registrations_per_s_per_source` says otherwise.
pub const DEFAULT_REGISTRATIONS_PER_S_PER_SOURCE: u32 = 16;
/// License requests per second per client id, unless
/// `license.requests_per_s_per_client` says otherwise: a switch sends a
/// heartbeat every 30 s and a request per change of its APs; this bounds
/// how fast one switch (or one stolen certificate) can grow the log.
pub const DEFAULT_REQUESTS_PER_S_PER_CLIENT: u32 = 200;
/// The burst of requests per client id, unless
/// `license.request_burst_per_client` says otherwise.
pub const DEFAULT_REQUEST_BURST_PER_CLIENT: u32 = 1_000;

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_clients_per_source: DEFAULT_MAX_CLIENTS_PER_SOURCE,
            registrations_per_s_per_source: DEFAULT_REGISTRATIONS_PER_S_PER_SOURCE,
            requests_per_s_per_client: DEFAULT_REQUESTS_PER_S_PER_CLIENT,
            request_burst_per_client: DEFAULT_REQUEST_BURST_PER_CLIENT,
        }
    }
}

impl RequestLimits {
    /// The token buckets for these limits (burst: the clients one address
    /// may hold).
    pub fn registrations(&self) -> SourceRate {
        SourceRate::new(self.registrations_per_s_per_source, self.max_clients_per_source)
    }

    /// The token buckets of requests per client id.
    pub fn requests(&self) -> ClientRate {
        ClientRate::new(self.requests_per_s_per_client, self.request_burst_per_client)
    }
}

/// Read access to the table as this node holds it.
pub trait TableReader {
    /// Runs `f` on the table, exactly once (under whatever lock guards it:
    /// `f` is kept short).
    fn read_table(&self, f: &mut dyn FnMut(&LicenseTable));
}

impl TableReader for LicenseTable {
    fn read_table(&self, f: &mut dyn FnMut(&LicenseTable)) {
        f(self)
    }
}

/// Everything [`command`] decides with besides the request and who sent it.
pub struct RequestContext<'a> {
    /// This node's clock (milliseconds since the Unix epoch), stamped into
    /// the command.
    pub now_ms: u64,
    /// Where the request came from, as this node saw it.
    pub peer: SocketAddr,
    /// The issuers whose keys count here (`license.issuers`).
    pub trusted: &'a TrustedIssuers,
    /// The per-source limits.
    pub limits: &'a RequestLimits,
    /// The per-source registration buckets, kept by the server.
    pub registrations: &'a SourceRate,
    /// Key signatures this server already verified, kept by the server.
    pub seen: &'a SeenSignatures,
    /// The table.
    pub table: &'a dyn TableReader,
}

impl RequestContext<'_> {
    fn read<R>(&self, f: impl FnOnce(&LicenseTable) -> R) -> R {
        let mut f = Some(f);
        let mut out = None;
        self.table.read_table(&mut |table| {
            if let Some(f) = f.take() {
                out = Some(f(table));
            }
        });
        // Both readers of the tree (the table itself, the applier's lock)
        // call back exactly once; one that did not would be a bug of this
        // crate, and it would end this connection's task, not the node.
        out.expect("TableReader::read_table calls its function once")
    }
}

/// Maps a client's request to the table's command, after every check the
/// serving node makes (see the module docs); `who` is who the
/// connection's certificate names.
///
/// # Errors
/// - [`ServerError::Denied`]: the request is not this client's to make, a
///   key does not verify, or its source is over its limits;
/// - [`ServerError::Refused`]: what the table would refuse if it applied
///   the command now, with the table's own error.
///
/// Either way nothing was proposed.
pub fn command(
    request: Request,
    who: &ClientIdentity,
    ctx: &RequestContext<'_>,
) -> Result<Command, ServerError> {
    let now_ms = ctx.now_ms;
    let address = ctx.peer.to_string();
    let command = match request {
        Request::Show { .. } | Request::Status => return Err(RequestError::NotAChange.into()),
        Request::Register {
            id,
            serial,
            version,
            report,
        } => {
            let certified = own_id(who, &id, "register")?;
            if serial != certified {
                return Err(RequestError::NotOwnSerial {
                    certified: certified.to_owned(),
                    requested: serial,
                }
                .into());
            }
            limits::check_client_id(&id).map_err(CommandError::from)?;
            limits::check_serial(&serial).map_err(CommandError::from)?;
            limits::check_version(&version).map_err(CommandError::from)?;
            // Before anything costs more than a lookup: a flood of
            // registrations spends its tokens, not the node's CPU.
            ctx.registrations
                .take(ctx.peer.ip(), now_ms)
                .map_err(|retry_after_ms| RequestError::RegistrationRate {
                    source_address: ctx.peer.ip().to_string(),
                    per_s: ctx.limits.registrations_per_s_per_source,
                    retry_after_ms,
                })?;
            ctx.read(|table| check_source(table, &id, ctx))?;
            let report = verify_report(report, &serial, ctx)?;
            Command::Register {
                now_ms,
                id,
                serial,
                address,
                version,
                report,
            }
        }
        Request::Heartbeat { id, report } => {
            let serial = registered_as(who, &id, "send a heartbeat", ctx)?;
            let report = verify_report(report, &serial, ctx)?;
            Command::Heartbeat {
                now_ms,
                id,
                address,
                report,
            }
        }
        Request::Update { id, report } => {
            let serial = registered_as(who, &id, "send an update", ctx)?;
            let report = verify_report(report, &serial, ctx)?;
            Command::Update { now_ms, id, report }
        }
        Request::Acquire {
            id,
            license_type,
            count,
        } => {
            registered_as(who, &id, "acquire licenses", ctx)?;
            Command::Acquire {
                now_ms,
                id,
                license_type,
                count,
            }
        }
        Request::Release {
            id,
            license_type,
            count,
        } => {
            registered_as(who, &id, "release licenses", ctx)?;
            Command::Release {
                now_ms,
                id,
                license_type,
                count,
            }
        }
        Request::RemoveClient { id } => Command::RemoveClient {
            id,
            by: operator(who, "remove a client")?,
        },
        Request::InstallKey { server, key } => {
            let by = operator(who, "install a key")?;
            limits::check_server_name(&server).map_err(CommandError::from)?;
            let serial = ctx
                .read(|table| table.server_serial(&server).map(str::to_owned))
                .ok_or_else(|| CommandError::UnknownServer(server.clone()))?;
            let key = key
                .verified(ctx.trusted, &serial, now_ms / 1000)
                .map_err(RequestError::from)?;
            Command::InstallServerKey {
                now_ms,
                server,
                key,
                by,
            }
        }
        Request::RemoveKey { key_id } => Command::RemoveServerKey {
            key_id,
            by: operator(who, "remove a key")?,
        },
    };
    // A switch's command carries its certificate's issue time: the table
    // refuses it if the id has registered with a newer certificate since
    // (the switch was replaced), and a registration records it.
    let command = match who {
        ClientIdentity::Switch {
            issued_s: Some(issued_s),
            ..
        } if command.switch_id().is_some() => Command::Certified {
            issued_s: *issued_s,
            command: Box::new(command),
        },
        _ => command,
    };
    // What the table would refuse now is refused now, with its error.
    ctx.read(|table| table.check(&command))?;
    Ok(command)
}

/// The certificate's serial, if `who` is the switch of client id `id`.
fn own_id<'w>(who: &'w ClientIdentity, id: &str, what: &str) -> Result<&'w str, RequestError> {
    match who {
        ClientIdentity::Switch {
            id: certified,
            serial,
            ..
        } if certified == id => Ok(serial),
        ClientIdentity::Switch { id: certified, .. } => Err(RequestError::NotOwnId {
            certified: certified.clone(),
            requested: id.to_owned(),
        }),
        ClientIdentity::Operator { .. } => Err(RequestError::SwitchOnly {
            what: what.into(),
            who: who.to_string(),
        }),
    }
}

/// For a request of a registered client: `who` is its switch, the table
/// knows the id, and with the certificate's serial (the switch it holds
/// the id for registers first when replaced). The serial the keys are
/// bound to.
fn registered_as(
    who: &ClientIdentity,
    id: &str,
    what: &str,
    ctx: &RequestContext<'_>,
) -> Result<String, ServerError> {
    let certified = own_id(who, id, what)?;
    let registered = ctx.read(|table| table.client(id).map(|c| c.serial.clone()));
    match registered {
        None => Err(CommandError::UnknownClient(id.to_owned()).into()),
        Some(registered) if registered != certified => Err(RequestError::SerialMismatch {
            id: id.to_owned(),
            registered,
            certified: certified.to_owned(),
        }
        .into()),
        Some(registered) => Ok(registered),
    }
}

/// The operator `who` is, as the command records it.
fn operator(who: &ClientIdentity, what: &str) -> Result<Actor, RequestError> {
    match who {
        ClientIdentity::Operator { name } => Ok(Actor::Operator(name.clone())),
        ClientIdentity::Switch { .. } => Err(RequestError::OperatorOnly {
            what: what.into(),
            who: who.to_string(),
        }),
    }
}

/// A registration from this peer keeps its source within its client limit
/// (re-registering a client already counted for it is always fine).
fn check_source(table: &LicenseTable, id: &str, ctx: &RequestContext<'_>) -> Result<(), RequestError> {
    let source = ctx.peer.ip();
    let counted = table
        .client(id)
        .is_some_and(|c| source_of(&c.address) == Some(source));
    let max = ctx.limits.max_clients_per_source;
    if !counted && table.clients_from(source) >= usize::try_from(max).unwrap_or(usize::MAX) {
        return Err(RequestError::TooManyClients {
            source_address: source.to_string(),
            max,
        });
    }
    Ok(())
}

/// The switch's report with every key verified for the switch of `serial`
/// now. Bounds and duplicate ids first, so that no more keys are verified
/// than a switch may present.
fn verify_report(
    report: SwitchReport,
    serial: &str,
    ctx: &RequestContext<'_>,
) -> Result<ClientReport, ServerError> {
    let SwitchReport { builtin, keys, used } = report;
    if keys.len() > MAX_KEYS_PER_CLIENT {
        return Err(CommandError::TooManyKeys {
            count: keys.len(),
            max: MAX_KEYS_PER_CLIENT,
            per: "client".into(),
        }
        .into());
    }
    for map in [&builtin, &used] {
        if map.len() > MAX_TYPES_PER_REPORT {
            return Err(CommandError::TooManyTypes {
                count: map.len(),
                max: MAX_TYPES_PER_REPORT,
            }
            .into());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = keys.iter().find(|k| !seen.insert(k.id())) {
        return Err(CommandError::DuplicateKey(twice.id().to_owned()).into());
    }
    let now_s = ctx.now_ms / 1000;
    let keys = keys
        .iter()
        .map(|key: &SignedKey| key.verified_seen(ctx.trusted, ctx.seen, serial, now_s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RequestError::from)?;
    Ok(ClientReport { builtin, keys, used })
}

#[cfg(test)]
mod tests;

//! The operator views of `vipool show`: rows computed from a [`TableDump`],
//! rendered as aligned tables or JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::proto::{NodeStatus, TableDump};
use crate::table::pool::{self, Contributor};
use crate::table::{ClientState, LicenseType, VerifiedKey};

/// Which view (also the argument of `vipool show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Per type: total, used, available, contributed by whom.
    ServerTable,
    /// Per client: id, address, version, installed and used per type, state, last heard.
    ClientTable,
    /// Per client and type: built-in, installed, used from the pool.
    LicenseUsage,
    /// Clients up and down, and the pool per type.
    Summary,
    /// Per client: address, heartbeat requests, responses, total missed, last update.
    Heartbeat,
    /// Every counted key: id, who counts it, type, count, issuer, expiry,
    /// and who installed a server's key (the server from its key files,
    /// or an operator).
    Keys,
    /// The node: VRRP state, Raft role, term, commit index.
    Status,
}

/// A row of the server table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerTableRow {
    /// License type.
    pub license_type: LicenseType,
    /// Licenses in the pool.
    pub total: u64,
    /// Taken by clients.
    pub used: u64,
    /// `total - used`.
    pub available: i64,
    /// More used than there is.
    pub over_subscribed: bool,
    /// Who contributes how many (`server:NAME` or `client:ID`).
    pub contributed_by: BTreeMap<String, u64>,
}

/// A row of the client table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRow {
    /// Client id.
    pub id: String,
    /// Address last heard from.
    pub address: String,
    /// Software version.
    pub version: String,
    /// Installed licenses per type.
    pub installed: BTreeMap<LicenseType, u64>,
    /// Used from the pool per type.
    pub used: BTreeMap<LicenseType, u32>,
    /// Up or down.
    pub state: ClientState,
    /// Seconds since last heard.
    pub last_heard_s: u64,
}

/// A row of the license usage view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// Client id.
    pub client: String,
    /// License type.
    pub license_type: LicenseType,
    /// Built-in licenses.
    pub builtin: u32,
    /// Installed licenses.
    pub installed: u64,
    /// Used from the pool.
    pub used: u32,
}

/// The aggregate summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Clients up.
    pub clients_up: usize,
    /// Clients down.
    pub clients_down: usize,
    /// Keys installed on the servers.
    pub server_keys: usize,
    /// The pool per type.
    pub pool: Vec<ServerTableRow>,
    /// Types over-subscribed now.
    pub over_subscribed: Vec<LicenseType>,
}

/// A row of the heartbeat statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeartbeatRow {
    /// Client id.
    pub client: String,
    /// Client address.
    pub address: String,
    /// Heartbeat requests this node received.
    pub requests: u64,
    /// Heartbeat answers this node sent.
    pub responses: u64,
    /// Heartbeats missed in total.
    pub missed_total: u64,
    /// Seconds since the last update.
    pub last_update_s: u64,
}

/// A row of the keys view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    /// The key's id.
    pub key_id: String,
    /// Who counts it (`server:NAME` or `client:ID`).
    pub counted_for: String,
    /// The serial it is bound to.
    pub serial: String,
    /// License type.
    pub license_type: LicenseType,
    /// Licenses.
    pub count: u32,
    /// Its issuer.
    pub issuer: String,
    /// Evaluation keys: seconds until it stops counting (0 once it has).
    pub expires_in_s: Option<u64>,
    /// A server's key: who installed it (`server "NAME"` from its key
    /// files, `operator "NAME"`); nothing for a client's.
    pub installed_by: Option<String>,
}

/// The server table.
pub fn server_table(dump: &TableDump) -> Vec<ServerTableRow> {
    let config = dump.config();
    let mut by_type = pool::contributors(
        &config,
        dump.state.clients.values(),
        dump.state.server_keys.values(),
    );
    dump.pool
        .iter()
        .map(|(license_type, entry)| ServerTableRow {
            license_type: license_type.clone(),
            total: entry.total,
            used: entry.used,
            available: entry.available(),
            over_subscribed: entry.over_subscribed(),
            contributed_by: by_type
                .remove(license_type)
                .unwrap_or_default()
                .into_iter()
                .map(|(who, n)| (who.to_string(), n))
                .collect(),
        })
        .collect()
}

fn seconds_since(dump: &TableDump, at_ms: u64) -> u64 {
    dump.now_ms.saturating_sub(at_ms) / 1000
}

/// The client table.
pub fn client_table(dump: &TableDump) -> Vec<ClientRow> {
    dump.state
        .clients
        .values()
        .map(|c| {
            let mut installed = BTreeMap::new();
            for key in c.keys.iter().map(|k| &k.key) {
                *installed.entry(key.license_type.clone()).or_default() += u64::from(key.count);
            }
            ClientRow {
                id: c.id.clone(),
                address: c.address.clone(),
                version: c.version.clone(),
                installed,
                used: c.used.clone(),
                state: c.state,
                last_heard_s: seconds_since(dump, c.last_heard_ms),
            }
        })
        .collect()
}

/// License usage per client and type (only types the client has something of).
pub fn license_usage(dump: &TableDump) -> Vec<UsageRow> {
    let mut rows = Vec::new();
    for c in dump.state.clients.values() {
        for license_type in dump.types.keys() {
            let row = UsageRow {
                client: c.id.clone(),
                license_type: license_type.clone(),
                builtin: c.builtin.get(license_type).copied().unwrap_or(0),
                installed: c.installed(license_type),
                used: c.used_of(license_type),
            };
            if row.builtin > 0 || row.installed > 0 || row.used > 0 {
                rows.push(row);
            }
        }
    }
    rows
}

/// The summary.
pub fn summary(dump: &TableDump) -> Summary {
    let pool = server_table(dump);
    let clients_up = dump
        .state
        .clients
        .values()
        .filter(|c| c.state == ClientState::Up)
        .count();
    Summary {
        clients_up,
        clients_down: dump.state.clients.len() - clients_up,
        server_keys: dump.state.server_keys.len(),
        over_subscribed: pool
            .iter()
            .filter(|r| r.over_subscribed)
            .map(|r| r.license_type.clone())
            .collect(),
        pool,
    }
}

/// Every key the table counts: the servers' first, then the clients', each
/// by key id.
pub fn keys(dump: &TableDump) -> Vec<KeyRow> {
    let row = |key: &VerifiedKey, counted_for: String, installed_by: Option<String>| KeyRow {
        key_id: key.key_id.clone(),
        counted_for,
        serial: key.serial.clone(),
        license_type: key.key.license_type.clone(),
        count: key.key.count,
        issuer: key.issuer.clone(),
        expires_in_s: key
            .key
            .expires_at_ms
            .map(|at| at.saturating_sub(dump.now_ms) / 1000),
        installed_by,
    };
    let servers = dump.state.server_keys.values().map(|k| {
        row(
            &k.key,
            Contributor::Server(k.server.clone()).to_string(),
            Some(k.installed_by.to_string()),
        )
    });
    let clients = dump.state.clients.values().flat_map(|c| {
        c.keys
            .iter()
            .map(|k| row(k, Contributor::Client(c.id.clone()).to_string(), None))
    });
    servers.chain(clients).collect()
}

/// Heartbeat statistics.
pub fn heartbeat(dump: &TableDump) -> Vec<HeartbeatRow> {
    dump.state
        .clients
        .values()
        .map(|c| {
            let counters = dump.heartbeats.get(&c.id).cloned().unwrap_or_default();
            HeartbeatRow {
                client: c.id.clone(),
                address: c.address.clone(),
                requests: counters.requests,
                responses: counters.responses,
                missed_total: c.stats.missed_total,
                last_update_s: seconds_since(dump, c.last_heard_ms),
            }
        })
        .collect()
}

/// `view` of `dump` as JSON.
///
/// # Errors
/// Never in practice: every row type serializes.
pub fn json(view: View, dump: &TableDump) -> serde_json::Result<serde_json::Value> {
    match view {
        View::ServerTable => serde_json::to_value(server_table(dump)),
        View::ClientTable => serde_json::to_value(client_table(dump)),
        View::LicenseUsage => serde_json::to_value(license_usage(dump)),
        View::Summary => serde_json::to_value(summary(dump)),
        View::Heartbeat => serde_json::to_value(heartbeat(dump)),
        View::Keys => serde_json::to_value(keys(dump)),
        View::Status => serde_json::to_value(&dump.status),
    }
}

fn counts<V: std::fmt::Display>(map: &BTreeMap<impl std::fmt::Display, V>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `view` of `dump` as an aligned text table.
pub fn text(view: View, dump: &TableDump) -> String {
    match view {
        View::ServerTable => {
            let rows = server_table(dump).into_iter().flat_map(pool_rows).collect();
            table(
                &[
                    "type",
                    "total",
                    "used",
                    "available",
                    "over-subscribed",
                    "contributed by",
                ],
                rows,
            )
        }
        View::ClientTable => {
            let rows = client_table(dump)
                .into_iter()
                .map(|r| {
                    vec![
                        r.id,
                        r.address,
                        r.version,
                        counts(&r.installed),
                        counts(&r.used),
                        r.state.to_string(),
                        r.last_heard_s.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "client",
                    "address",
                    "version",
                    "installed",
                    "used",
                    "state",
                    "last heard (s)",
                ],
                rows,
            )
        }
        View::LicenseUsage => {
            let rows = license_usage(dump)
                .into_iter()
                .map(|r| {
                    vec![
                        r.client,
                        r.license_type.to_string(),
                        r.builtin.to_string(),
                        r.installed.to_string(),
                        r.used.to_string(),
                    ]
                })
                .collect();
            table(
                &["client", "type", "built-in", "installed", "used from pool"],
                rows,
            )
        }
        View::Summary => {
            let s = summary(dump);
            let mut out = format!(
                "clients: {} up, {} down; server keys: {}\n",
                s.clients_up, s.clients_down, s.server_keys
            );
            if !s.over_subscribed.is_empty() {
                let names: Vec<String> = s.over_subscribed.iter().map(ToString::to_string).collect();
                out.push_str(&format!("OVER-SUBSCRIBED: {}\n", names.join(", ")));
            }
            let rows = s.pool.into_iter().map(|r| pool_cells(r)[..5].to_vec()).collect();
            out.push_str(&table(
                &["type", "total", "used", "available", "over-subscribed"],
                rows,
            ));
            out
        }
        View::Heartbeat => {
            let rows = heartbeat(dump)
                .into_iter()
                .map(|r| {
                    vec![
                        r.client,
                        r.address,
                        r.requests.to_string(),
                        r.responses.to_string(),
                        r.missed_total.to_string(),
                        r.last_update_s.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "client",
                    "address",
                    "requests",
                    "responses",
                    "total missed",
                    "last update (s)",
                ],
                rows,
            )
        }
        View::Keys => {
            let rows = keys(dump)
                .into_iter()
                .map(|r| {
                    vec![
                        r.key_id,
                        r.counted_for,
                        r.serial,
                        r.license_type.to_string(),
                        r.count.to_string(),
                        r.issuer,
                        r.expires_in_s.map_or_else(
                            || "never".into(),
                            |s| format!("in {}d {}h", s / 86_400, s % 86_400 / 3600),
                        ),
                        r.installed_by.unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            table(
                &[
                    "key",
                    "counted for",
                    "serial",
                    "type",
                    "count",
                    "issuer",
                    "expires",
                    "installed by",
                ],
                rows,
            )
        }
        View::Status => status_text(&dump.status),
    }
}

fn pool_cells(r: ServerTableRow) -> Vec<String> {
    vec![
        r.license_type.to_string(),
        r.total.to_string(),
        r.used.to_string(),
        r.available.to_string(),
        if r.over_subscribed { "yes" } else { "no" }.into(),
        counts(&r.contributed_by),
    ]
}

/// Widest a "contributed by" line gets before the rest goes on lines of
/// its own: with five switches one line was over 150 characters.
const CONTRIBUTORS_WIDTH: usize = 48;

/// A server-table row, its contributors wrapped onto continuation rows
/// (every other cell empty) of at most [`CONTRIBUTORS_WIDTH`] characters.
fn pool_rows(r: ServerTableRow) -> Vec<Vec<String>> {
    let lines = wrap_counts(&r.contributed_by, CONTRIBUTORS_WIDTH);
    let mut first = pool_cells(r);
    let columns = first.len();
    let mut lines = lines.into_iter();
    if let Some(line) = lines.next() {
        first[columns - 1] = line;
    }
    let mut rows = vec![first];
    for line in lines {
        let mut row = vec![String::new(); columns - 1];
        row.push(line);
        rows.push(row);
    }
    rows
}

/// `counts` as lines of at most `width` characters (an entry longer than
/// that has a line of its own).
fn wrap_counts<V: std::fmt::Display>(map: &BTreeMap<impl std::fmt::Display, V>, width: usize) -> Vec<String> {
    if map.is_empty() {
        return vec!["-".into()];
    }
    let mut lines = Vec::new();
    let mut line = String::new();
    for (k, v) in map {
        let entry = format!("{k}={v}");
        if !line.is_empty() && line.chars().count() + 1 + entry.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&entry);
    }
    lines.push(line);
    lines
}

fn status_text(s: &NodeStatus) -> String {
    status_table(&[(String::new(), Ok(s.clone()))])
}

/// The status of several nodes, one row each; a node that did not answer
/// shows why in place of its figures.
pub fn status_table(nodes: &[(String, Result<NodeStatus, String>)]) -> String {
    let rows = nodes
        .iter()
        .map(|(asked, status)| match status {
            Ok(s) => vec![
                s.node.clone(),
                s.vip.clone().unwrap_or_else(|| "-".into()),
                if s.serving { "yes" } else { "no" }.into(),
                s.vrrp_state.clone(),
                s.raft_role.clone(),
                s.term.to_string(),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.connections.to_string(),
                s.bad_frames.to_string(),
            ],
            // Why goes below the table: in a cell it would widen the
            // column for every row.
            Err(_) => vec![asked.clone(), "-".into(), "no".into(), "unreachable".into()],
        })
        .collect();
    let mut out = table(
        &[
            "node",
            "vip",
            "serving",
            "vrrp",
            "raft role",
            "term",
            "commit",
            "applied",
            "connections",
            "bad frames",
        ],
        rows,
    );
    for (asked, status) in nodes {
        if let Err(why) = status {
            out.push_str(&format!("unreachable ({asked}): {why}\n"));
        }
        if let Ok(s) = status {
            for warning in &s.warnings {
                out.push_str(&format!("warning ({}): {warning}\n", s.node));
            }
            if !s.refused.is_empty() {
                let causes: Vec<String> = s.refused.iter().map(|(c, n)| format!("{c} {n}")).collect();
                out.push_str(&format!("refused ({}): {}\n", s.node, causes.join(", ")));
            }
            if s.paced > 0 {
                out.push_str(&format!(
                    "paced ({}): {} requests waited for their client's rate \
                     (license.requests_per_s_per_client)\n",
                    s.node, s.paced
                ));
            }
        }
    }
    out
}

/// Left-aligned columns separated by two spaces, a header and a rule.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let out = table(&["a", "long header"], vec![vec!["wide cell".into(), "x".into()]]);
        assert_eq!(
            out,
            "a          long header\n---------  -----------\nwide cell  x\n"
        );
    }

    /// A node that does not answer keeps the table narrow: its error goes
    /// on a line below, not in the vip column.
    #[test]
    fn an_unreachable_node_is_explained_below_the_table() {
        let why = "connection: Connection refused (os error 111); ".repeat(4);
        let up = NodeStatus {
            node: "primary".into(),
            vip: Some("192.0.2.100".into()),
            serving: true,
            vrrp_state: "master".into(),
            raft_role: "leader".into(),
            ..NodeStatus::default()
        };
        let out = status_table(&[
            ("192.0.2.11:4334".into(), Ok(up)),
            ("192.0.2.12:4334".into(), Err(why.clone())),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("node"), "{out}");
        assert!(lines[3].starts_with("192.0.2.12:4334"), "{out}");
        assert!(lines[3].contains("unreachable"), "{out}");
        assert!(!lines[3].contains("refused"), "{out}");
        for line in &lines[..4] {
            assert!(line.chars().count() < 120, "{out}");
        }
        assert_eq!(lines[4], format!("unreachable (192.0.2.12:4334): {why}"), "{out}");
    }

    /// Five switches and two servers contributing: no line of the table
    /// is over 100 characters, and every contributor is still listed.
    #[test]
    fn server_table_wraps_contributors() {
        let mut contributed_by = BTreeMap::new();
        contributed_by.insert("server:primary".to_owned(), 16);
        contributed_by.insert("server:backup".to_owned(), 16);
        for n in 1..=5 {
            contributed_by.insert(format!("client:switch-{n:04}"), 4);
        }
        let row = ServerTableRow {
            license_type: LicenseType::new("AP"),
            total: 52,
            used: 3,
            available: 49,
            over_subscribed: false,
            contributed_by: contributed_by.clone(),
        };
        let rows = pool_rows(row);
        assert!(rows.len() > 1, "{rows:?}");
        let out = table(
            &[
                "type",
                "total",
                "used",
                "available",
                "over-subscribed",
                "contributed by",
            ],
            rows,
        );
        for line in out.lines() {
            assert!(line.chars().count() <= 100, "{}: {out}", line.chars().count());
        }
        for (k, v) in &contributed_by {
            assert_eq!(out.matches(&format!("{k}={v}")).count(), 1, "{k}: {out}");
        }
        // The continuation lines start in the contributors' column.
        let column = out.lines().next().unwrap().find("contributed by").unwrap();
        for line in out.lines().skip(3) {
            assert_eq!(line.len() - line.trim_start().len(), column, "{out}");
        }
        assert_eq!(wrap_counts(&BTreeMap::<String, u64>::new(), 10), ["-"]);
    }
}

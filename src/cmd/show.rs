//! `vipool show VIEW`: the operator views, as aligned tables or JSON.

use clap::Args as ClapArgs;
use vipool::client::Connection;
use vipool::proto::TableDump;
use vipool::views::{self, View};

/// Options of `vipool show`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The view.
    #[arg(value_enum)]
    view: View,
    /// The server to ask: ADDRESS:PORT (a node's own address works for
    /// views). Repeat it: `status` asks every one, the other views the
    /// first that answers.
    #[arg(long, default_value = "127.0.0.1:4333")]
    server: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Fetches the table from the server and prints the view.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let view = args.view;
    if let View::Status = view {
        return status(&args.server, args.json).await;
    }
    let mut last_error = None;
    for server in &args.server {
        match fetch(server).await {
            Ok(dump) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&views::json(view, &dump)?)?);
                } else {
                    print!("{}", views::text(view, &dump));
                }
                return Ok(());
            }
            Err(e) => last_error = Some(e.context(format!("asking {server}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no --server given")))
}

async fn fetch(server: &str) -> anyhow::Result<TableDump> {
    let mut conn = Connection::connect(server).await?;
    Ok(conn.show().await?)
}

/// Every node's status, one row each, even when some do not answer.
async fn status(servers: &[String], json: bool) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for server in servers {
        let status = fetch(server)
            .await
            .map(|d| d.status)
            .map_err(|e| format!("{e:#}"));
        nodes.push((server.clone(), status));
    }
    if json {
        let values: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(server, status)| match status {
                Ok(s) => serde_json::to_value(s),
                Err(why) => Ok(serde_json::json!({ "server": server, "error": why })),
            })
            .collect::<Result<_, _>>()?;
        let out = if values.len() == 1 {
            values[0].clone()
        } else {
            serde_json::Value::Array(values)
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", views::status_table(&nodes));
    }
    anyhow::ensure!(nodes.iter().any(|(_, s)| s.is_ok()), "no server answered");
    Ok(())
}

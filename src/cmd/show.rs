//! `vipool show VIEW`: the operator views, as aligned tables or JSON.

use clap::Args as ClapArgs;
use vipool::proto::TableDump;
use vipool::tls::ClientTls;
use vipool::views::{self, View};

use vipool::client::ClientError;

use super::tls_args::{connect, operator_error, operator_hint, Creds};

/// Options of `vipool show`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The view.
    #[arg(value_enum)]
    view: View,
    /// The operator endpoint to ask: ADDRESS:PORT (`license.operator_listen`,
    /// by default each node's loopback 127.0.0.1:4334). Repeat it: `status`
    /// asks every one, the other views the first that answers.
    #[arg(long, default_value = "127.0.0.1:4334")]
    server: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    creds: Creds,
}

/// Fetches the table from the server and prints the view.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let view = args.view;
    let tls = args.creds.operator()?;
    if let View::Status = view {
        return status(&args.server, args.json, tls.as_ref()).await;
    }
    let mut last_error = None;
    for server in &args.server {
        match fetch(server, tls.as_ref()).await {
            Ok(dump) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&views::json(view, &dump)?)?);
                } else {
                    print!("{}", views::text(view, &dump));
                }
                return Ok(());
            }
            Err(e) => last_error = Some(operator_error(server, e)),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no --server given")))
}

async fn fetch(server: &str, tls: Option<&ClientTls>) -> Result<TableDump, ClientError> {
    let mut conn = connect(server, tls).await?;
    conn.show().await
}

/// Every node's status, one row each, even when some do not answer.
async fn status(servers: &[String], json: bool, tls: Option<&ClientTls>) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for server in servers {
        let status = async {
            let mut conn = connect(server, tls).await?;
            conn.status().await
        }
        .await
        .map_err(|e| match operator_hint(&e) {
            Some(hint) => format!("{e}; {hint}"),
            None => e.to_string(),
        });
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

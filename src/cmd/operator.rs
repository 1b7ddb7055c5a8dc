//! `vipool operator`: an operator's changes to the table, committed
//! through the replicated log like any other and logged by the VIP holder
//! with the operator's name.
//!
//! ```text
//! vipool operator --server 192.0.2.11:4334 remove-client sw-17
//! vipool operator --server 192.0.2.11:4334 install-key backup vpk1.…      # or @FILE, -
//! vipool operator --server 192.0.2.11:4334 remove-key 4f1c9a07d2e8b3a6
//! ```
//!
//! Changes go to the operator endpoint of the serving node (the VIP
//! holder; the other answers "not the license server"), with an operator's
//! certificate (`vipool pki operator`): the serving node logs the change
//! with the operator's name. A key for a server must be bound to that
//! server's serial, which each server announces in the table. A key
//! installed this way stays until an operator removes it or it expires.

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use vipool::table::Pool;

use super::license::read_keys;
use super::tls_args::{connect, operator_error, Creds};

/// Options of `vipool operator`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The serving node's operator endpoint: ADDRESS:PORT
    /// (`license.operator_listen`; by default its loopback, 127.0.0.1:4334).
    #[arg(long, default_value = "127.0.0.1:4334")]
    server: String,
    #[command(flatten)]
    creds: Creds,
    #[command(subcommand)]
    command: Change,
}

#[derive(Debug, Subcommand)]
enum Change {
    /// Remove a client and everything it contributes (a switch taken out
    /// of service, or replaced under another id).
    RemoveClient {
        /// The client id.
        id: String,
    },
    /// Install keys on a server of the pair: a key line, `-` (key lines on
    /// standard input) or `@FILE`; each must be bound to that server's serial.
    InstallKey {
        /// The server (its node name).
        server: String,
        /// The key(s).
        key: String,
    },
    /// Remove a server's key by its key id.
    RemoveKey {
        /// The key id.
        key_id: String,
    },
}

/// Sends the change and prints the pool after it.
///
/// # Errors
/// The server cannot be reached, or refuses the change (the error says why).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let tls = args.creds.operator()?;
    let mut conn = connect(&args.server, tls.as_ref())
        .await
        .map_err(|e| operator_error(&args.server, e))?;
    let pool = match &args.command {
        Change::RemoveClient { id } => {
            let pool = conn.remove_client(id).await?;
            println!("removed client {id:?}");
            pool
        }
        Change::InstallKey { server, key } => {
            let mut pool = None;
            for key in read_keys(key)? {
                let key_id = key.id().to_owned();
                pool = Some(
                    conn.install_key(server, key)
                        .await
                        .with_context(|| format!("installing key {key_id} on {server}"))?,
                );
                println!("installed key {key_id} on server {server:?}");
            }
            pool.unwrap_or_default()
        }
        Change::RemoveKey { key_id } => {
            let pool = conn.remove_key(key_id).await?;
            println!("removed server key {key_id:?}");
            pool
        }
    };
    print_pool(&pool);
    Ok(())
}

fn print_pool(pool: &Pool) {
    for (license_type, entry) in pool {
        println!(
            "  {license_type}: total {}, used {}, available {}{}",
            entry.total,
            entry.used,
            entry.available(),
            if entry.over_subscribed() {
                " (over-subscribed)"
            } else {
                ""
            }
        );
    }
}

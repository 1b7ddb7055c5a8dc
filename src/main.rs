//! `vipool`: the license server daemon and its operator tools.

use clap::{Parser, Subcommand};

mod cmd;

/// vipool: a high-availability license server pair for network switches.
#[derive(Debug, Parser)]
#[command(name = "vipool", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Log lines as text or as JSON objects (for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = cmd::logging::LogFormat::Text)]
    log_format: cmd::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one VRRP instance in the foreground (like a one-instance keepalived).
    Vrrp(cmd::vrrp::Args),
    /// Run one server of the pair: VRRP, the replicated license table and the license server.
    Node(cmd::node::Args),
    /// Run the optional vote-only third member of a pair (never holds the VIP).
    Witness(cmd::witness::Args),
    /// Run a standalone license server: one node, no replication, no VRRP (development, tests).
    Serve(cmd::serve::Args),
    /// Run simulated switches (license clients) against a license server.
    Client(cmd::client::Args),
    /// Show the license tables and node status as an operator.
    Show(cmd::show::Args),
    /// An operator's changes: remove a client, install or remove a server's key.
    Operator(cmd::operator::Args),
    /// Check a node or witness configuration file and print it with every default filled in.
    CheckConfig(cmd::check_config::Args),
    /// The pair's certificate authority: create it, issue member certificates, show one.
    Pki(cmd::pki::Args),
    /// Signed license keys: make an issuer, issue keys, verify and show them.
    License(cmd::license::Args),
    /// Create the raft log of a member of a brand-new pair (once, before its first start).
    Init(cmd::init::Args),
    /// Acknowledge a split-brain yield file (clears its warning in `show status`).
    AckYield(cmd::ack_yield::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Write the man pages (vipool.1 and one per subcommand) into a directory.
    Manpages(cmd::completions::ManArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cmd::logging::init(&cli.log, cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", cmd::report::report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Vrrp(args) => runtime.block_on(cmd::vrrp::run(args)),
        Command::Node(args) => runtime.block_on(cmd::node::run(args)),
        Command::Witness(args) => runtime.block_on(cmd::witness::run(args)),
        Command::Serve(args) => runtime.block_on(cmd::serve::run(args)),
        Command::Client(args) => runtime.block_on(cmd::client::run(args)),
        Command::Show(args) => runtime.block_on(cmd::show::run(args)),
        Command::Operator(args) => runtime.block_on(cmd::operator::run(args)),
        Command::CheckConfig(args) => cmd::check_config::run(args),
        Command::Pki(args) => cmd::pki::run(args),
        Command::License(args) => cmd::license::run(args),
        Command::Init(args) => cmd::init::run(args),
        Command::AckYield(args) => cmd::ack_yield::run(args),
        Command::Completions(args) => cmd::completions::completions::<Cli>(args),
        Command::Manpages(args) => cmd::completions::manpages::<Cli>(args),
    }
}

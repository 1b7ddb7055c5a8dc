//! `vipool vrrp`: one VRRP instance in the foreground.
//!
//! Human-readable logs go to stderr. With `--json`, one JSON object per line
//! goes to stdout: `started`, every `state` change, `status` on SIGUSR1 and
//! `exit` with the final counters, so scripts and tests can follow it.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, ValueEnum};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;
use vrrp::proto::{Config, V3Checksum};
use vrrp::sys::{GarpConfig, Speaker, SpeakerConfig};
use vrrp::wire::{Auth, Version};

/// Options of `vipool vrrp`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Interface on the broadcast domain shared with the peer.
    #[arg(long)]
    interface: String,
    /// Virtual router id (1-255); both peers must use the same.
    #[arg(long)]
    vrid: u8,
    /// Priority (1-254; 255 only for the owner of the virtual address).
    #[arg(long, default_value_t = 100)]
    priority: u8,
    /// Virtual address with prefix length, e.g. 192.0.2.10/24; repeat for more.
    #[arg(long = "vip", required = true, value_parser = parse_cidr)]
    vips: Vec<(Ipv4Addr, u8)>,
    /// Advertisement interval in milliseconds (v3: multiple of 10; v2: of 1000).
    #[arg(long, default_value_t = 1000)]
    advert_interval_ms: u32,
    /// VRRP version.
    #[arg(long, default_value = "3", value_parser = ["2", "3"])]
    version: String,
    /// Do not preempt a lower-priority master.
    #[arg(long)]
    no_preempt: bool,
    /// Outrank the master this long before preempting it.
    #[arg(long, default_value_t = 0)]
    preempt_delay_ms: u64,
    /// Do not accept traffic to the virtual addresses unless owner (Accept_Mode off).
    #[arg(long)]
    no_accept: bool,
    /// VRRPv2 simple-text password (at most 8 bytes).
    #[arg(long)]
    auth_pass: Option<String>,
    /// Our own address on the interface (default: its first IPv4 address).
    #[arg(long)]
    source: Option<Ipv4Addr>,
    /// Send adverts to this peer instead of 224.0.0.18; repeat for more.
    #[arg(long = "unicast-peer")]
    unicast_peers: Vec<Ipv4Addr>,
    /// Accept adverts only from this source address (the peer's own
    /// address), multicast or unicast; repeat for more. Adverts from any
    /// other host are dropped and counted as unknown_peer. Default: any
    /// source (unicast peers filter as well).
    #[arg(long = "trusted-source", value_name = "ADDR")]
    trusted_sources: Vec<Ipv4Addr>,
    /// VRRPv3 checksum form.
    #[arg(long, value_enum, default_value_t = ChecksumArg::PseudoHeader)]
    v3_checksum: ChecksumArg,
    /// Gratuitous ARP announcements (request and reply) per address on
    /// takeover (0 disables).
    #[arg(long, default_value_t = 3)]
    garp_count: u32,
    /// Delay between two announcements of the burst.
    #[arg(long, default_value_t = 100)]
    garp_interval_ms: u64,
    /// One more announcement this long after takeover (repeatable; default
    /// 1000 and 2000: beyond hosts' neighbour locktime).
    #[arg(long = "garp-repeat-after-ms", value_name = "MS", default_values_t = [1000u64, 2000])]
    garp_repeat_after_ms: Vec<u64>,
    /// While master, repeat the gratuitous ARP burst this often.
    #[arg(long)]
    garp_refresh_s: Option<u64>,
    /// Pair handoff: on the master's priority-0 advert take over at once, not
    /// after Skew_Time. Only for a virtual router with exactly one backup.
    #[arg(long)]
    pair_handoff: bool,
    /// Use the virtual MAC 00:00:5e:00:01:VRID on a macvlan interface.
    #[arg(long)]
    vmac: bool,
    /// Print machine-readable events on stdout, one JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ChecksumArg {
    /// RFC 5798: over the IPv4 pseudo-header and the message.
    PseudoHeader,
    /// Over the message only, like VRRPv2 (older VRRPv3 peers).
    MessageOnly,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or("expected ADDRESS/PREFIX, e.g. 192.0.2.10/24")?;
    let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("prefix {len}: {e}"))?;
    if len > 32 {
        return Err(format!("prefix length {len} is more than 32"));
    }
    Ok((addr, len))
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn emit(enabled: bool, value: serde_json::Value) {
    if enabled {
        println!("{value}");
    }
}

impl Args {
    fn speaker_config(&self) -> anyhow::Result<SpeakerConfig> {
        let version = if self.version == "2" {
            Version::V2
        } else {
            Version::V3
        };
        if !self.advert_interval_ms.is_multiple_of(10) {
            bail!(
                "--advert-interval-ms {} is not a multiple of 10 ms (VRRP counts centiseconds)",
                self.advert_interval_ms
            );
        }
        let interval_cs = u16::try_from(self.advert_interval_ms / 10)
            .context("--advert-interval-ms is too large (at most 40950 for v3, 255000 for v2)")?;
        let auth = match (&self.auth_pass, version) {
            (None, _) => Auth::None,
            (Some(_), Version::V3) => bail!("--auth-pass needs --version 2: VRRPv3 has no authentication"),
            (Some(p), _) => Auth::simple_text(p.as_bytes()).context("--auth-pass is longer than 8 bytes")?,
        };
        let prefix_len = self.vips[0].1;
        if self.vips.iter().any(|(_, l)| *l != prefix_len) {
            bail!("every --vip must have the same prefix length");
        }
        let vrrp = Config {
            version,
            vrid: self.vrid,
            priority: self.priority,
            advert_interval_cs: interval_cs,
            preempt: !self.no_preempt,
            preempt_delay: Duration::from_millis(self.preempt_delay_ms),
            accept_mode: !self.no_accept,
            addresses: self.vips.iter().map(|(a, _)| *a).collect(),
            primary_address: self.source.unwrap_or(Ipv4Addr::UNSPECIFIED),
            auth,
            v3_checksum: match self.v3_checksum {
                ChecksumArg::PseudoHeader => V3Checksum::PseudoHeader,
                ChecksumArg::MessageOnly => V3Checksum::MessageOnly,
            },
            unicast_peers: self.unicast_peers.clone(),
            trusted_sources: self.trusted_sources.clone(),
            pair_handoff: self.pair_handoff,
        };
        // Validate before touching the system, with the field named.
        let mut probe = vrrp.clone();
        if probe.primary_address.is_unspecified() {
            // Any address the rules would not trip over on its own.
            probe.primary_address = (1..=254)
                .rev()
                .map(|n| Ipv4Addr::new(192, 0, 2, n))
                .find(|a| !probe.trusted_sources.contains(a))
                .unwrap_or(Ipv4Addr::new(192, 0, 2, 254));
            if probe.priority == 255 {
                probe.primary_address = probe.addresses[0];
            }
        }
        probe.validate().context("invalid VRRP configuration")?;
        Ok(SpeakerConfig {
            interface: self.interface.clone(),
            vrrp,
            prefix_len,
            garp: GarpConfig {
                count: self.garp_count,
                interval: Duration::from_millis(self.garp_interval_ms),
                repeat_after: self
                    .garp_repeat_after_ms
                    .iter()
                    .map(|&ms| Duration::from_millis(ms))
                    .collect(),
                refresh: self.garp_refresh_s.map(Duration::from_secs),
            },
            virtual_mac: self.vmac,
        })
    }
}

/// Runs until SIGTERM or SIGINT, then leaves gracefully (priority 0) and exits.
///
/// # Errors
/// A bad configuration or an I/O error that stopped the speaker.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.speaker_config()?;
    let json = args.json;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;

    let mut speaker = Speaker::start(config.clone())
        .await
        .with_context(|| format!("cannot start VRRP on {}", config.interface))?;
    let mut transitions = speaker.transitions();
    let status = speaker.status();
    let primary = status.borrow().primary_address;
    info!(interface = %config.interface, vrid = config.vrrp.vrid, priority = config.vrrp.priority, %primary, "VRRP instance started");
    emit(
        json,
        json!({"event": "started", "pid": std::process::id(), "primary": primary, "at_ms": unix_ms(SystemTime::now())}),
    );

    let reason = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = usr1.recv() => {
                let s = status.borrow().clone();
                emit(json, json!({"event": "status", "status": s}));
            }
            Ok(t) = transitions.recv() => {
                emit(json, json!({"event": "state", "from": t.from, "to": t.to, "reason": t.reason, "at_ms": unix_ms(t.at)}));
            }
            result = speaker.stopped() => {
                result.context("VRRP speaker stopped")?;
                bail!("VRRP speaker stopped unexpectedly");
            }
        }
    };
    info!(
        signal = reason,
        "leaving: priority 0 advert, removing virtual addresses"
    );
    let counters = speaker.shutdown().await.context("shutdown")?;
    while let Ok(t) = transitions.try_recv() {
        emit(
            json,
            json!({"event": "state", "from": t.from, "to": t.to, "reason": t.reason, "at_ms": unix_ms(t.at)}),
        );
    }
    info!(?counters, "stopped");
    emit(
        json,
        json!({"event": "exit", "counters": counters, "at_ms": unix_ms(SystemTime::now())}),
    );
    Ok(())
}

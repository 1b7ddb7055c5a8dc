//! The status page: one read-only HTML page, plain HTML and CSS (no
//! script, no framework, nothing fetched), rendered from one
//! [`Observed`]. It reloads itself every 5 s (a `meta` refresh).
//!
//! Every text that reaches the page goes through [`escape`]: client ids,
//! refusal causes and warnings can carry what a host on the network sent.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{FailoverKind, Observed};

/// `text` safe inside HTML text and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:12px 20px}header h1{font-size:18px;margin:0}\
header p{margin:2px 0 0;color:#b8bfcc}main{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));\
gap:14px;padding:14px 20px}section{background:#fff;border-radius:6px;padding:12px 16px;\
box-shadow:0 1px 2px #0002}h2{font-size:15px;margin:0 0 8px}h2:not(:first-child){margin-top:14px}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eceef2}th{font-weight:600;color:#555}\
.holder{font-size:20px;font-weight:600}.ok{color:#13795b}.bad{color:#b42318}.muted{color:#777}\
.bar{background:#e6e8ee;border-radius:3px;height:12px;min-width:120px}\
.fill{background:#3b73d9;height:12px;border-radius:3px}.over{background:#b42318}\
ul{margin:0;padding-left:18px}li{margin:2px 0}.warn li{color:#8a4b00}";

/// The page for `o`.
pub fn status_page(o: &Observed) -> String {
    let s = &o.server.status;
    let mut h = String::with_capacity(16 * 1024);
    let now = SystemTime::now();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>vipool {node}</title>\
         <style>{STYLE}</style></head><body><header><h1>vipool: {node}</h1>\
         <p>release {release} &middot; VIP {vip} &middot; {time} UTC</p></header><main>",
        node = escape(&s.node),
        release = escape(env!("CARGO_PKG_VERSION")),
        vip = escape(s.vip.as_deref().unwrap_or("none")),
        time = utc(now),
    );
    holder(&mut h, o);
    roles(&mut h, o);
    pool(&mut h, o);
    clients(&mut h, o);
    warnings(&mut h, o);
    timeline(&mut h, o);
    h.push_str("</main></body></html>\n");
    h
}

fn holder(h: &mut String, o: &Observed) {
    let s = &o.server.status;
    h.push_str("<section id=\"vip\"><h2>Who holds the VIP</h2>");
    match o.vip_holder() {
        Some((name, addr)) => {
            let who = name.as_deref().unwrap_or("an unknown host");
            let addr = addr.map(|a| format!(" ({a})")).unwrap_or_default();
            let _ = write!(
                h,
                "<p class=\"holder\" id=\"holder\">{}{}</p>",
                escape(who),
                escape(&addr)
            );
        }
        None if o.pair.is_some() => {
            h.push_str("<p class=\"holder bad\" id=\"holder\">nobody (no VRRP master)</p>")
        }
        None => h.push_str("<p class=\"holder muted\" id=\"holder\">standalone server, no VIP</p>"),
    }
    let (class, text) = if s.serving {
        ("ok", "this node serves license requests")
    } else {
        ("muted", "this node does not serve")
    };
    let _ = write!(h, "<p class=\"{class}\" id=\"serving\">{text}</p></section>");
}

fn roles(h: &mut String, o: &Observed) {
    let s = &o.server.status;
    h.push_str("<section id=\"roles\"><h2>Roles and replication</h2><table>");
    h.push_str("<tr><th>member</th><th>VRRP</th><th>raft</th><th>lag</th></tr>");
    let lag = |name: &str| -> String {
        o.pair
            .as_ref()
            .and_then(|p| p.follower_lag.iter().find(|(n, _)| n == name))
            .map_or("&ndash;".into(), |(_, l)| format!("{l} entries"))
    };
    let _ = write!(
        h,
        "<tr><td>{} (this node)</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&s.node),
        escape(&s.vrrp_state),
        escape(&s.raft_role),
        if s.raft_role == "Leader" {
            "&ndash;".to_owned()
        } else {
            "n/a".to_owned()
        }
    );
    if let Some(p) = &o.pair {
        let peer_vrrp = match (o.vip_holder(), s.vrrp_state.as_str()) {
            (Some((Some(n), _)), _) if n == p.peer => "Master",
            (_, "Master") => "Backup (or down)",
            _ => "?",
        };
        let peer_raft = if p.leader.as_deref() == Some(p.peer.as_str()) {
            "Leader"
        } else if p.learners.contains(&p.peer) {
            "Learner"
        } else if s.raft_role == "Leader" {
            "Follower"
        } else {
            "?"
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.peer),
            peer_vrrp,
            peer_raft,
            lag(&p.peer)
        );
        for (name, l) in p.follower_lag.iter().filter(|(n, _)| *n != p.peer) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>&ndash;</td><td>Follower</td><td>{l} entries</td></tr>",
                escape(name)
            );
        }
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p class=\"muted\">term {} &middot; commit {} &middot; applied {}",
        s.term, s.commit_index, s.applied_index
    );
    if let Some(p) = &o.pair {
        let _ = write!(
            h,
            " &middot; last {} &middot; leader {} &middot; {}",
            p.last_index,
            escape(p.leader.as_deref().unwrap_or("none")),
            if p.in_sync { "log complete" } else { "catching up" }
        );
    }
    h.push_str("</p></section>");
}

fn pool(h: &mut String, o: &Observed) {
    h.push_str("<section id=\"pool\"><h2>License pool</h2>");
    if o.server.pool.is_empty() {
        h.push_str("<p class=\"muted\">no licenses in the pool</p></section>");
        return;
    }
    h.push_str("<table><tr><th>type</th><th>used / total</th><th>available</th><th></th></tr>");
    for (t, p) in &o.server.pool {
        let available = p.available();
        // An empty type with licenses in use is all used.
        let share = p
            .used
            .saturating_mul(100)
            .checked_div(p.total)
            .unwrap_or(if p.used > 0 { 100 } else { 0 })
            .min(100);
        let over = if available < 0 { " over" } else { "" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} / {}</td><td class=\"{}\">{available}</td>\
             <td><div class=\"bar\"><div class=\"fill{over}\" style=\"width:{share}%\"></div></div></td></tr>",
            escape(t.as_str()),
            p.used,
            p.total,
            if available < 0 { "bad" } else { "" },
        );
    }
    h.push_str("</table></section>");
}

fn clients(h: &mut String, o: &Observed) {
    let v = &o.server;
    let _ = write!(
        h,
        "<section id=\"clients\"><h2>Clients</h2><p><span class=\"holder\">{}</span> up \
         &middot; {} down &middot; {} open connections</p></section>",
        v.clients_up, v.clients_down, v.status.connections
    );
}

fn warnings(h: &mut String, o: &Observed) {
    let s = &o.server.status;
    let mut items: Vec<String> = s.warnings.iter().map(|w| escape(w)).collect();
    if let Some(p) = &o.pair {
        if p.priority < p.configured_priority {
            items.push(format!(
                "advertising VRRP priority {} instead of {}: behind the log or not a voter yet",
                p.priority, p.configured_priority
            ));
        }
        for learner in &p.learners {
            items.push(format!(
                "{} is a raft learner: it does not vote until it is back and caught up",
                escape(learner)
            ));
        }
        if !p.witness && !s.serving && s.vrrp_state == "Master" {
            items.push("VRRP master but not serving: see the log for a refused takeover".into());
        }
    }
    h.push_str("<section id=\"warnings\"><h2>Warnings</h2>");
    if items.is_empty() {
        h.push_str("<p class=\"ok\">none</p>");
    } else {
        h.push_str("<ul class=\"warn\">");
        for i in items {
            let _ = write!(h, "<li>{i}</li>");
        }
        h.push_str("</ul>");
    }
    let refused = o.refusals();
    let drops: Vec<_> = o
        .pair
        .iter()
        .flat_map(|p| p.drops.iter().filter(|(_, n)| *n > 0))
        .collect();
    if !refused.is_empty() || !drops.is_empty() {
        h.push_str("<h2>Refused since start</h2><table>");
        for (cause, n) in refused {
            let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", escape(cause));
        }
        for (reason, n) in drops {
            let _ = write!(h, "<tr><td>VRRP {}</td><td>{n}</td></tr>", escape(reason));
        }
        h.push_str("</table>");
    }
    if let Some(p) = &o.pair {
        let _ = write!(
            h,
            "<h2>Settings</h2><p class=\"muted\">VRRP priority {} (advertised {}), adverts every {} ms, {}</p>",
            p.configured_priority,
            p.priority,
            p.advert_interval.as_millis(),
            if p.witness { "with a witness" } else { "no witness" }
        );
    }
    h.push_str("</section>");
}

fn timeline(h: &mut String, o: &Observed) {
    let f = &o.failovers;
    let _ = write!(
        h,
        "<section id=\"failovers\"><h2>Failovers</h2><p>takeovers by this node since it started: {}</p>",
        f.count
    );
    if f.recent.is_empty() {
        h.push_str("<p class=\"muted\">none seen</p></section>");
        return;
    }
    h.push_str("<table><tr><th>when (UTC)</th><th>what</th><th>gap</th><th>why</th></tr>");
    for e in f.recent.iter().rev() {
        let (what, gap) = match e.kind {
            FailoverKind::TookOver { gap } => ("took over", format!("{:.1} ms", ms(gap))),
            FailoverKind::GaveUp => ("stopped serving", "&ndash;".into()),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{what}</td><td>{gap}</td><td>{}</td></tr>",
            utc(e.at),
            escape(&e.why)
        );
    }
    h.push_str("</table></section>");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `at` as `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
fn utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{FailoverLog, PairObserved};
    use crate::table::{LicenseType, PoolEntry};
    use std::net::Ipv4Addr;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00.000");
        // 2000-02-29 (a leap day in a century year divisible by 400).
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29 00:00:00.123"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_796_000_000)),
            "2026-11-30 00:53:20.000"
        );
    }

    #[test]
    fn everything_from_the_network_is_escaped() {
        let mut o = Observed::default();
        o.server.status.node = "primary".into();
        o.server.status.warnings.push("<script>alert(1)</script>".into());
        o.server
            .status
            .refused
            .insert("x\"><img src=x onerror=alert(1)>".into(), 1);
        o.server
            .pool
            .insert(LicenseType::new("AP"), PoolEntry { total: 4, used: 1 });
        let log = FailoverLog::default();
        log.took_over(SystemTime::now(), Duration::from_millis(12), "peer <b>left</b>");
        o.failovers = log.snapshot();
        let page = status_page(&o);
        assert!(
            !page.contains("<script>") && !page.contains("<img") && !page.contains("<b>left"),
            "{page}"
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("12.0 ms"));
        assert_eq!(escape("a&b'c"), "a&amp;b&#39;c");
    }

    #[test]
    fn the_page_names_the_holder_the_pool_bars_and_the_lag() {
        let mut o = Observed::default();
        o.server.status.node = "primary".into();
        o.server.status.vrrp_state = "Backup".into();
        o.server.status.raft_role = "Follower".into();
        o.server
            .pool
            .insert(LicenseType::new("AP"), PoolEntry { total: 32, used: 8 });
        o.server
            .pool
            .insert(LicenseType::new("XSEC"), PoolEntry { total: 4, used: 6 });
        o.server.clients_up = 3;
        o.pair = Some(PairObserved {
            node: "primary".into(),
            peer: "backup".into(),
            own_address: Some(Ipv4Addr::new(192, 0, 2, 1)),
            peer_address: Some(Ipv4Addr::new(192, 0, 2, 2)),
            vrrp_master: Some(Ipv4Addr::new(192, 0, 2, 2)),
            leader: Some("backup".into()),
            priority: 1,
            configured_priority: 200,
            ..PairObserved::default()
        });
        let page = status_page(&o);
        assert!(page.contains("id=\"holder\">backup (192.0.2.2)</p>"), "{page}");
        assert!(page.contains("style=\"width:25%\""), "{page}");
        // Over-subscribed: a full red bar and a negative count.
        assert!(page.contains("fill over\" style=\"width:100%\""), "{page}");
        assert!(page.contains("class=\"bad\">-2</td>"), "{page}");
        assert!(
            page.contains("advertising VRRP priority 1 instead of 200"),
            "{page}"
        );
        assert!(page.contains("<span class=\"holder\">3</span> up"), "{page}");
    }
}

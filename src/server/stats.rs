//! The admin listener's stats: what `/stats.json` says and the page `/` draws from the same data. Counts come
//! from the metrics ([`crate::metrics`]); rates and latency percentiles are taken over the last [`WINDOW`] from
//! samples taken every second ([`History`]); open tunnels from the metrics' tunnel table (the 100 that moved the
//! most bytes). The page is complete HTML from the server (readable without JavaScript) and, with JavaScript,
//! replaces its table bodies from `/stats.json` every two seconds, so nothing flickers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

// Every text from the configuration or a client goes through the one HTML escaper.
use crate::http::listing::html_escape as esc;
use crate::metrics::{LatencySnapshot, Metrics};

/// Rates and percentiles cover this much of the recent past.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Open tunnels listed, largest first.
pub const MAX_TUNNELS_SHOWN: usize = 100;

/// One moment's counts, for rates.
struct Sample {
    at: Instant,
    /// By (listener, route): requests by status class (1xx..5xx) and the latency histogram.
    routes: HashMap<(String, String), ([u64; 5], LatencySnapshot)>,
    /// By listener: bytes received and sent.
    listeners: HashMap<String, (u64, u64)>,
}

/// The samples of the last [`WINDOW`] (and one more, the window's start).
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn sample(&self, m: &Metrics) {
        let s = take(m);
        let Ok(mut samples) = self.samples.lock() else { return };
        samples.push_back(s);
        while samples.len() > 2 && samples[1].at.elapsed() >= WINDOW {
            samples.pop_front();
        }
    }

    /// The oldest sample within reach of the window, for rates against now.
    fn oldest(&self) -> Option<Sample> {
        let samples = self.samples.lock().ok()?;
        let s = samples.front()?;
        Some(Sample { at: s.at, routes: s.routes.clone(), listeners: s.listeners.clone() })
    }
}

fn take(m: &Metrics) -> Sample {
    let routes = m
        .routes()
        .iter()
        .map(|r| ((r.listener.clone(), r.route.clone()), (classes(&r.by_status()), r.duration.snapshot())))
        .collect();
    let listeners = m.listeners().iter().map(|l| (l.name.clone(), (l.received.get(), l.sent.get()))).collect();
    Sample { at: Instant::now(), routes, listeners }
}

/// Requests by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
fn classes(by_status: &[(u16, u64)]) -> [u64; 5] {
    let mut c = [0u64; 5];
    for &(code, n) in by_status {
        if let Some(slot) = c.get_mut(usize::from(code / 100).saturating_sub(1)) {
            *slot += n;
        }
    }
    c
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub version: &'static str,
    pub uptime_secs: u64,
    /// False from the moment a drain started (`/readyz` answers 503).
    pub ready: bool,
    /// The span the rates and percentiles cover (up to [`WINDOW`]; shorter just after start).
    pub window_secs: f64,
    pub listeners: Vec<ListenerStats>,
    pub routes: Vec<RouteStats>,
    /// The members of the routes' upstream groups.
    pub upstreams: Vec<MemberStats>,
    pub tunnels: TunnelStats,
}

/// One member of an upstream group.
#[derive(Debug, Serialize)]
pub struct MemberStats {
    pub route: String,
    pub upstream: String,
    pub weight: u32,
    pub up: bool,
    pub in_flight: i64,
    pub requests: u64,
    pub failures: u64,
    pub retries: u64,
}

#[derive(Debug, Serialize)]
pub struct ListenerStats {
    pub listener: String,
    pub connections_open: i64,
    pub connections_total: u64,
    pub requests_in_flight: i64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub received_bytes_per_sec: f64,
    pub sent_bytes_per_sec: f64,
    pub tunnels_open: i64,
    pub tunnel_bytes_up: u64,
    pub tunnel_bytes_down: u64,
    pub tls_handshakes_ok: u64,
    pub tls_handshakes_error: u64,
    pub auth_failures: u64,
}

#[derive(Debug, Serialize)]
pub struct RouteStats {
    pub listener: String,
    pub route: String,
    pub requests: u64,
    pub requests_per_sec: f64,
    /// Requests by status class since start ("1xx".."5xx").
    pub by_class: BTreeMap<&'static str, u64>,
    /// Requests per second by status class over the window: the error rates are "4xx" and "5xx".
    pub per_sec_by_class: BTreeMap<&'static str, f64>,
    pub by_status: BTreeMap<String, u64>,
    /// Latency percentiles in milliseconds over the window (over all time when the window saw no request).
    pub latency_ms: BTreeMap<&'static str, Option<f64>>,
    pub upstream_errors: BTreeMap<&'static str, u64>,
    pub upstream_connections_reused: u64,
    pub upstream_connections_opened: u64,
    pub cgi_scripts_running: i64,
    pub cgi_scripts_queued: i64,
    pub ftp_sessions_idle: i64,
}

#[derive(Debug, Serialize)]
pub struct TunnelStats {
    pub open: usize,
    pub largest: Vec<TunnelRow>,
}

#[derive(Debug, Serialize)]
pub struct TunnelRow {
    pub listener: String,
    pub client: String,
    pub target: String,
    pub up: u64,
    pub down: u64,
    pub age_secs: f64,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Everything the stats page and `/stats.json` show, now.
pub fn collect(m: &Metrics, history: &History, ready: bool) -> Stats {
    let now = take(m);
    let then = history.oldest();
    let span = then.as_ref().map_or(0.0, |t| now.at.duration_since(t.at).as_secs_f64());
    let per_sec = |delta: u64| if span > 0.0 { delta as f64 / span } else { 0.0 };
    let listeners = m
        .listeners()
        .iter()
        .map(|l| {
            let (r0, s0) = then.as_ref().and_then(|t| t.listeners.get(&l.name).copied()).unwrap_or((0, 0));
            let (r1, s1) = (l.received.get(), l.sent.get());
            ListenerStats {
                listener: l.name.clone(),
                connections_open: l.connections_open.get(),
                connections_total: l.connections.get(),
                requests_in_flight: l.in_flight.get(),
                received_bytes: r1,
                sent_bytes: s1,
                received_bytes_per_sec: if then.is_some() { per_sec(r1.saturating_sub(r0)) } else { 0.0 },
                sent_bytes_per_sec: if then.is_some() { per_sec(s1.saturating_sub(s0)) } else { 0.0 },
                tunnels_open: l.tunnels_open.get(),
                tunnel_bytes_up: l.tunnel_up.get(),
                tunnel_bytes_down: l.tunnel_down.get(),
                tls_handshakes_ok: l.tls_ok.get(),
                tls_handshakes_error: l.tls_error.get(),
                auth_failures: l.auth_failures.get(),
            }
        })
        .collect();
    let routes = m
        .routes()
        .iter()
        .map(|r| {
            let key = (r.listener.clone(), r.route.clone());
            let (c1, l1) = now.routes.get(&key).copied().unwrap_or(([0; 5], r.duration.snapshot()));
            let (c0, l0) = then
                .as_ref()
                .and_then(|t| t.routes.get(&key).copied())
                .unwrap_or(([0; 5], LatencySnapshot { buckets: [0; 18], sum: 0.0, count: 0 }));
            let recent = l1.since(&l0);
            let latency = if recent.count > 0 { recent } else { l1 };
            let ms = |q| latency.quantile(q).map(|s| (s * 1e5).round() / 100.0);
            let by_status = r.by_status();
            RouteStats {
                listener: r.listener.clone(),
                route: r.route.clone(),
                requests: c1.iter().sum(),
                requests_per_sec: per_sec(c1.iter().sum::<u64>().saturating_sub(c0.iter().sum())),
                by_class: CLASSES.iter().copied().zip(c1).collect(),
                per_sec_by_class: CLASSES
                    .iter()
                    .copied()
                    .zip(c1.iter().zip(c0).map(|(a, b)| per_sec(a.saturating_sub(b))))
                    .collect(),
                by_status: by_status.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
                latency_ms: [("p50", ms(0.5)), ("p90", ms(0.9)), ("p99", ms(0.99))].into_iter().collect(),
                upstream_errors: r.errors().into_iter().collect(),
                upstream_connections_reused: r.reused.get(),
                upstream_connections_opened: r.opened.get(),
                cgi_scripts_running: r.cgi_running.get(),
                cgi_scripts_queued: r.cgi_queued.get(),
                ftp_sessions_idle: r.ftp_idle.get(),
            }
        })
        .collect();
    let upstreams = m
        .routes()
        .iter()
        .flat_map(|r| {
            r.members().into_iter().map(|u| MemberStats {
                route: r.route.clone(),
                upstream: u.upstream.clone(),
                weight: u.weight,
                up: u.up.get() == 1,
                in_flight: u.in_flight.get(),
                requests: u.requests.get(),
                failures: u.failures.get(),
                retries: u.retries.get(),
            })
        })
        .collect();
    let (largest, open) = m.tunnels.largest(MAX_TUNNELS_SHOWN);
    let largest = largest
        .iter()
        .map(|t| TunnelRow {
            listener: t.listener.clone(),
            client: t.client.to_string(),
            target: t.target.clone(),
            up: t.up.load(Ordering::Relaxed),
            down: t.down.load(Ordering::Relaxed),
            age_secs: (t.since.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
        .collect();
    Stats {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: m.started.elapsed().as_secs(),
        ready,
        window_secs: (span * 10.0).round() / 10.0,
        listeners,
        routes,
        upstreams,
        tunnels: TunnelStats { open, largest },
    }
}

pub fn to_json(s: &Stats) -> String {
    serde_json::to_string(s).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1} ms"))
}

fn listener_rows(s: &Stats) -> String {
    let mut out = String::new();
    for l in &s.listeners {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/s</td><td>{}/s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.listener),
            l.connections_open,
            l.connections_total,
            l.requests_in_flight,
            bytes(l.received_bytes_per_sec),
            bytes(l.sent_bytes_per_sec),
            l.tunnels_open,
            l.tls_handshakes_ok + l.tls_handshakes_error,
            l.auth_failures,
        );
    }
    out
}

fn route_rows(s: &Stats) -> String {
    let mut out = String::new();
    for r in &s.routes {
        let c = |k: &str| r.by_class.get(k).copied().unwrap_or(0);
        let rate = |k: &str| r.per_sec_by_class.get(k).copied().unwrap_or(0.0);
        let errors: Vec<String> = r.upstream_errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}/s</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.1}/s)</td>\
             <td>{} ({:.1}/s)</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.route),
            esc(&r.listener),
            r.requests,
            r.requests_per_sec,
            c("2xx"),
            c("3xx"),
            c("1xx"),
            c("4xx"),
            rate("4xx"),
            c("5xx"),
            rate("5xx"),
            ms(r.latency_ms.get("p50").copied().flatten()),
            ms(r.latency_ms.get("p90").copied().flatten()),
            ms(r.latency_ms.get("p99").copied().flatten()),
            esc(&errors.join(", ")),
            if r.cgi_scripts_running + r.cgi_scripts_queued + r.ftp_sessions_idle > 0 {
                format!(
                    "cgi {} running, {} queued; ftp {} idle",
                    r.cgi_scripts_running, r.cgi_scripts_queued, r.ftp_sessions_idle
                )
            } else {
                String::new()
            },
        );
    }
    out
}

fn upstream_rows(s: &Stats) -> String {
    let mut out = String::new();
    for u in &s.upstreams {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.upstream),
            esc(&u.route),
            u.weight,
            if u.up { "up" } else { "down" },
            u.in_flight,
            u.requests,
            u.failures,
            u.retries,
        );
    }
    out
}

fn tunnel_rows(s: &Stats) -> String {
    let mut out = String::new();
    for t in &s.tunnels.largest {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} s</td></tr>",
            esc(&t.client),
            esc(&t.target),
            esc(&t.listener),
            bytes(t.up as f64),
            bytes(t.down as f64),
            t.age_secs,
        );
    }
    out
}

/// The stats page: complete without JavaScript; with it, the table bodies follow `/stats.json`.
pub fn to_html(s: &Stats) -> String {
    let state = if s.ready { "accepting work" } else { "draining" };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hopgate stats</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="10"></noscript>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}}
h1{{font-size:1.4em;margin:0 0 .2em}} h2{{font-size:1.1em;margin:1.4em 0 .4em}}
.meta{{color:#555}} .draining{{color:#b00;font-weight:bold}}
table{{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #ccc}}
th,td{{padding:.3em .7em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}}
th{{background:#eef2f7;font-weight:600}} td:first-child,th:first-child{{text-align:left}}
tbody tr:hover{{background:#f5f8fc}}
</style></head>
<body>
<h1>hopgate {version}</h1>
<p class="meta">up <span id="uptime">{uptime}</span> s · <span id="state" class="{state_class}">{state}</span> ·
rates over the last <span id="window">{window}</span> s · <a href="/metrics">/metrics</a> ·
<a href="/stats.json">/stats.json</a></p>
<h2>Listeners</h2>
<table><thead><tr><th>listener</th><th>connections open</th><th>connections</th><th>in flight</th>
<th>received</th><th>sent</th><th>tunnels open</th><th>TLS handshakes</th><th>auth failures</th></tr></thead>
<tbody id="listeners">{listeners}</tbody></table>
<h2>Routes</h2>
<table><thead><tr><th>route</th><th>listener</th><th>requests</th><th>rate</th><th>2xx</th><th>3xx</th><th>1xx</th>
<th>4xx</th><th>5xx</th><th>p50</th><th>p90</th><th>p99</th><th>upstream errors</th><th>slots</th></tr></thead>
<tbody id="routes">{routes}</tbody></table>
<h2>Upstream groups</h2>
<table><thead><tr><th>upstream</th><th>route</th><th>weight</th><th>state</th><th>in flight</th><th>requests</th>
<th>failures</th><th>retries</th></tr></thead>
<tbody id="upstreams">{upstreams}</tbody></table>
<h2>Open tunnels: <span id="tunnels-open">{tunnels_open}</span> (the {max_shown} largest)</h2>
<table><thead><tr><th>client</th><th>target</th><th>listener</th><th>up</th><th>down</th><th>age</th></tr></thead>
<tbody id="tunnels">{tunnels}</tbody></table>
<script>
"use strict";
const esc = s => String(s).replace(/[&<>"']/g, c => ({{"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}})[c]);
const bytes = n => {{ const u = ["B","KiB","MiB","GiB","TiB"]; let i = 0; while (n >= 1024 && i < 4) {{ n /= 1024; i++; }}
  return i ? n.toFixed(1) + " " + u[i] : Math.round(n) + " B"; }};
const ms = v => v == null ? "–" : v.toFixed(1) + " ms";
const row = cells => "<tr>" + cells.map(c => "<td>" + c + "</td>").join("") + "</tr>";
function draw(s) {{
  document.body.dataset.live = "yes";
  document.getElementById("uptime").textContent = s.uptime_secs;
  const st = document.getElementById("state");
  st.textContent = s.ready ? "accepting work" : "draining"; st.className = s.ready ? "" : "draining";
  document.getElementById("window").textContent = s.window_secs;
  document.getElementById("listeners").innerHTML = s.listeners.map(l => row([esc(l.listener), l.connections_open,
    l.connections_total, l.requests_in_flight, bytes(l.received_bytes_per_sec) + "/s", bytes(l.sent_bytes_per_sec) + "/s",
    l.tunnels_open, l.tls_handshakes_ok + l.tls_handshakes_error, l.auth_failures])).join("");
  document.getElementById("routes").innerHTML = s.routes.map(r => {{
    const c = k => r.by_class[k] || 0, rate = k => (r.per_sec_by_class[k] || 0).toFixed(1);
    const errs = Object.entries(r.upstream_errors).map(([k, v]) => k + " " + v).join(", ");
    const slots = r.cgi_scripts_running + r.cgi_scripts_queued + r.ftp_sessions_idle > 0 ?
      "cgi " + r.cgi_scripts_running + " running, " + r.cgi_scripts_queued + " queued; ftp " + r.ftp_sessions_idle + " idle" : "";
    return row([esc(r.route), esc(r.listener), r.requests, r.requests_per_sec.toFixed(1) + "/s", c("2xx"), c("3xx"), c("1xx"),
      c("4xx") + " (" + rate("4xx") + "/s)", c("5xx") + " (" + rate("5xx") + "/s)", ms(r.latency_ms.p50), ms(r.latency_ms.p90),
      ms(r.latency_ms.p99), esc(errs), slots]);
  }}).join("");
  document.getElementById("upstreams").innerHTML = s.upstreams.map(u => row([esc(u.upstream), esc(u.route), u.weight,
    u.up ? "up" : "down", u.in_flight, u.requests, u.failures, u.retries])).join("");
  document.getElementById("tunnels-open").textContent = s.tunnels.open;
  document.getElementById("tunnels").innerHTML = s.tunnels.largest.map(t => row([esc(t.client), esc(t.target),
    esc(t.listener), bytes(t.up), bytes(t.down), Math.round(t.age_secs) + " s"])).join("");
}}
async function poll() {{
  try {{ const r = await fetch("/stats.json", {{cache: "no-store"}}); if (r.ok) draw(await r.json()); }} catch (e) {{}}
  setTimeout(poll, 2000);
}}
poll();
</script>
</body></html>
"#,
        version = esc(s.version),
        uptime = s.uptime_secs,
        state_class = if s.ready { "" } else { "draining" },
        state = state,
        window = s.window_secs,
        listeners = listener_rows(s),
        routes = route_rows(s),
        upstreams = upstream_rows(s),
        tunnels_open = s.tunnels.open,
        max_shown = MAX_TUNNELS_SHOWN,
        tunnels = tunnel_rows(s),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_on_the_page() {
        let m = Metrics::new();
        m.listener("http://127.0.0.1:1");
        let r = m.route("http://127.0.0.1:1", "<script>x</script>");
        r.request_done(200, Duration::from_millis(2));
        let s = collect(&m, &History::default(), true);
        let page = to_html(&s);
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!page.contains("<script>x</script>"));
        let json: serde_json::Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(json["routes"][0]["requests"], 1);
        assert_eq!(json["routes"][0]["by_class"]["2xx"], 1);
    }

    #[test]
    fn group_members_have_rows() {
        let m = Metrics::new();
        let r = m.route("http://127.0.0.1:1", "app");
        let a = r.member("http://10.0.0.1:80", 3);
        a.up.set(1);
        a.requests.inc();
        r.member("http://10.0.0.2:80", 1);
        let s = collect(&m, &History::default(), true);
        let page = to_html(&s);
        assert!(
            page.contains("<tr><td>http://10.0.0.1:80</td><td>app</td><td>3</td><td>up</td><td>0</td><td>1</td>"),
            "{page}"
        );
        assert!(page.contains("<tr><td>http://10.0.0.2:80</td><td>app</td><td>1</td><td>down</td>"), "{page}");
        let json: serde_json::Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(json["upstreams"][0]["upstream"], "http://10.0.0.1:80");
        assert_eq!(json["upstreams"][0]["up"], true);
    }
}

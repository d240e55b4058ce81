//! What hopgate counts, for the admin listener's `/metrics` (the OpenMetrics text format, encoded by the
//! `prometheus-client` crate) and its stats page. Every family is registered once per process; the label sets a
//! request touches are looked up once, when a listener or route is built ([`ListenerMetrics`], [`RouteMetrics`]),
//! so that counting a request costs a few relaxed atomic additions and no lookup, lock or allocation.
//! Label values are bounded: listen URLs, route names, status codes, error reasons; never client addresses,
//! targets or paths (the stats page shows open tunnels from its own table instead).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the request-duration histogram's buckets: 0.5 ms to about 33 s, doubling.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384,
    32.768,
];

/// The route label of requests answered before any route took them (a 400 from the head checks, a 404).
pub const NO_ROUTE: &str = "-";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerRoute {
    listener: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerRouteCode {
    listener: String,
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerDirection {
    listener: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerResult {
    listener: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteReason {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteUpstream {
    route: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// A histogram of durations with fixed buckets ([`DURATION_BUCKETS`]): one relaxed atomic addition per bucket
/// hit plus two for the sum and count, readable by the stats page (percentiles) as well as `/metrics`.
#[derive(Debug, Default)]
pub struct Latency {
    /// Per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The bucket counts now (not cumulative), the sum in seconds, and the count.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut buckets = [0u64; DURATION_BUCKETS.len() + 1];
        for (b, a) in buckets.iter_mut().zip(&self.buckets) {
            *b = a.load(Ordering::Relaxed);
        }
        LatencySnapshot {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A moment's copy of a [`Latency`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySnapshot {
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl LatencySnapshot {
    /// What was observed between `earlier` and this snapshot.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        let mut buckets = self.buckets;
        for (b, e) in buckets.iter_mut().zip(&earlier.buckets) {
            *b = b.saturating_sub(*e);
        }
        LatencySnapshot { buckets, sum: self.sum - earlier.sum, count: self.count.saturating_sub(earlier.count) }
    }

    /// The `q` quantile (0..=1) in seconds, interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; None without observations. Past the last bound it is that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let Some(&upper) = DURATION_BUCKETS.get(i) else {
                    return DURATION_BUCKETS.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { DURATION_BUCKETS[i - 1] };
                return Some(lower + (upper - lower) * ((rank - seen as f64) / n as f64).clamp(0.0, 1.0));
            }
            seen += n;
        }
        DURATION_BUCKETS.last().copied()
    }
}

/// A [`Latency`] shared between its family (for `/metrics`) and the route that observes into it.
#[derive(Debug, Clone, Default)]
pub struct SharedLatency(pub Arc<Latency>);

impl TypedMetric for SharedLatency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SharedLatency {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = self.snapshot();
        let buckets: Vec<(f64, u64)> =
            DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]).zip(s.buckets.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(s.sum, s.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every family hopgate exposes, and what the stats page reads besides them.
pub struct Metrics {
    registry: Registry,
    requests: Family<ListenerRouteCode, Counter>,
    duration: Family<ListenerRoute, SharedLatency>,
    in_flight: Family<ListenerLabel, Gauge>,
    connections_open: Family<ListenerLabel, Gauge>,
    connections: Family<ListenerLabel, Counter>,
    received: Family<ListenerLabel, Counter>,
    sent: Family<ListenerLabel, Counter>,
    tunnels_open: Family<ListenerLabel, Gauge>,
    tunnel_bytes: Family<ListenerDirection, Counter>,
    upstream_errors: Family<RouteReason, Counter>,
    reused: Family<RouteLabel, Counter>,
    opened: Family<RouteLabel, Counter>,
    tls: Family<ListenerResult, Counter>,
    proxy_headers: Family<ListenerResult, Counter>,
    auth_failures: Family<ListenerLabel, Counter>,
    cgi_running: Family<RouteLabel, Gauge>,
    cgi_queued: Family<RouteLabel, Gauge>,
    ftp_idle: Family<RouteLabel, Gauge>,
    reloads: Family<ResultLabel, Counter>,
    member_up: Family<RouteUpstream, Gauge>,
    member_in_flight: Family<RouteUpstream, Gauge>,
    member_requests: Family<RouteUpstream, Counter>,
    member_failures: Family<RouteUpstream, Counter>,
    member_retries: Family<RouteUpstream, Counter>,
    /// The routes and listeners built so far, for the stats page, in the order they were built.
    routes: Mutex<Vec<Arc<RouteMetrics>>>,
    listeners: Mutex<Vec<Arc<ListenerMetrics>>>,
    /// Open tunnels, for the stats page (never labels: client addresses and targets are unbounded).
    pub tunnels: Arc<OpenTunnels>,
    pub started: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("hopgate");
        let m = Metrics {
            requests: Family::default(),
            duration: Family::default(),
            in_flight: Family::default(),
            connections_open: Family::default(),
            connections: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            tunnels_open: Family::default(),
            tunnel_bytes: Family::default(),
            upstream_errors: Family::default(),
            reused: Family::default(),
            opened: Family::default(),
            tls: Family::default(),
            proxy_headers: Family::default(),
            auth_failures: Family::default(),
            cgi_running: Family::default(),
            cgi_queued: Family::default(),
            ftp_idle: Family::default(),
            reloads: Family::default(),
            member_up: Family::default(),
            member_in_flight: Family::default(),
            member_requests: Family::default(),
            member_failures: Family::default(),
            member_retries: Family::default(),
            routes: Mutex::default(),
            listeners: Mutex::default(),
            tunnels: Arc::default(),
            started: Instant::now(),
            registry: Registry::default(),
        };
        registry.register("requests", "Requests answered, by the exact status sent", m.requests.clone());
        registry.register(
            "request_duration_seconds",
            "From the request head received to the response body's end",
            m.duration.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests received and not yet answered to the end",
            m.in_flight.clone(),
        );
        registry.register("connections_open", "Client connections open", m.connections_open.clone());
        registry.register("connections", "Client connections accepted", m.connections.clone());
        registry.register("received_bytes", "Bytes received from clients (heads and bodies)", m.received.clone());
        registry.register("sent_bytes", "Bytes sent to clients (heads and bodies)", m.sent.clone());
        registry.register("tunnels_open", "CONNECT tunnels and upgraded connections open", m.tunnels_open.clone());
        registry.register(
            "tunnel_bytes",
            "Bytes through tunnels: up from the client, down to it",
            m.tunnel_bytes.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed at the upstream, by reason (refused, timeout, dns, tls, protocol...)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "upstream_connections_reused",
            "Requests sent on a kept upstream connection",
            m.reused.clone(),
        );
        registry.register("upstream_connections_opened", "Upstream connections opened", m.opened.clone());
        registry.register("tls_handshakes", "TLS handshakes with clients, by result (ok, error)", m.tls.clone());
        registry.register(
            "proxy_protocol_headers",
            "PROXY protocol headers read on listeners behind a balancer, by result (proxied, local, invalid, \
             untrusted, timeout, closed)",
            m.proxy_headers.clone(),
        );
        registry.register(
            "auth_failures",
            "Proxy authentication refusals (wrong or missing credentials, throttled)",
            m.auth_failures.clone(),
        );
        registry.register("cgi_scripts_running", "CGI scripts running", m.cgi_running.clone());
        registry.register("cgi_scripts_queued", "Requests waiting for a CGI script slot", m.cgi_queued.clone());
        registry.register("ftp_sessions_idle", "Logged-in FTP control connections kept for reuse", m.ftp_idle.clone());
        registry.register("config_reloads", "Configuration reloads, by result (ok, error)", m.reloads.clone());
        registry.register(
            "upstream_up",
            "Whether a member of an upstream group takes requests (1) or is down (0)",
            m.member_up.clone(),
        );
        registry.register(
            "upstream_in_flight",
            "Requests sent to a member of an upstream group and waiting for its response head",
            m.member_in_flight.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to a member of an upstream group",
            m.member_requests.clone(),
        );
        registry.register(
            "upstream_failures",
            "Requests a member of an upstream group failed: connection refused or timed out, closed early, or \
             answered 502, 503 or 504",
            m.member_failures.clone(),
        );
        registry.register(
            "upstream_retries",
            "Requests sent to another member after this member failed them",
            m.member_retries.clone(),
        );
        for result in ["ok", "error"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result });
        }
        let build_info: Family<VersionLabel, Gauge> = Family::default();
        build_info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "hopgate's version (value 1)", build_info);
        Arc::new(Metrics { registry, ..m })
    }

    /// The handles of one listener (`listener`: its URL as printed at start-up).
    pub fn listener(&self, listener: &str) -> Arc<ListenerMetrics> {
        let l = ListenerLabel { listener: listener.to_owned() };
        let dir = |direction| ListenerDirection { listener: listener.to_owned(), direction };
        let result = |result| ListenerResult { listener: listener.to_owned(), result };
        let handles = Arc::new(ListenerMetrics {
            name: listener.to_owned(),
            connections_open: owned(&self.connections_open, &l),
            connections: owned(&self.connections, &l),
            in_flight: owned(&self.in_flight, &l),
            received: owned(&self.received, &l),
            sent: owned(&self.sent, &l),
            tunnels_open: owned(&self.tunnels_open, &l),
            tunnel_up: owned(&self.tunnel_bytes, &dir("up")),
            tunnel_down: owned(&self.tunnel_bytes, &dir("down")),
            tls_ok: owned(&self.tls, &result("ok")),
            tls_error: owned(&self.tls, &result("error")),
            auth_failures: owned(&self.auth_failures, &l),
            tunnels: self.tunnels.clone(),
        });
        if let Ok(mut all) = self.listeners.lock() {
            all.retain(|x| x.name != listener);
            all.push(handles.clone());
        }
        handles
    }

    /// The PROXY-header counters of `listener` (one with `proxy_protocol`), by result.
    pub fn proxy_headers(&self, listener: &str) -> ProxyHeaderMetrics {
        let result = |result| owned(&self.proxy_headers, &ListenerResult { listener: listener.to_owned(), result });
        ProxyHeaderMetrics {
            proxied: result("proxied"),
            local: result("local"),
            invalid: result("invalid"),
            untrusted: result("untrusted"),
            timeout: result("timeout"),
            closed: result("closed"),
        }
    }

    /// The handles of one route of `listener` (`route`: its name; [`NO_ROUTE`] for requests no route took).
    pub fn route(self: &Arc<Self>, listener: &str, route: &str) -> Arc<RouteMetrics> {
        let lr = ListenerRoute { listener: listener.to_owned(), route: route.to_owned() };
        let r = RouteLabel { route: route.to_owned() };
        let handles = Arc::new(RouteMetrics {
            listener: listener.to_owned(),
            route: route.to_owned(),
            metrics: Arc::downgrade(self),
            by_code: (0..STATUS_CODES).map(|_| OnceLock::new()).collect(),
            duration: owned(&self.duration, &lr).0,
            reused: owned(&self.reused, &r),
            opened: owned(&self.opened, &r),
            cgi_running: owned(&self.cgi_running, &r),
            cgi_queued: owned(&self.cgi_queued, &r),
            ftp_idle: owned(&self.ftp_idle, &r),
            errors: Mutex::default(),
            members: Mutex::default(),
        });
        if let Ok(mut all) = self.routes.lock() {
            all.retain(|x| !(x.listener == listener && x.route == route));
            all.push(handles.clone());
        }
        handles
    }

    /// One configuration reload, successful or not.
    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    /// `/metrics`: the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The listeners and routes built so far.
    pub fn listeners(&self) -> Vec<Arc<ListenerMetrics>> {
        self.listeners.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn routes(&self) -> Vec<Arc<RouteMetrics>> {
        self.routes.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// A family's metric for `labels`, cloned (it shares its value). The family's lock guard is dropped before this
/// returns: holding it while creating another metric of the same family would deadlock.
fn owned<L, M>(family: &Family<L, M>, labels: &L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone + Default,
{
    family.get_or_create(labels).clone()
}

/// Status codes 100..=599 each get their counter slot.
const STATUS_CODES: usize = 500;

/// What one listener counts.
#[derive(Debug)]
pub struct ListenerMetrics {
    pub name: String,
    pub connections_open: Gauge,
    pub connections: Counter,
    pub in_flight: Gauge,
    pub received: Counter,
    pub sent: Counter,
    pub tunnels_open: Gauge,
    pub tunnel_up: Counter,
    pub tunnel_down: Counter,
    pub tls_ok: Counter,
    pub tls_error: Counter,
    pub auth_failures: Counter,
    /// The process's table of open tunnels, for the stats page.
    pub tunnels: Arc<OpenTunnels>,
}

/// The PROXY headers of one listener, by result: a client's address taken (`proxied`), the connection's own
/// kept (`local`: v2 LOCAL, v1 UNKNOWN...), or the connection closed unanswered (`invalid` header, `untrusted`
/// source, `timeout`, `closed` before the header was complete).
#[derive(Debug, Clone)]
pub struct ProxyHeaderMetrics {
    pub proxied: Counter,
    pub local: Counter,
    pub invalid: Counter,
    pub untrusted: Counter,
    pub timeout: Counter,
    pub closed: Counter,
}

/// What one route counts. Requests by status: a slot per status code, created on its first use.
#[derive(Debug)]
pub struct RouteMetrics {
    pub listener: String,
    pub route: String,
    metrics: std::sync::Weak<Metrics>,
    by_code: Box<[OnceLock<Counter>]>,
    pub duration: Arc<Latency>,
    pub reused: Counter,
    pub opened: Counter,
    pub cgi_running: Gauge,
    pub cgi_queued: Gauge,
    pub ftp_idle: Gauge,
    errors: Mutex<HashMap<&'static str, Counter>>,
    /// The members of the route's upstream group, if it has one, for the stats page.
    members: Mutex<Vec<Arc<MemberMetrics>>>,
}

/// What one member of an upstream group counts (labels `route` and `upstream`: the member's URL).
#[derive(Debug, Default)]
pub struct MemberMetrics {
    pub upstream: String,
    pub weight: u32,
    pub up: Gauge,
    pub in_flight: Gauge,
    pub requests: Counter,
    pub failures: Counter,
    pub retries: Counter,
}

impl RouteMetrics {
    /// A request answered with `status` (sent to the end, or abandoned) after `took`.
    pub fn request_done(&self, status: u16, took: Duration) {
        self.requests_with(status).inc();
        self.duration.observe(took);
    }

    fn requests_with(&self, status: u16) -> &Counter {
        let i = usize::from(status.clamp(100, 599) - 100);
        self.by_code[i].get_or_init(|| match self.metrics.upgrade() {
            Some(m) => m
                .requests
                .get_or_create(&ListenerRouteCode {
                    listener: self.listener.clone(),
                    route: self.route.clone(),
                    code: status,
                })
                .clone(),
            None => Counter::default(),
        })
    }

    /// An upstream failure of this route (`reason`: `error::Kind::reason`).
    pub fn upstream_error(&self, reason: &'static str) {
        let Ok(mut errors) = self.errors.lock() else { return };
        let counter = errors.entry(reason).or_insert_with(|| match self.metrics.upgrade() {
            Some(m) => m.upstream_errors.get_or_create(&RouteReason { route: self.route.clone(), reason }).clone(),
            None => Counter::default(),
        });
        counter.inc();
    }

    /// The handles of `upstream`, a member of this route's group (listed on the stats page from now on).
    pub fn member(&self, upstream: &str, weight: u32) -> Arc<MemberMetrics> {
        let l = RouteUpstream { route: self.route.clone(), upstream: upstream.to_owned() };
        let handles = Arc::new(match self.metrics.upgrade() {
            Some(m) => MemberMetrics {
                upstream: upstream.to_owned(),
                weight,
                up: owned(&m.member_up, &l),
                in_flight: owned(&m.member_in_flight, &l),
                requests: owned(&m.member_requests, &l),
                failures: owned(&m.member_failures, &l),
                retries: owned(&m.member_retries, &l),
            },
            None => MemberMetrics { upstream: upstream.to_owned(), weight, ..MemberMetrics::default() },
        });
        if let Ok(mut all) = self.members.lock() {
            all.retain(|x| x.upstream != upstream);
            all.push(handles.clone());
        }
        handles
    }

    /// The members of the route's upstream group (empty without one).
    pub fn members(&self) -> Vec<Arc<MemberMetrics>> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Requests by status code so far: (code, count), ascending.
    pub fn by_status(&self) -> Vec<(u16, u64)> {
        self.by_code
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.get().map(|c| (i as u16 + 100, c.get())))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Upstream errors by reason so far.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> =
            self.errors.lock().map(|e| e.iter().map(|(k, c)| (*k, c.get())).collect()).unwrap_or_default();
        v.sort();
        v
    }
}

/// The tunnels open right now (CONNECT and upgrades), with their bytes as they move.
#[derive(Debug, Default)]
pub struct OpenTunnels {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<TunnelInfo>>>,
}

/// One open tunnel, as the stats page shows it.
#[derive(Debug)]
pub struct TunnelInfo {
    pub listener: String,
    pub client: SocketAddr,
    /// `host:port` of a CONNECT, or the upgraded request's target and protocol.
    pub target: String,
    pub since: Instant,
    /// Bytes from the client, and to it, so far.
    pub up: AtomicU64,
    pub down: AtomicU64,
}

impl OpenTunnels {
    /// Registers a tunnel; it is listed until the returned guard is dropped.
    pub fn open(self: &Arc<Self>, listener: &str, client: SocketAddr, target: String) -> TunnelEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(TunnelInfo {
            listener: listener.to_owned(),
            client,
            target,
            since: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, info.clone());
        }
        TunnelEntry { table: Arc::downgrade(self), id, info }
    }

    /// The `n` tunnels that moved the most bytes, largest first, and how many are open in all.
    pub fn largest(&self, n: usize) -> (Vec<Arc<TunnelInfo>>, usize) {
        let Ok(open) = self.open.lock() else { return (Vec::new(), 0) };
        let mut all: Vec<Arc<TunnelInfo>> = open.values().cloned().collect();
        let total = all.len();
        all.sort_by_key(|t| std::cmp::Reverse(t.up.load(Ordering::Relaxed) + t.down.load(Ordering::Relaxed)));
        all.truncate(n);
        (all, total)
    }
}

/// A tunnel's place in [`OpenTunnels`]; dropping it takes the tunnel off the list.
#[derive(Debug)]
pub struct TunnelEntry {
    table: std::sync::Weak<OpenTunnels>,
    id: u64,
    pub info: Arc<TunnelInfo>,
}

impl Drop for TunnelEntry {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade()
            && let Ok(mut open) = table.open.lock()
        {
            open.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_their_names_and_labels() {
        let m = Metrics::new();
        let l = m.listener("http://127.0.0.1:8080");
        l.connections.inc();
        let r = m.route("http://127.0.0.1:8080", "proxy");
        r.request_done(200, Duration::from_millis(3));
        r.request_done(200, Duration::from_millis(3));
        r.request_done(502, Duration::from_millis(40));
        r.upstream_error("refused");
        let text = m.encode();
        for want in [
            "hopgate_requests_total{listener=\"http://127.0.0.1:8080\",route=\"proxy\",code=\"200\"} 2\n",
            "hopgate_requests_total{listener=\"http://127.0.0.1:8080\",route=\"proxy\",code=\"502\"} 1\n",
            "hopgate_connections_total{listener=\"http://127.0.0.1:8080\"} 1\n",
            "hopgate_upstream_errors_total{route=\"proxy\",reason=\"refused\"} 1\n",
            "hopgate_request_duration_seconds_count{listener=\"http://127.0.0.1:8080\",route=\"proxy\"} 3\n",
            "hopgate_request_duration_seconds_bucket{le=\"0.004\",listener=\"http://127.0.0.1:8080\",route=\"proxy\"} 2\n",
            "hopgate_config_reloads_total{result=\"ok\"} 0\n",
            "hopgate_build_info{version=\"",
            "# EOF\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert_eq!(r.by_status(), vec![(200, 2), (502, 1)]);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let l = Latency::default();
        for _ in 0..100 {
            l.observe(Duration::from_micros(1500));
        }
        let s = l.snapshot();
        let p50 = s.quantile(0.5).unwrap();
        assert!((0.001..=0.002).contains(&p50), "{p50}");
        assert_eq!(LatencySnapshot { buckets: [0; 18], sum: 0.0, count: 0 }.quantile(0.5), None);
        l.observe(Duration::from_secs(100));
        assert_eq!(l.snapshot().quantile(1.0), Some(32.768), "past the last bound: the bound");
    }

    #[test]
    fn open_tunnels_list_the_largest() {
        let t = Arc::new(OpenTunnels::default());
        let a = t.open("l", "127.0.0.1:1".parse().unwrap(), "a:443".into());
        let b = t.open("l", "127.0.0.1:2".parse().unwrap(), "b:443".into());
        b.info.down.fetch_add(10, Ordering::Relaxed);
        let (top, n) = t.largest(1);
        assert_eq!((top[0].target.as_str(), n), ("b:443", 2));
        drop(b);
        drop(a);
        assert_eq!(t.largest(5).1, 0);
    }
}

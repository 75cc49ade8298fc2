//! # The node's HTTP endpoints (`meridian start --http-listen ADDR`)
//!
//! For operators and their tools, next to the gRPC port:
//!
//! | path | answer |
//! |---|---|
//! | `GET /health` | `200 ok` while the process runs |
//! | `GET /health?ready=1` | `200 ready` while the node can serve: it knows where the meta range lives and, for every range it hosts, a leader holding a lease that it can reach, with a majority of the range's replicas reachable (`crate::node::health`); else `503 not ready: …` with one line per range it cannot serve. Warnings (under-replicated ranges, replicas on unreachable nodes) follow as `warning: …` lines either way |
//! | `GET /status` (and `/`) | an HTML page (no scripts, no external assets) that reloads itself every [`PAGE_REFRESH_SECS`] s: readiness and warnings, node, cluster, ε, TrueTime now, a `<table id="ranges">` of its replicas (red with the reason when it cannot serve one), the nodes it knows (red when down) |
//! | `GET /metrics` | Prometheus text format: every family with `# HELP` and `# TYPE`, families in name order and series in label order on every scrape |
//!
//! Metrics come from two places. The node core records counters and histograms through the
//! `metrics` facade as things happen ([`crate::node::observe`]); this module installs the
//! process-wide Prometheus recorder that keeps them, and at each scrape sets the gauges it reads
//! from the core's status and from RocksDB's cheap integer properties. The recorder is global:
//! several nodes in one process (tests, `meridian demo`) share one set of series.
//!
//! The status page asks the core for its status the way the admin gRPC service does: one
//! request through the core thread's queue, bounded by [`CORE_ANSWER_MAX`].

use std::fmt::Write as _;
use std::future::IntoFuture;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response as HttpResponse};
use axum::routing::get;
use meridian_shard::range;
use meridian_storage::{Cf, RocksEngine};
use meridian_truetime::{SimTrueTime, Timestamp};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;

use super::CoreHandle;
use crate::node::observe;
use crate::node::{NodeStatus, Request, Response};

/// The core loop's storage writes (with fsync when `sync="true"`) (histogram, seconds).
pub const STORAGE_WRITE: &str = "meridian_storage_write_seconds";
/// How long an HTTP request waits for the core thread before answering 503.
const CORE_ANSWER_MAX: Duration = Duration::from_secs(2);
/// How often recorded histogram samples are folded into their buckets when nobody scrapes
/// (bounds the memory of unscraped samples).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Prepared transactions listed per range on the status page (the count is always shown).
const PAGE_PREPARED_MAX: usize = 5;
/// How often the status page reloads itself (`<meta http-equiv="refresh">`).
pub const PAGE_REFRESH_SECS: u32 = 2;
/// Gauges set at each scrape: (name, help).
const GAUGES: [(&str, &str); 7] = [
    ("meridian_ranges_hosted", "Replicas (ranges) hosted by this node"),
    ("meridian_ranges_led", "Ranges this node leads"),
    ("meridian_leases_held", "Ranges this node leads under a lease"),
    (
        "meridian_ranges_unservable",
        "Hosted ranges this node cannot serve now (no reachable leader with a lease, or no majority)",
    ),
    ("meridian_node_ready", "1 while /health?ready=1 answers 200, else 0"),
    ("meridian_txn_prepared", "Transactions prepared at this node's replicas, waiting for their coordinator"),
    ("meridian_truetime_epsilon_seconds", "TrueTime uncertainty ε of this node's clock"),
];
/// Histogram buckets in seconds: 100 µs (a local fsync) to 10 s (the request timeout).
const BUCKETS_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// RocksDB integer properties exported per column family: (property, metric, help).
const ROCKS_PROPERTIES: [(&str, &str, &str); 5] = [
    ("rocksdb.estimate-num-keys", "meridian_rocksdb_estimate_keys", "RocksDB's estimate of the keys per column family"),
    (
        "rocksdb.estimate-live-data-size",
        "meridian_rocksdb_live_data_bytes",
        "RocksDB's estimate of live data bytes per column family",
    ),
    ("rocksdb.total-sst-files-size", "meridian_rocksdb_sst_files_bytes", "Bytes of SST files per column family"),
    ("rocksdb.cur-size-all-mem-tables", "meridian_rocksdb_memtables_bytes", "Bytes in memtables per column family"),
    (
        "rocksdb.estimate-pending-compaction-bytes",
        "meridian_rocksdb_pending_compaction_bytes",
        "RocksDB's estimate of bytes compaction still has to rewrite, per column family",
    ),
];

/// The process-wide Prometheus recorder, installed on first use (by the first node that serves
/// HTTP). An error says why there is none (another recorder was installed first).
fn prometheus() -> Result<&'static PrometheusHandle, &'static str> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&BUCKETS_SECONDS)
                .and_then(|b| b.install_recorder())
                .map_err(|e| format!("no Prometheus recorder: {e}"))?;
            observe::register_all();
            metrics::describe_histogram!(
                STORAGE_WRITE,
                metrics::Unit::Seconds,
                "Core loop storage writes (Paxos state; sync=true includes the fsync)"
            );
            for sync in ["true", "false"] {
                let _ = metrics::histogram!(STORAGE_WRITE, "sync" => sync);
            }
            for (name, help) in GAUGES {
                metrics::describe_gauge!(name, help);
            }
            for (_, name, help) in ROCKS_PROPERTIES {
                metrics::describe_gauge!(name, help);
            }
            Ok(handle)
        })
        .as_ref()
        .map_err(String::as_str)
}

/// What the handlers need.
pub(super) struct HttpState {
    pub(super) core: CoreHandle,
    pub(super) tt: Arc<SimTrueTime>,
    pub(super) rocks: Arc<RocksEngine>,
}

/// Serves the endpoints on `listener` until `stop` fires.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    if let Err(e) = prometheus() {
        tracing::warn!(error = e, "/metrics will answer 503");
    }
    let app = Router::new()
        .route("/health", get(health))
        .route("/", get(status_page))
        .route("/status", get(status_page))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(state));
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .into_future();
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    tokio::pin!(server);
    loop {
        tokio::select! {
            r = &mut server => return r,
            _ = upkeep.tick() => {
                if let Ok(h) = prometheus() {
                    h.run_upkeep();
                }
            }
        }
    }
}

fn plain(code: StatusCode, body: String) -> HttpResponse {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Whether the query string asks for readiness (`ready`, `ready=1`, `ready=true`).
fn wants_ready(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|kv| matches!(kv, "ready" | "ready=1" | "ready=true"))
}

async fn health(State(st): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> HttpResponse {
    if !wants_ready(query.as_deref()) {
        return plain(StatusCode::OK, "ok\n".into());
    }
    match st.core.readiness(CORE_ANSWER_MAX).await {
        Ok(r) if r.ready => plain(StatusCode::OK, r.body()),
        Ok(r) => plain(StatusCode::SERVICE_UNAVAILABLE, r.body()),
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// The core's status, or why there is none.
async fn core_status(st: &HttpState) -> Result<NodeStatus, String> {
    match tokio::time::timeout(CORE_ANSWER_MAX, st.core.call(Request::Status)).await {
        Ok(Response::Status(s)) => Ok(s),
        Ok(Response::Error(e)) => Err(e.to_string()),
        Ok(other) => Err(format!("unexpected answer from the node: {other:?}")),
        Err(_) => Err(format!("the node's core did not answer within {CORE_ANSWER_MAX:?}")),
    }
}

async fn status_page(State(st): State<Arc<HttpState>>) -> HttpResponse {
    match core_status(&st).await {
        Ok(s) => Html(render_status(&s, st.tt.epsilon_now())).into_response(),
        Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("status unavailable: {e}\n")),
    }
}

async fn metrics_text(State(st): State<Arc<HttpState>>) -> HttpResponse {
    let handle = match prometheus() {
        Ok(h) => h,
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    };
    // Gauges are read now, so a scrape sees the current state; a core that cannot answer
    // leaves the last values (and the counters still render).
    if let Ok(s) = core_status(&st).await {
        let led = s.groups.iter().filter(|g| g.role == "Leader").count();
        let leases = s.groups.iter().filter(|g| g.lease_end.is_some()).count();
        let unservable = s.groups.iter().filter(|g| !g.health.servable).count();
        let prepared: usize = s.groups.iter().map(|g| g.prepared_count).sum();
        let [hosted, led_g, leases_g, unservable_g, ready_g, prepared_g, epsilon_g] = GAUGES.map(|(name, _)| name);
        metrics::gauge!(hosted).set(s.groups.len() as f64);
        metrics::gauge!(led_g).set(led as f64);
        metrics::gauge!(leases_g).set(leases as f64);
        metrics::gauge!(unservable_g).set(unservable as f64);
        metrics::gauge!(ready_g).set(if s.readiness.ready { 1.0 } else { 0.0 });
        metrics::gauge!(prepared_g).set(prepared as f64);
        metrics::gauge!(epsilon_g).set(st.tt.epsilon_now().as_secs_f64());
    }
    for cf in Cf::ALL {
        for (property, name, _) in ROCKS_PROPERTIES {
            if let Ok(Some(v)) = st.rocks.property(cf, property) {
                metrics::gauge!(name, "cf" => cf.name()).set(v as f64);
            }
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        stable_order(&handle.render()),
    )
        .into_response()
}

/// The exporter's text with families in name order and, within a family, series in label
/// order (a histogram's buckets, sum and count stay together and in order): the exporter keeps
/// them in hash maps, so its order changes from one scrape to the next (issue 17).
///
/// Families are the blocks the exporter separates with blank lines, each opening with its
/// `# HELP`/`# TYPE` lines.
pub fn stable_order(text: &str) -> String {
    let mut families: Vec<(String, Vec<&str>, Vec<&str>)> = Vec::new();
    for block in text.split("\n\n") {
        let (mut head, mut series) = (Vec::new(), Vec::new());
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            if line.starts_with('#') { head.push(line) } else { series.push(line) }
        }
        let Some(name) = head.iter().chain(&series).find_map(|l| family_name(l)) else { continue };
        // Stable: a label set's lines keep their order (buckets by `le`, then sum, count).
        series.sort_by_key(|l| series_labels(l));
        families.push((name.to_string(), head, series));
    }
    families.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(text.len());
    for (_, head, series) in families {
        for l in head.iter().chain(&series) {
            out.push_str(l);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The family a line belongs to: the name in `# HELP name …`/`# TYPE name …`, or a series' name
/// without a histogram's `_bucket`/`_sum`/`_count`.
fn family_name(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
        return rest.split(' ').next();
    }
    let name = line.split(['{', ' ']).next()?;
    Some(["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name))
}

/// A series line's labels without `le` (so one label set's lines sort together).
fn series_labels(line: &str) -> String {
    let labels = line.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map_or("", |(l, _)| l);
    labels.split(',').filter(|kv| !kv.starts_with("le=")).collect::<Vec<_>>().join(",")
}

/// `text` with HTML's special characters escaped (element content and quoted attributes).
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

/// `ts` as UTC calendar time with nanoseconds, `2026-11-24 22:40:01.123456789Z`.
pub fn utc(ts: Timestamp) -> String {
    let (secs, nanos) = (ts.nanos() / 1_000_000_000, ts.nanos() % 1_000_000_000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{nanos:09}Z", rem / 3_600, rem % 3_600 / 60, rem % 60)
}

fn ids<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if v.is_empty() { "–".into() } else { v.join(", ") }
}

/// The status page. Every value from the node is escaped.
///
/// What cannot serve is red and says why: the readiness banner, each range this node cannot
/// serve (its leader column then names no leader, only the last one known), and each node that
/// is down. The page reloads itself every [`PAGE_REFRESH_SECS`] seconds.
pub fn render_status(s: &NodeStatus, epsilon: Duration) -> String {
    let local = s.now_earliest.saturating_add(s.now_latest.duration_since(s.now_earliest) / 2);
    let led = s.groups.iter().filter(|g| g.role == "Leader").count();
    let leases = s.groups.iter().filter(|g| g.lease_end.is_some()).count();
    let down: std::collections::BTreeSet<_> = s.liveness.iter().filter(|l| !l.up).map(|l| l.node).collect();
    let mut h = String::new();
    let title = format!("Meridian node {}", s.node);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_SECS}\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         th,td{{border:1px solid #bbb;padding:2px 6px;text-align:left;font-size:90%;vertical-align:top}}\
         th{{background:#eee}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         tr.leader td{{background:#eef7ee}}tr.unservable td,tr.down td{{background:#fbe3e3;color:#900}}\
         p.ready{{color:#060;font-weight:bold}}p.not-ready,li.warning{{color:#b00;font-weight:bold}}</style></head>\
         <body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let r = &s.readiness;
    if r.ready {
        let _ = writeln!(h, "<p id=\"readiness\" class=\"ready\">Ready: {}</p>", escape(&r.summary));
    } else {
        let _ = writeln!(h, "<p id=\"readiness\" class=\"not-ready\">NOT READY: {}</p>", escape(&r.summary));
    }
    if !r.warnings.is_empty() {
        h.push_str("<ul id=\"warnings\">\n");
        for w in &r.warnings {
            let _ = writeln!(h, "<li class=\"warning\">{}</li>", escape(w));
        }
        h.push_str("</ul>\n");
    }
    let _ = write!(
        h,
        "<table id=\"node\">\n<tr><th>node</th><td>{}</td></tr>\n<tr><th>cluster</th><td>{}</td></tr>\n\
         <tr><th>ε</th><td>{:.3} ms</td></tr>\n<tr><th>TrueTime now</th><td>[{}, {}]<br>{}</td></tr>\n\
         <tr><th>ranges</th><td>{} hosted, {} led, {} leases held, {} cannot be served</td></tr>\n\
         <tr><th>nodes</th><td>{} known, {} down</td></tr>\n</table>\n",
        escape(&s.node.to_string()),
        escape(&s.cluster_id),
        epsilon.as_secs_f64() * 1e3,
        s.now_earliest,
        s.now_latest,
        utc(local),
        s.groups.len(),
        led,
        leases,
        s.groups.iter().filter(|g| !g.health.servable).count(),
        s.nodes.len(),
        down.len(),
    );
    h.push_str(
        "<h2>Ranges</h2>\n<table id=\"ranges\">\n<thead><tr><th>range</th><th>span</th><th>voters</th>\
         <th>learners</th><th>role here</th><th>leader</th><th>health</th><th>replicas reachable</th><th>ballot</th>\
         <th>lease end</th><th>chosen</th><th>applied</th><th>safe time (last write)</th><th>prepared transactions</th>\
         </tr></thead>\n<tbody>\n",
    );
    for g in &s.groups {
        let d = &g.desc;
        let end = if d.end.is_empty() { "+∞".to_string() } else { range::show_key(&d.end) };
        let span = format!("[{}, {})", range::show_key(&d.start), end);
        let lease = match g.lease_end {
            Some(t) if t >= local => format!("{t} (in {:.3} s)", t.duration_since(local).as_secs_f64()),
            Some(t) => format!("{t} (expired)"),
            None => "–".into(),
        };
        let mut prepared = g.prepared_count.to_string();
        for p in g.prepared.iter().take(PAGE_PREPARED_MAX) {
            let line = format!("{} at {} (coordinator {})", p.txn, p.prepare_ts, p.coordinator);
            let _ = write!(prepared, "<br>{}", escape(&line));
        }
        if g.prepared_count > PAGE_PREPARED_MAX {
            let _ = write!(prepared, "<br>… {} more", g.prepared_count - PAGE_PREPARED_MAX);
        }
        // A leader is named only while it can serve; otherwise the one last known, marked.
        let leader = match (g.health.servable, g.leader) {
            (true, Some(l)) => l.to_string(),
            (_, None) => "none".into(),
            (false, Some(l)) if down.contains(&l) => format!("none (last known {l}: down)"),
            (false, Some(l)) => format!("none (last known {l})"),
        };
        let class = match (g.health.servable, g.role == "Leader") {
            (false, _) => "unservable",
            (true, true) => "leader",
            (true, false) => "replica",
        };
        let _ = writeln!(
            h,
            "<tr class=\"{class}\" id=\"range-{id}\"><td>{id}</td><td>{span}</td><td>{voters}</td><td>{learners}</td>\
             <td>{role}</td><td>{leader}</td><td>{health}</td><td class=\"n\">{reachable} of {replicas}</td><td>{ballot}</td>\
             <td>{lease}</td><td class=\"n\">{chosen}</td><td class=\"n\">{applied}</td><td>{safe}</td><td>{prepared}</td></tr>",
            id = escape(&d.id.to_string()),
            span = escape(&span),
            voters = escape(&ids(&d.config.voters)),
            learners = escape(&ids(&d.config.learners)),
            role = escape(&g.role),
            leader = escape(&leader),
            health = escape(&g.health.detail),
            reachable = g.health.reachable,
            replicas = g.health.replicas,
            ballot = escape(&g.ballot),
            lease = escape(&lease),
            chosen = g.chosen,
            applied = g.applied,
            safe = escape(&g.last_write_ts.to_string()),
            prepared = prepared,
        );
    }
    h.push_str("</tbody>\n</table>\n");
    h.push_str(
        "<h2>Nodes</h2>\n<table id=\"nodes\">\n<thead><tr><th>node</th><th>state</th><th>last heard</th>\
         <th>gRPC</th><th>HTTP</th><th>PostgreSQL</th></tr></thead>\n<tbody>\n",
    );
    for n in &s.nodes {
        let live = s.liveness.iter().find(|l| l.node == n.id);
        let (class, state, heard) = match live {
            None => ("up", "up (this node)".to_string(), "–".to_string()),
            Some(l) => (
                if l.up { "up" } else { "down" },
                if l.up { "up".to_string() } else { format!("DOWN: {}", l.why) },
                l.last_heard.map_or("never".into(), |t| format!("{:.1} s ago", local.duration_since(t).as_secs_f64())),
            ),
        };
        let http = match &n.http_addr {
            Some(a) => format!("<a href=\"http://{a}/status\">{a}</a>", a = escape(a)),
            None => "–".into(),
        };
        let _ = writeln!(
            h,
            "<tr class=\"{class}\" id=\"node-{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&state),
            escape(&heard),
            escape(&n.addr),
            http,
            escape(n.pg_addr.as_deref().unwrap_or("–")),
            id = escape(&n.id.to_string()),
        );
    }
    h.push_str("</tbody>\n</table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(escape("plain r1.2 [\\x01, +∞)"), "plain r1.2 [\\x01, +∞)");
    }

    #[test]
    fn utc_formats_calendar_time() {
        assert_eq!(utc(Timestamp::ZERO), "1970-01-01 00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.000000789.
        assert_eq!(utc(Timestamp::from_nanos(951_827_696_000_000_789)), "2000-02-29 12:34:56.000000789Z");
        assert_eq!(utc(Timestamp::from_nanos(1_795_563_601_000_000_000)), "2026-11-24 23:40:01.000000000Z");
    }

    #[test]
    fn metrics_come_in_one_order_whatever_order_the_exporter_used() {
        let a = "# HELP z_total Z\n# TYPE z_total counter\nz_total{r=\"b\"} 1\nz_total{r=\"a\"} 2\n\n\
                 # HELP h_seconds H\n# TYPE h_seconds histogram\n\
                 h_seconds_bucket{k=\"y\",le=\"0.1\"} 1\nh_seconds_bucket{k=\"y\",le=\"+Inf\"} 1\nh_seconds_sum{k=\"y\"} 0.05\nh_seconds_count{k=\"y\"} 1\n\
                 h_seconds_bucket{k=\"x\",le=\"0.1\"} 0\nh_seconds_bucket{k=\"x\",le=\"+Inf\"} 0\nh_seconds_sum{k=\"x\"} 0\nh_seconds_count{k=\"x\"} 0\n\n";
        let want = "# HELP h_seconds H\n# TYPE h_seconds histogram\n\
                    h_seconds_bucket{k=\"x\",le=\"0.1\"} 0\nh_seconds_bucket{k=\"x\",le=\"+Inf\"} 0\nh_seconds_sum{k=\"x\"} 0\nh_seconds_count{k=\"x\"} 0\n\
                    h_seconds_bucket{k=\"y\",le=\"0.1\"} 1\nh_seconds_bucket{k=\"y\",le=\"+Inf\"} 1\nh_seconds_sum{k=\"y\"} 0.05\nh_seconds_count{k=\"y\"} 1\n\n\
                    # HELP z_total Z\n# TYPE z_total counter\nz_total{r=\"a\"} 2\nz_total{r=\"b\"} 1\n\n";
        assert_eq!(stable_order(a), want);
        assert_eq!(stable_order(want), want, "already in order: unchanged");
    }

    #[test]
    fn the_page_marks_what_cannot_serve_and_names_no_dead_leader() {
        use crate::node::{GroupStatus, NodeLiveness, RangeHealth, Readiness};
        use meridian_shard::paxos::{Config, NodeId};
        use meridian_shard::range::{NodeInfo, RangeDescriptor};
        let node =
            |id: u64| NodeInfo { id: NodeId(id), addr: format!("127.0.0.1:700{id}"), http_addr: None, pg_addr: None };
        let desc = RangeDescriptor {
            id: meridian_shard::GroupId(7),
            start: vec![1],
            end: Vec::new(),
            config: Config::voters([NodeId(1), NodeId(2), NodeId(3)]),
            generation: 1,
        };
        let detail = "no leader: its last known leader n2 is unreachable".to_string();
        let group = GroupStatus {
            desc,
            role: "Follower".into(),
            ballot: "4.2".into(),
            leader: Some(NodeId(2)),
            lease_end: None,
            chosen: meridian_storage::Slot(9),
            applied: meridian_storage::Slot(9),
            last_write_ts: Timestamp::ZERO,
            prepared_count: 0,
            prepared: Vec::new(),
            lock_txns: 0,
            locks_held: 0,
            lock_waits: 0,
            health: RangeHealth { servable: false, detail: detail.clone(), replicas: 3, reachable: 1 },
        };
        let now = Timestamp::from_nanos(1_795_563_601_000_000_000);
        let s = NodeStatus {
            node: NodeId(1),
            cluster_id: "c".into(),
            nodes: vec![node(1), node(2), node(3)],
            groups: vec![group],
            now_earliest: now,
            now_latest: now,
            readiness: Readiness {
                ready: false,
                summary: "1 of 1 hosted ranges cannot be served from here: r7".into(),
                problems: Vec::new(),
                warnings: vec!["under-replicated: <x>".into()],
            },
            liveness: vec![
                NodeLiveness {
                    node: NodeId(2),
                    up: false,
                    last_heard: Some(now),
                    why: "unreachable: sending to it fails".into(),
                },
                NodeLiveness { node: NodeId(3), up: true, last_heard: Some(now), why: String::new() },
            ],
        };
        let page = render_status(&s, Duration::from_millis(4));
        assert!(page.contains("<tr class=\"unservable\" id=\"range-r7\">"), "{page}");
        assert!(page.contains("<td>none (last known n2: down)</td>"), "{page}");
        assert!(page.contains(&format!("<td>{detail}</td>")), "{page}");
        assert!(
            page.contains(
                "<tr class=\"down\" id=\"node-n2\"><td>n2</td><td>DOWN: unreachable: sending to it fails</td>"
            ),
            "{page}"
        );
        assert!(page.contains("<tr class=\"up\" id=\"node-n3\">"), "{page}");
        assert!(page.contains("<p id=\"readiness\" class=\"not-ready\">NOT READY: 1 of 1"), "{page}");
        assert!(page.contains("<li class=\"warning\">under-replicated: &lt;x&gt;</li>"), "escaped: {page}");
        assert!(page.contains(&format!("<meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_SECS}\">")), "{page}");
    }

    #[test]
    fn ready_query_forms() {
        assert!(wants_ready(Some("ready=1")));
        assert!(wants_ready(Some("x=2&ready")));
        assert!(!wants_ready(Some("ready=0")));
        assert!(!wants_ready(None));
    }
}

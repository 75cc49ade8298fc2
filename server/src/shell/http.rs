//! # The node's HTTP endpoints (`meridian start --http-listen ADDR`)
//!
//! For operators and their tools, next to the gRPC port:
//!
//! | path | answer |
//! |---|---|
//! | `GET /health` | `200 ok` while the process runs |
//! | `GET /health?ready=1` | `200 ready` once the core thread answers, the node knows where the meta range lives and a leader for every range it hosts; else `503` and the reason in one line |
//! | `GET /status` | an HTML page (no scripts, no external assets): node, cluster, ε, TrueTime now, a `<table id="ranges">` of its replicas, the nodes it knows |
//! | `GET /metrics` | Prometheus text format |
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
/// Histogram buckets in seconds: 100 µs (a local fsync) to 10 s (the request timeout).
const BUCKETS_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// RocksDB integer properties exported per column family: (property, metric).
const ROCKS_PROPERTIES: [(&str, &str); 5] = [
    ("rocksdb.estimate-num-keys", "meridian_rocksdb_estimate_keys"),
    ("rocksdb.estimate-live-data-size", "meridian_rocksdb_live_data_bytes"),
    ("rocksdb.total-sst-files-size", "meridian_rocksdb_sst_files_bytes"),
    ("rocksdb.cur-size-all-mem-tables", "meridian_rocksdb_memtables_bytes"),
    ("rocksdb.estimate-pending-compaction-bytes", "meridian_rocksdb_pending_compaction_bytes"),
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
        Ok(()) => plain(StatusCode::OK, "ready\n".into()),
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
        let prepared: usize = s.groups.iter().map(|g| g.prepared_count).sum();
        metrics::gauge!("meridian_ranges_hosted").set(s.groups.len() as f64);
        metrics::gauge!("meridian_ranges_led").set(led as f64);
        metrics::gauge!("meridian_leases_held").set(leases as f64);
        metrics::gauge!("meridian_txn_prepared").set(prepared as f64);
    }
    metrics::gauge!("meridian_truetime_epsilon_seconds").set(st.tt.epsilon_now().as_secs_f64());
    for cf in Cf::ALL {
        for (property, name) in ROCKS_PROPERTIES {
            if let Ok(Some(v)) = st.rocks.property(cf, property) {
                metrics::gauge!(name, "cf" => cf.name()).set(v as f64);
            }
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
        .into_response()
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
pub fn render_status(s: &NodeStatus, epsilon: Duration) -> String {
    let local = s.now_earliest.saturating_add(s.now_latest.duration_since(s.now_earliest) / 2);
    let led = s.groups.iter().filter(|g| g.role == "Leader").count();
    let leases = s.groups.iter().filter(|g| g.lease_end.is_some()).count();
    let mut h = String::new();
    let title = format!("Meridian node {}", s.node);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         th,td{{border:1px solid #bbb;padding:2px 6px;text-align:left;font-size:90%;vertical-align:top}}\
         th{{background:#eee}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         tr.leader td{{background:#eef7ee}}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let _ = write!(
        h,
        "<table id=\"node\">\n<tr><th>node</th><td>{}</td></tr>\n<tr><th>cluster</th><td>{}</td></tr>\n\
         <tr><th>ε</th><td>{:.3} ms</td></tr>\n<tr><th>TrueTime now</th><td>[{}, {}]<br>{}</td></tr>\n\
         <tr><th>ranges</th><td>{} hosted, {} led, {} leases held</td></tr>\n</table>\n",
        escape(&s.node.to_string()),
        escape(&s.cluster_id),
        epsilon.as_secs_f64() * 1e3,
        s.now_earliest,
        s.now_latest,
        utc(local),
        s.groups.len(),
        led,
        leases
    );
    h.push_str(
        "<h2>Ranges</h2>\n<table id=\"ranges\">\n<thead><tr><th>range</th><th>span</th><th>voters</th>\
         <th>learners</th><th>role here</th><th>leader</th><th>ballot</th><th>lease end</th><th>chosen</th>\
         <th>applied</th><th>safe time (last write)</th><th>prepared transactions</th></tr></thead>\n<tbody>\n",
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
        let _ = writeln!(
            h,
            "<tr class=\"{class}\" id=\"range-{id}\"><td>{id}</td><td>{span}</td><td>{voters}</td><td>{learners}</td>\
             <td>{role}</td><td>{leader}</td><td>{ballot}</td><td>{lease}</td><td class=\"n\">{chosen}</td>\
             <td class=\"n\">{applied}</td><td>{safe}</td><td>{prepared}</td></tr>",
            class = if g.role == "Leader" { "leader" } else { "replica" },
            id = escape(&d.id.to_string()),
            span = escape(&span),
            voters = escape(&ids(&d.config.voters)),
            learners = escape(&ids(&d.config.learners)),
            role = escape(&g.role),
            leader = escape(&g.leader.map_or("unknown".into(), |l| l.to_string())),
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
        "<h2>Nodes</h2>\n<table id=\"nodes\">\n<thead><tr><th>node</th><th>gRPC</th><th>HTTP</th>\
         <th>PostgreSQL</th></tr></thead>\n<tbody>\n",
    );
    for n in &s.nodes {
        let http = match &n.http_addr {
            Some(a) => format!("<a href=\"http://{a}/status\">{a}</a>", a = escape(a)),
            None => "–".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&n.id.to_string()),
            escape(&n.addr),
            http,
            escape(n.pg_addr.as_deref().unwrap_or("–"))
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
    fn ready_query_forms() {
        assert!(wants_ready(Some("ready=1")));
        assert!(wants_ready(Some("x=2&ready")));
        assert!(!wants_ready(Some("ready=0")));
        assert!(!wants_ready(None));
    }
}

//! A server's counters in the Prometheus text exposition format: see [`render_prometheus`].

use std::fmt::Write;

use super::{ServerStats, Value, BUCKETS, LATENCY_BOUNDS};
use crate::proto::Code;

/// How a plain STATS counter is exposed: its STATS name, its metric name without the
/// `courier_` prefix, and its help text.
struct Plain {
    stats: &'static str,
    metric: &'static str,
    help: &'static str,
}

const fn plain(stats: &'static str, metric: &'static str, help: &'static str) -> Plain {
    Plain {
        stats,
        metric,
        help,
    }
}

/// Every STATS counter that is not one of a labelled family, in STATS order.
const PLAIN: [Plain; 24] = [
    plain("connections_open", "connections_open", "Connections open now."),
    plain("connections_accepted", "connections_accepted_total", "Connections accepted."),
    plain(
        "connections_rejected",
        "connections_rejected_total",
        "Connections refused because max_connections were open.",
    ),
    plain(
        "connections_rejected_fd",
        "connections_rejected_fd_total",
        "Connections refused because the process ran out of file descriptors.",
    ),
    plain("accept_errors", "accept_errors_total", "Other accept failures."),
    plain("frames_in", "frames_in_total", "Frames decoded, including frames that failed to decode."),
    plain("frames_out", "frames_out_total", "Frames queued for peers."),
    plain("bytes_in", "bytes_in_total", "Bytes read from sockets."),
    plain("bytes_out", "bytes_out_total", "Bytes written to sockets."),
    plain("handler_panics", "handler_panics_total", "Handlers that panicked (each answered INTERNAL)."),
    plain(
        "buffered_bytes",
        "buffered_bytes",
        "Bytes buffered by all connections, received and not yet decoded plus queued and not yet written.",
    ),
    plain("output_peak", "output_peak_bytes", "The most output ever queued on one connection."),
    plain(
        "output_paused",
        "output_paused_total",
        "Times a connection stopped being read because its output passed the high-water mark.",
    ),
    plain(
        "in_flight_paused",
        "in_flight_paused_total",
        "Times a connection stopped being read because max_in_flight requests were running.",
    ),
    plain(
        "turn_yields",
        "turn_yields_total",
        "Times a connection used up its frames-per-turn budget and yielded to the others.",
    ),
    plain(
        "blocking_in_flight",
        "blocking_in_flight",
        "Blocking requests queued or running on the worker pool.",
    ),
    plain(
        "blocking_rejected",
        "blocking_rejected_total",
        "Blocking requests answered UNAVAILABLE because the worker pool's queue was full.",
    ),
    plain(
        "blocking_expired",
        "blocking_expired_total",
        "Blocking requests answered DEADLINE_EXCEEDED because their deadline passed in the queue.",
    ),
    plain(
        "deadline_expired",
        "deadline_expired_total",
        "Requests answered DEADLINE_EXCEEDED without running because their deadline had passed.",
    ),
    plain(
        "input_peak",
        "input_peak_bytes",
        "The most input one connection ever held received and not yet decoded.",
    ),
    plain("tls_handshakes", "tls_handshakes_total", "TLS handshakes completed."),
    plain(
        "tls_on_plain_port",
        "tls_on_plain_port_total",
        "TLS records received on a plaintext port (answered with ERROR and closed).",
    ),
    plain("auth_ok", "auth_ok_total", "AUTH calls that gave the connection an identity."),
    plain("auth_failed", "auth_failed_total", "AUTH calls refused."),
];

/// The STATS counters spelled as one name per kind: the STATS prefix, the metric, its label
/// and its help.
const FAMILIES: [(&str, &str, &str, &str); 4] = [
    (
        "closed_",
        "connections_closed_total",
        "cause",
        "Connections the server closed or finished, by cause.",
    ),
    (
        "decode_errors_",
        "decode_errors_total",
        "kind",
        "Frames that failed to decode, by kind.",
    ),
    (
        "tls_alerts_sent_",
        "tls_alerts_sent_total",
        "alert",
        "TLS alerts sent, by RFC 8446 name.",
    ),
    (
        "tls_alerts_received_",
        "tls_alerts_received_total",
        "alert",
        "TLS alerts received, by RFC 8446 name.",
    ),
];

/// Appends `stats` to `out` in the Prometheus text exposition format, version 0.0.4 (the
/// format of `Content-Type: text/plain; version=0.0.4`, specified in Prometheus's "Exposition
/// formats" document): `# HELP` and `# TYPE` lines, then one `name{labels} value` line per
/// series.
///
/// Every STATS counter appears, under the name `courier_<name>` (counters end in `_total`,
/// the format's convention), with the counters that STATS spells as one name per kind turned
/// into one metric with a label:
///
/// | STATS names | metric |
/// |---|---|
/// | `closed_<cause>` | `courier_connections_closed_total{cause="<cause>"}` |
/// | `decode_errors_<KIND>` | `courier_decode_errors_total{kind="<KIND>"}` |
/// | `tls_alerts_sent_<alert>` | `courier_tls_alerts_sent_total{alert="<alert>"}` |
/// | `tls_alerts_received_<alert>` | `courier_tls_alerts_received_total{alert="<alert>"}` |
/// | `requests_<CODE>` | `courier_requests_total{method="<name>",code="<CODE>"}` (by method) |
///
/// and per method (the router's names, `unknown` for requests for no served method):
///
/// - `courier_requests_total{method,code}`: requests answered, by status code name (a series
///   for OK always, and one for each other code a method has answered);
/// - `courier_request_duration_seconds{method}`: a histogram of the server's latency (see
///   [Per-method counters](super#per-method-counters)), buckets [`LATENCY_BOUNDS`].
///
/// # Examples
///
/// ```
/// use courier_rpc::stats::{render_prometheus, ServerStats, Stats};
/// use std::sync::Arc;
///
/// let stats = ServerStats::new(vec![Arc::new(Stats::new())]);
/// let mut text = String::new();
/// render_prometheus(&stats, &mut text);
/// assert!(text.contains("# TYPE courier_frames_in_total counter\ncourier_frames_in_total 0\n"));
/// ```
pub fn render_prometheus(stats: &ServerStats, out: &mut String) {
    let values = stats.values();
    let value_of = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    for p in &PLAIN {
        let Some(value) = value_of(p.stats) else {
            continue;
        };
        let kind = match value {
            Value::Count(_) => "counter",
            Value::Gauge(_) | Value::Peak(_) => "gauge",
        };
        header(out, p.metric, kind, p.help);
        let _ = writeln!(out, "courier_{} {}", p.metric, value.read());
    }
    for (prefix, metric, label, help) in FAMILIES {
        header(out, metric, "counter", help);
        for (name, value) in &values {
            if let Some(kind) = name.strip_prefix(prefix) {
                let _ = write!(out, "courier_{metric}{{{label}=\"");
                escape(out, kind);
                let _ = writeln!(out, "\"}} {}", value.read());
            }
        }
    }
    let methods = stats.methods();
    header(
        out,
        "requests_total",
        "counter",
        "Requests answered, by method and status code.",
    );
    for m in &methods {
        for (code, &count) in Code::ALL.iter().zip(&m.codes) {
            if count == 0 && *code != Code::OK {
                continue;
            }
            out.push_str("courier_requests_total{method=\"");
            escape(out, m.name);
            let name = code.name().unwrap_or("UNKNOWN");
            let _ = writeln!(out, "\",code=\"{name}\"}} {count}");
        }
    }
    header(
        out,
        "request_duration_seconds",
        "histogram",
        "The server's latency per request, from the event-loop turn that read it to the queueing of its answer.",
    );
    for m in &methods {
        let mut cumulative = 0u64;
        for (i, &n) in m.buckets.iter().enumerate() {
            cumulative = cumulative.wrapping_add(n);
            out.push_str("courier_request_duration_seconds_bucket{method=\"");
            escape(out, m.name);
            out.push_str("\",le=\"");
            match LATENCY_BOUNDS.get(i) {
                Some(bound) => {
                    let _ = write!(out, "{bound}");
                }
                None => out.push_str("+Inf"),
            }
            let _ = writeln!(out, "\"}} {cumulative}");
        }
        debug_assert_eq!(m.buckets.len(), BUCKETS);
        for (suffix, value) in [
            ("sum", format!("{}", m.sum_ns as f64 / 1e9)),
            ("count", cumulative.to_string()),
        ] {
            let _ = write!(out, "courier_request_duration_seconds_{suffix}{{method=\"");
            escape(out, m.name);
            let _ = writeln!(out, "\"}} {value}");
        }
    }
}

fn header(out: &mut String, metric: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP courier_{metric} {help}");
    let _ = writeln!(out, "# TYPE courier_{metric} {kind}");
}

/// Appends a label value with `\`, `"` and line feeds escaped, as the format requires.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stats::Stats;

    /// Every STATS name is exposed: as a plain metric, in a family, or (`requests_<CODE>`) by
    /// method; so a counter added to STATS without a place here fails this test.
    #[test]
    fn every_stats_counter_has_a_metric() {
        let stats = ServerStats::new(vec![Arc::new(Stats::new())]);
        for (name, _) in stats.snapshot() {
            let placed = PLAIN.iter().any(|p| p.stats == name)
                || FAMILIES.iter().any(|(prefix, ..)| name.starts_with(prefix))
                || name.starts_with("requests_");
            assert!(placed, "{name} has no metric");
        }
    }

    #[test]
    fn renders_counters_families_and_a_histogram_per_method() {
        let names: Arc<[&'static str]> = vec!["kv.Get", "odd\"na\\me"].into();
        let a = Arc::new(Stats::with_methods(Arc::clone(&names)));
        let b = Arc::new(Stats::with_methods(names));
        let start = Instant::now();
        a.answered(0, Code::OK);
        a.answered(0, Code::NOT_FOUND);
        a.clock_answers(start, start + Duration::from_micros(20));
        b.answered(0, Code::OK);
        b.clock_answers(start, start + Duration::from_millis(3));
        b.answered(7, Code::UNIMPLEMENTED);
        b.clock_answers(start, start);
        crate::stats::inc(&a.frames_in);
        a.closed(crate::stats::CloseCause::Flood);
        let stats = ServerStats::new(vec![a, b]);
        let mut text = String::new();
        render_prometheus(&stats, &mut text);
        for line in [
            "# TYPE courier_frames_in_total counter",
            "courier_frames_in_total 1",
            "# TYPE courier_connections_open gauge",
            "courier_connections_closed_total{cause=\"flood\"} 1",
            "courier_decode_errors_total{kind=\"BAD_MAGIC\"} 0",
            "courier_requests_total{method=\"kv.Get\",code=\"OK\"} 2",
            "courier_requests_total{method=\"kv.Get\",code=\"NOT_FOUND\"} 1",
            "courier_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 1",
            "courier_requests_total{method=\"odd\\\"na\\\\me\",code=\"OK\"} 0",
            "# TYPE courier_request_duration_seconds histogram",
            "courier_request_duration_seconds_bucket{method=\"kv.Get\",le=\"0.00001\"} 0",
            "courier_request_duration_seconds_bucket{method=\"kv.Get\",le=\"0.000025\"} 2",
            "courier_request_duration_seconds_bucket{method=\"kv.Get\",le=\"0.0025\"} 2",
            "courier_request_duration_seconds_bucket{method=\"kv.Get\",le=\"0.005\"} 3",
            "courier_request_duration_seconds_bucket{method=\"kv.Get\",le=\"+Inf\"} 3",
            "courier_request_duration_seconds_count{method=\"kv.Get\"} 3",
            "courier_request_duration_seconds_sum{method=\"kv.Get\"} 0.00304",
            "courier_request_duration_seconds_bucket{method=\"unknown\",le=\"0.00001\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        // No code but OK gets a series before it is answered.
        assert!(!text.contains("method=\"kv.Get\",code=\"INTERNAL\""));
        // Each family is declared once.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(types, PLAIN.len() + FAMILIES.len() + 2);
    }
}

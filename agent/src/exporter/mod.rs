//! The Prometheus/OpenMetrics exporter's transport and format: a plain [`Exposition`] of values, encoded with
//! `prometheus-client` (never by hand), and served by a small HTTP responder on threads of its own
//! ([`http`]). Like `crate::server`, it knows nothing of the agent: the agent thread builds each
//! [`Exposition`] from the stream's ticks and stall events (`crate::stream::metrics`) and publishes it here,
//! and a scrape only reads the latest one. Scrapes never touch the hooks, the tables or the app's runtime.

pub(crate) mod http;

use loopscope_wire::LogHistogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Error as FmtError;
use std::sync::Arc;
use std::time::Duration;

/// A histogram ready to encode: per-bucket (not cumulative) counts with each bucket's upper bound in
/// seconds, the last bound `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Hist {
    pub(crate) sum_seconds: f64,
    pub(crate) count: u64,
    pub(crate) buckets: Vec<(f64, u64)>,
}

impl Hist {
    /// From one of the agent's log-scale histograms and the exact sum of what it holds. Bucket `i` holds
    /// durations below `2^(10+i)` ns; that bound is used as `le` (inclusive in Prometheus), which is off by
    /// one nanosecond — far below what any bucket resolves.
    pub(crate) fn from_log(h: &LogHistogram, sum: Duration) -> Hist {
        let buckets = (0..h.counts.len())
            .map(|i| {
                let upper = h.bucket_range(i).1.map_or(f64::INFINITY, |d| d.as_secs_f64());
                (upper, h.counts[i])
            })
            .collect();
        Hist { sum_seconds: sum.as_secs_f64(), count: h.count(), buckets }
    }
}

/// One `loopscope_stalls_total` series: its labels and count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StallSeries {
    pub(crate) kind: &'static str,
    pub(crate) classification: &'static str,
    /// A spawn location (`file:line:col`), `other` past the cap, or `unknown`.
    pub(crate) location: String,
}

/// One worker's series.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct WorkerSeries {
    pub(crate) index: u32,
    pub(crate) busy_seconds_total: f64,
    /// Busy time over the last sample interval, 0 to 1.
    pub(crate) busy_ratio: f64,
    pub(crate) local_queue_depth: u64,
}

/// Everything one scrape shows: plain values, published by the agent thread every sample interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Exposition {
    pub(crate) runtime_id: u64,
    pub(crate) runtime_name: String,
    /// `multi_thread`, `current_thread`, or empty until the runtime runs.
    pub(crate) flavor: String,
    pub(crate) stalls: Vec<(StallSeries, u64)>,
    pub(crate) stall_duration: Hist,
    pub(crate) stalled_workers: u64,
    pub(crate) poll_duration: Hist,
    pub(crate) polls_total: u64,
    pub(crate) workers: Vec<WorkerSeries>,
    pub(crate) global_queue_depth: u64,
    pub(crate) blocking_queue_depth: u64,
    /// By probe: `first_poll` (a task handed in from outside until its first poll), `timer` (how late a
    /// 20 ms timer fires).
    pub(crate) scheduling_delay: Vec<(&'static str, Hist)>,
    /// By what was lost.
    pub(crate) dropped: Vec<(&'static str, u64)>,
}

/// The two text formats Prometheus accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0 (what Prometheus asks for first).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (for clients that don't ask for OpenMetrics, e.g. curl).
    Text,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` header names it, else the classic text format, which every
    /// Prometheus-compatible scraper reads.
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.to_ascii_lowercase().contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Encodes an exposition. Runs on the scrape's own thread.
pub(crate) fn render(e: Arc<Exposition>, format: Format) -> Result<String, FmtError> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collect(e)));
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

/// The exposition as a `prometheus-client` collector: each scrape encodes the values as they were
/// published, with the crate's own encoders (names, suffixes, escaping, `# EOF`).
#[derive(Debug)]
struct Collect(Arc<Exposition>);

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), FmtError> {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?.encode_counter::<NoLabelSet, _, f64>(&v, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> Result<(), FmtError> {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?.encode_gauge(&v)
}

fn histogram(m: &mut prometheus_client::encoding::MetricEncoder, h: &Hist) -> Result<(), FmtError> {
    m.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), FmtError> {
        let e = &*self.0;
        let seconds = Unit::Seconds;
        {
            let info = prometheus_client::metrics::info::Info::new([("version", env!("CARGO_PKG_VERSION"))]);
            let m =
                enc.encode_descriptor("loopscope_build", "The loopscope agent's version.", None, info.metric_type())?;
            info.encode(m)?;
        }
        {
            let id = e.runtime_id.to_string();
            let labels =
                [("runtime_id", id.as_str()), ("name", e.runtime_name.as_str()), ("flavor", e.flavor.as_str())];
            let info = prometheus_client::metrics::info::Info::new(labels);
            let m = enc.encode_descriptor(
                "loopscope_runtime",
                "The tokio runtime this agent watches: its id in the process, the name given to the agent, its flavor.",
                None,
                info.metric_type(),
            )?;
            info.encode(m)?;
        }
        {
            let mut m = enc.encode_descriptor(
                "loopscope_stalls",
                "Polls that held their thread past the stall threshold, counted when they end, by kind, final \
                 classification and spawn location (locations past the cap count as \"other\").",
                None,
                MetricType::Counter,
            )?;
            for (s, n) in &e.stalls {
                let labels =
                    [("kind", s.kind), ("classification", s.classification), ("location", s.location.as_str())];
                m.encode_family(&labels)?.encode_counter::<NoLabelSet, _, f64>(n, None)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "loopscope_stall_duration",
                "How long each stall held its thread, recorded when it ends.",
                Some(&seconds),
                MetricType::Histogram,
            )?;
            histogram(&mut m, &e.stall_duration)?;
        }
        gauge(
            &mut enc,
            "loopscope_stalled_workers",
            "Workers whose current poll has run past the stall threshold (stalls still going on, not yet counted).",
            None,
            e.stalled_workers,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "loopscope_poll_duration",
                "How long each task poll took.",
                Some(&seconds),
                MetricType::Histogram,
            )?;
            histogram(&mut m, &e.poll_duration)?;
        }
        counter(&mut enc, "loopscope_task_polls", "Task polls timed.", e.polls_total)?;
        {
            let mut m = enc.encode_descriptor(
                "loopscope_worker_busy",
                "Time each worker spent running tasks (tokio's busy duration); rate() of it is the busy ratio.",
                Some(&seconds),
                MetricType::Counter,
            )?;
            for w in &e.workers {
                let index = w.index.to_string();
                m.encode_family(&[("worker", index.as_str())])?
                    .encode_counter::<NoLabelSet, _, f64>(&w.busy_seconds_total, None)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "loopscope_worker_busy_ratio",
                "Share of the last sample interval each worker spent running tasks (0 to 1).",
                None,
                MetricType::Gauge,
            )?;
            for w in &e.workers {
                let index = w.index.to_string();
                m.encode_family(&[("worker", index.as_str())])?.encode_gauge(&w.busy_ratio)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "loopscope_worker_local_queue_depth",
                "Tasks waiting in each worker's local run queue.",
                None,
                MetricType::Gauge,
            )?;
            for w in &e.workers {
                let index = w.index.to_string();
                m.encode_family(&[("worker", index.as_str())])?.encode_gauge(&w.local_queue_depth)?;
            }
        }
        gauge(
            &mut enc,
            "loopscope_global_queue_depth",
            "Tasks waiting in the runtime's global (injection) queue.",
            None,
            e.global_queue_depth,
        )?;
        gauge(
            &mut enc,
            "loopscope_blocking_queue_depth",
            "spawn_blocking tasks waiting for a blocking thread.",
            None,
            e.blocking_queue_depth,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "loopscope_scheduling_delay",
                "Lag probes: how long a task handed in from outside waited for its first poll (probe=\"first_poll\"), \
                 and how late a 20 ms timer fired (probe=\"timer\").",
                Some(&seconds),
                MetricType::Histogram,
            )?;
            for (probe, h) in &e.scheduling_delay {
                let labels = [("probe", *probe)];
                histogram(&mut m.encode_family(&labels)?, h)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "loopscope_dropped",
                "What the agent lost to stay within its bounds, by what (should stay 0).",
                None,
                MetricType::Counter,
            )?;
            for (what, n) in &e.dropped {
                m.encode_family(&[("what", *what)])?.encode_counter::<NoLabelSet, _, f64>(n, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Exposition {
        let mut poll = LogHistogram::new(4);
        poll.record(Duration::from_micros(1));
        poll.record(Duration::from_secs(1));
        Exposition {
            runtime_id: 3,
            runtime_name: "api \"v2\"".into(),
            flavor: "multi_thread".into(),
            stalls: vec![(
                StallSeries { kind: "worker_blocked", classification: "syscall", location: "src/a.rs:1:2".into() },
                2,
            )],
            poll_duration: Hist::from_log(&poll, Duration::from_micros(1_000_001)),
            polls_total: 2,
            ..Exposition::default()
        }
    }

    #[test]
    fn both_formats_carry_the_names_prometheus_expects() {
        for format in [Format::OpenMetrics, Format::Text] {
            let text = render(Arc::new(sample()), format).unwrap();
            assert!(
                text.contains(
                    r#"loopscope_stalls_total{kind="worker_blocked",classification="syscall",location="src/a.rs:1:2"} 2"#
                ),
                "{text}"
            );
            assert!(text.contains("loopscope_poll_duration_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
            assert!(text.contains("loopscope_poll_duration_seconds_count 2"), "{text}");
            // The name is escaped by the library, not by us.
            assert!(text.contains(r#"name="api \"v2\"""#), "{text}");
            assert_eq!(text.ends_with("# EOF\n"), format == Format::OpenMetrics, "{text}");
        }
    }

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                          q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}

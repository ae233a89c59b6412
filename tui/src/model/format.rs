//! Numbers as the dashboard prints them: durations, counts and rates in a few cells, and sparklines.

use std::time::Duration;

/// A duration in the shortest readable form: `850ns`, `12.3µs`, `4.5ms`, `1.23s`, `2m03s`.
pub fn fmt_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n < 1_000 {
        format!("{n}ns")
    } else if n < 1_000_000 {
        fmt_3(n as f64 / 1e3, "µs")
    } else if n < 1_000_000_000 {
        fmt_3(n as f64 / 1e6, "ms")
    } else if n < 60_000_000_000 {
        fmt_3(n as f64 / 1e9, "s")
    } else {
        let s = d.as_secs();
        if s < 3600 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{}h{:02}m", s / 3600, (s / 60) % 60) }
    }
}

/// Three significant digits at most (`1.23`, `12.3`, `123`), so columns stay narrow.
fn fmt_3(v: f64, unit: &str) -> String {
    if v < 10.0 {
        format!("{v:.2}{unit}")
    } else if v < 100.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// A duration given in nanoseconds; see [`fmt_duration`].
pub fn fmt_nanos(n: u64) -> String {
    fmt_duration(Duration::from_nanos(n))
}

/// A count with a k/M/G suffix past 10,000: `9999`, `12.3k`, `4.56M`.
pub fn fmt_count(n: u64) -> String {
    if n < 10_000 {
        n.to_string()
    } else if n < 10_000_000 {
        fmt_3(n as f64 / 1e3, "k")
    } else if n < 10_000_000_000 {
        fmt_3(n as f64 / 1e6, "M")
    } else {
        fmt_3(n as f64 / 1e9, "G")
    }
}

/// A rate with a k/M suffix: `0`, `12.5`, `340`, `12.3k`.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        "0".into()
    } else if r < 100.0 {
        format!("{r:.1}")
    } else if r < 10_000.0 {
        format!("{r:.0}")
    } else if r < 10_000_000.0 {
        fmt_3(r / 1e3, "k")
    } else {
        fmt_3(r / 1e6, "M")
    }
}

/// The blocks sparklines are drawn with, lowest first.
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values as a one-line sparkline scaled to `max(values, floor)`. A series of zeros is a
/// flat line of the lowest block, so an idle queue still reads as "measured, empty".
pub fn sparkline<I>(values: I, width: usize, floor: f64) -> String
where
    I: DoubleEndedIterator<Item = f64> + ExactSizeIterator,
{
    let skip = values.len().saturating_sub(width);
    let vals: Vec<f64> = values.skip(skip).collect();
    let max = vals.iter().copied().fold(floor, f64::max);
    let mut s: String = vals
        .iter()
        .map(|v| {
            let i = if max > 0.0 { ((v / max) * (SPARK.len() - 1) as f64).round() as usize } else { 0 };
            SPARK[i.min(SPARK.len() - 1)]
        })
        .collect();
    // Right-align: the newest value sits at the right edge, as in htop and bottom.
    let pad = width.saturating_sub(vals.len());
    s.insert_str(0, &" ".repeat(pad));
    s
}

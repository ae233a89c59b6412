//! The Histograms screen: poll durations and scheduling delay on log scales.

use super::style::DIM;
use super::style::TITLE;
use super::style::delay_style;
use crate::model;
use crate::model::fmt_count;
use crate::model::fmt_duration;
use crate::model::fmt_nanos;
use loopscope_wire::LogHistogram;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Constraint;
use ratatui::layout::Layout;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Paragraph;
use std::time::Duration;

/// A bar `width` cells long at most, its length proportional to log(1 + count): a log scale, so one slow
/// poll among a million fast ones is still visible.
pub(super) fn log_bar(count: u64, max: u64, width: usize) -> String {
    if count == 0 || max == 0 {
        return " ".repeat(width);
    }
    let frac = ((count as f64).ln_1p() / (max as f64).ln_1p()).clamp(0.0, 1.0);
    let eighths = ((frac * width as f64 * 8.0).round() as usize).max(1);
    const PARTS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTS[eighths % 8 - 1]);
    }
    let len = s.chars().count();
    s.push_str(&" ".repeat(width.saturating_sub(len)));
    s
}

pub(super) fn draw_histogram(f: &mut Frame<'_>, area: Rect, title: &str, subtitle: String, h: &LogHistogram) {
    let block = Block::bordered().title(Span::styled(format!(" {title} "), TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut lines = vec![Line::from(Span::styled(fit_parts(&subtitle, usize::from(inner.width)), DIM))];
    let rows = usize::from(inner.height).saturating_sub(2);
    let mut range = model::shown_buckets(h, rows.min(8));
    // Too many buckets for the height: keep the slow end, it is what matters here.
    if range.len() > rows {
        range.start = range.end - rows;
    }
    let max = h.counts.iter().copied().max().unwrap_or(0);
    let total = h.count();
    let bar_w = usize::from(inner.width).saturating_sub(8 + 1 + 8 + 6);
    for i in range {
        let c = h.counts.get(i).copied().unwrap_or(0);
        let pct = if total > 0 { format!("{:>4.0}%", c as f64 * 100.0 / total as f64) } else { "    -".into() };
        let (lo, _) = h.bucket_range(i);
        let style = delay_style(lo);
        lines.push(Line::from(vec![
            Span::styled(format!("{:>8} ", model::bucket_label(h, i)), DIM),
            Span::styled(log_bar(c, max, bar_w), style.fg(style.fg.unwrap_or(Color::Cyan))),
            Span::raw(format!("{:>8}", fmt_count(c))),
            Span::styled(pct, DIM),
        ]));
    }
    let last = h.counts.len().saturating_sub(1);
    let mut note = "log-scale bars; each row ×2".to_string();
    if h.counts.get(last).is_some_and(|&c| c > 0) && h.bucket_range(last).0 < Duration::from_secs(1) {
        // An open-ended last bucket below a second: say where the longer ones are told apart.
        let more = format!("; {}: see Stall durations", model::bucket_label(h, last));
        if note.chars().count() + more.chars().count() <= usize::from(inner.width) {
            note.push_str(&more);
        }
    }
    lines.push(Line::from(Span::styled(note, DIM)));
    f.render_widget(Paragraph::new(lines), inner);
}

/// The leading `"  "`-separated parts of `s` that fit in `width` cells: a narrow pane drops whole figures
/// (p99.9 first) rather than cutting one in half.
pub(super) fn fit_parts(s: &str, width: usize) -> String {
    let mut out = String::new();
    for part in s.split("  ") {
        let sep = if out.is_empty() { 0 } else { 2 };
        if out.chars().count() + sep + part.chars().count() > width {
            break;
        }
        if sep > 0 {
            out.push_str("  ");
        }
        out.push_str(part);
    }
    out
}

pub(super) fn quantiles(h: &LogHistogram) -> String {
    let q = |p: f64| h.quantile(p).map_or_else(|| "-".to_string(), |d| format!("≤{}", fmt_duration(d)));
    format!("n {}  p50 {}  p99 {}  p99.9 {}", fmt_count(h.count()), q(0.5), q(0.99), q(0.999))
}

pub(super) fn draw_histograms(f: &mut Frame<'_>, area: Rect, state: &State) {
    let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let polls = state.poll_histogram();
    draw_histogram(f, left, "Poll duration (every poll)", quantiles(polls), polls);
    let [sched, stalls] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    let wait = &state.waits().first_poll_delay;
    let recent = match (wait.recent_p50_nanos, wait.recent_p99_nanos) {
        (Some(a), Some(b)) => format!("recent p50 {} p99 {}", fmt_nanos(a), fmt_nanos(b)),
        _ => quantiles(&wait.histogram),
    };
    draw_histogram(f, sched, "Scheduling delay (spawn → first poll)", recent, &wait.histogram);
    // The agent's poll histograms end at about 1.07 s (at 16.8 ms in recordings from before issue 14 item 5);
    // the stalls' own durations (from their events, to a minute and more) show how long the longest were.
    let st = state.stall_histogram();
    draw_histogram(f, stalls, "Stall durations (ended stalls)", quantiles(st), st);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bars_fill_and_scale() {
        assert_eq!(log_bar(0, 100, 4), "    ");
        assert_eq!(log_bar(100, 100, 4), "████");
        assert_eq!(log_bar(1, 1_000_000, 4).chars().count(), 4);
        assert!(!log_bar(1, 1_000_000, 4).trim().is_empty(), "one count among a million stays visible");
    }

    #[test]
    fn narrow_panes_drop_whole_figures() {
        let s = "n 3493  p50 ≤32.8µs  p99 ≤262µs  p99.9 ≤2.10ms";
        assert_eq!(fit_parts(s, 80), s);
        assert_eq!(fit_parts(s, 38), "n 3493  p50 ≤32.8µs  p99 ≤262µs");
        assert_eq!(fit_parts(s, 5), "");
    }
}

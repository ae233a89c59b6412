//! The two header lines: runtime-wide figures, scheduling delay, dropped data, probes.

use super::stall_list::fmt_whole_secs;
use super::status::Status;
use super::style::ALERT;
use super::style::DIM;
use super::style::GOOD;
use super::style::WARN;
use super::style::delay_style;
use super::style::ratio_style;
use crate::model;
use crate::model::fmt_count;
use crate::model::fmt_duration;
use crate::model::fmt_rate;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Paragraph;
use std::time::Duration;

pub(super) fn draw_header(f: &mut Frame<'_>, area: Rect, state: &State, status: &Status) {
    let h = model::header_stats(state, status.rate_window);
    let label = |s: &'static str| Span::styled(s, DIM);
    let busy_style = ratio_style(h.busy_ratio);
    let stall_style = if h.stalls_per_minute > 0.0 { ALERT } else { GOOD };
    let line1 = Line::from(vec![
        label("up "),
        Span::raw(fmt_whole_secs(h.uptime)),
        label("  workers "),
        Span::raw(h.workers.to_string()),
        label("  tasks "),
        Span::raw(fmt_count(h.alive_tasks)),
        label("  polls/s "),
        Span::raw(fmt_rate(h.polls_per_second)),
        label("  busy "),
        Span::styled(format!("{:.0}%", h.busy_ratio * 100.0), busy_style),
        label("  stalls/min "),
        Span::styled(format!("{:.1}", h.stalls_per_minute), stall_style),
        Span::styled(format!(" ({} total)", h.stalls_total), DIM),
    ]);
    let sched = |d: Option<Duration>| d.map_or_else(|| "-".to_string(), fmt_duration);
    let dropped = if h.dropped_total == 0 {
        Span::styled("0", GOOD)
    } else {
        Span::styled(format!("{} ({})", h.dropped_total, h.dropped_detail.join(", ")), WARN)
    };
    let names = h.probes_active.join(" ");
    let probes = if h.probes_active.is_empty() && h.probes_inactive.is_empty() {
        Span::styled("none reported", DIM)
    } else if h.probes_active.is_empty() {
        Span::styled("none active", WARN)
    } else if usize::from(area.width) < 52 + dropped.width() + names.len() {
        // Too long for the line: the count says whether stacks and syscalls will be there.
        let total = h.probes_active.len() + h.probes_inactive.len();
        Span::raw(format!("{}/{total} active", h.probes_active.len()))
    } else {
        Span::raw(names)
    };
    let mut line1 = line1;
    let mut line2 = Line::from(vec![
        label("sched delay p50 "),
        Span::raw(sched(h.sched_p50)),
        label(" p99 "),
        Span::styled(sched(h.sched_p99), h.sched_p99.map_or(Style::new(), delay_style)),
        label("  dropped "),
        dropped,
        label("  probes "),
        probes,
    ]);
    // Which window the rates cover (they are averaged, not raw samples): wherever it fits.
    let window = Span::styled(format!("  rates: {}", h.window), DIM);
    let width = usize::from(area.width);
    if line2.width() + window.width() <= width {
        line2.push_span(window);
    } else if line1.width() + window.width() <= width {
        line1.push_span(window);
    }
    f.render_widget(Paragraph::new(vec![line1, line2]), area);
}

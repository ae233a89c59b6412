//! The detail panes of the Tasks screen: one task, or one spawn location, with a one-line histogram.

use super::histograms::log_bar;
use super::style::DIM;
use super::style::TITLE;
use super::style::WARN;
use crate::model;
use crate::model::TaskRow;
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
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Borders;
use ratatui::widgets::Paragraph;
use ratatui::widgets::Wrap;

pub(super) fn draw_task_detail(f: &mut Frame<'_>, area: Rect, state: &State, row: Option<TaskRow<'_>>) {
    let block = Block::new().borders(Borders::TOP).title(Span::styled(" Task detail (Esc closes) ", TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(r) = row else {
        f.render_widget(Paragraph::new(Span::styled("no task selected", DIM)), inner);
        return;
    };
    let t = r.task;
    let loc = state.task_location(t).map_or_else(|| "unknown".to_string(), crate::model::short_location);
    let now = match (r.finished, r.running) {
        (true, _) => Span::styled("  finished", DIM),
        (false, Some(d)) => Span::styled(format!("  polling now for {}", fmt_duration(d)), WARN),
        (false, None) => Span::raw(""),
    };
    let lines = vec![
        Line::from(vec![
            Span::styled("task ", DIM),
            Span::raw(t.id.to_string()),
            now,
            Span::styled("  spawned at ", DIM),
            Span::raw(loc),
        ]),
        Line::from(vec![
            Span::styled("polls ", DIM),
            Span::raw(r.polls().to_string()),
            Span::styled("  poll time ", DIM),
            Span::raw(fmt_nanos(r.busy_nanos())),
            Span::styled("  mean poll ", DIM),
            Span::raw(fmt_nanos(r.busy_nanos().checked_div(r.polls()).unwrap_or(0))),
            Span::styled("  max ", DIM),
            Span::raw(fmt_nanos(r.max_poll_nanos())),
            Span::styled(if r.includes_unsampled() { "  (incl. the stall log)" } else { "" }, DIM),
        ]),
    ];
    let mut lines = lines;
    // Scheduled time (wake to poll) in total, when the source measured it but sent no distribution for the
    // table's p99 column (console mode: console's histograms are per task, on a stream of their own).
    if let Some(l) = t.schedule_latency.as_ref().filter(|l| l.total_nanos > 0 && l.histogram.count() == 0)
        && let Some(second) = lines.get_mut(1)
    {
        second.push_span(Span::styled("  scheduled ", DIM));
        second.push_span(Span::raw(fmt_nanos(l.total_nanos)));
        second.push_span(Span::styled(" (mean ", DIM));
        second.push_span(Span::raw(fmt_nanos(l.total_nanos.checked_div(l.count).unwrap_or(0))));
        second.push_span(Span::styled(")", DIM));
    }
    let [text, hist] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    f.render_widget(Paragraph::new(lines), text);
    if t.poll_histogram.count() == 0 {
        let console = state
            .hello()
            .is_some_and(|h| h.capabilities.missing.iter().any(|m| m == crate::console::CONSOLE_MODE_NOTE));
        let why = if console {
            "poll durations: not in console mode (console-subscriber sends them per task, on a stream of their own)"
        } else if r.finished {
            "poll durations: none sent (the task ended before the agent sampled its polls)"
        } else {
            "poll durations: none sampled yet (the agent sends them with its next sample of the task)"
        };
        f.render_widget(Paragraph::new(Span::styled(why, DIM)).wrap(Wrap { trim: true }), hist);
    } else {
        draw_inline_histogram(f, hist, &t.poll_histogram);
    }
}

pub(super) fn draw_location_detail(f: &mut Frame<'_>, area: Rect, row: Option<&model::LocationRow<'_>>) {
    let block = Block::new().borders(Borders::TOP).title(Span::styled(" Location detail (Esc closes) ", TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(r) = row else {
        f.render_widget(Paragraph::new(Span::styled("no location selected", DIM)), inner);
        return;
    };
    let s = r.stats;
    let lines = vec![
        Line::from(vec![Span::styled("spawned at ", DIM), Span::raw(crate::model::short_location(r.location))]),
        Line::from(vec![
            Span::styled("tasks spawned ", DIM),
            Span::raw(s.map_or(0, |s| s.spawned_tasks).to_string()),
            Span::styled("  live ", DIM),
            Span::raw(s.map_or(0, |s| s.live_tasks).to_string()),
            Span::styled("  stalls ", DIM),
            Span::raw(s.map_or(0, |s| s.stall_count).to_string()),
        ]),
    ];
    let [text, hist] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    f.render_widget(Paragraph::new(lines), text);
    if let Some(s) = s {
        draw_inline_histogram(f, hist, &s.poll_histogram);
    }
}

/// A histogram as columns of blocks with the bucket bounds under it, for the detail panes.
pub(super) fn draw_inline_histogram(f: &mut Frame<'_>, area: Rect, h: &LogHistogram) {
    if area.height == 0 {
        return;
    }
    let range = model::shown_buckets(h, 6);
    let max = h.counts.iter().copied().max().unwrap_or(0);
    let mut line = vec![Span::styled("poll durations  ", DIM)];
    for i in range {
        let c = h.counts.get(i).copied().unwrap_or(0);
        line.push(Span::styled(format!("{} ", model::bucket_label(h, i)), DIM));
        line.push(Span::styled(log_bar(c, max, 4), Style::new().fg(Color::Cyan)));
        line.push(Span::raw(format!(" {}  ", fmt_count(c))));
    }
    f.render_widget(Paragraph::new(Line::from(line)).wrap(Wrap { trim: false }), area);
}

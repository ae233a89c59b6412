//! The workers table of the Overview: busy bar, local-queue sparkline, polls/s, and what each is doing now.

use super::status::Status;
use super::style::ALERT;
use super::style::DIM;
use super::style::SELECTED;
use super::style::TITLE;
use super::style::ratio_style;
use crate::model;
use crate::model::LiveStall;
use crate::model::fmt_duration;
use crate::model::fmt_rate;
use crate::model::short_location;
use crate::model::sparkline;
use crate::view::Screen;
use crate::view::{Shown, ViewState};
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Constraint;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Cell;
use ratatui::widgets::Row;
use ratatui::widgets::Table;
use std::time::Duration;

/// Draws the workers table; returns what it drew, for the selection and the mouse.
pub(super) fn draw_workers(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) -> Shown {
    let narrow = area.width < 100;
    let spark_w: usize = if narrow { 8 } else { 30 };
    let bar_w: usize = if narrow { 5 } else { 10 };
    let header = Row::new(vec!["wkr", "busy", "local queue", "polls/s", "now"]).style(DIM);
    let threshold = state.hello().map_or(Duration::from_millis(10), |h| h.stall_threshold);
    let samples = model::window_samples(state, status.rate_window);
    let total = state.workers().count();
    // Title and column header take two lines; when the rest cannot hold every worker, the last line says
    // how many are not shown, and the selection scrolls through them.
    let room = usize::from(area.height.saturating_sub(2));
    let height = if total > room { room.saturating_sub(1) } else { room };
    let sel = view.workers.shown(total);
    let start = view.workers.window_start_at(sel, height.max(1), total);
    let mut rows: Vec<Row<'_>> = state
        .workers()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, w)| {
            let busy = model::window_mean(&w.busy_ratio, samples).unwrap_or(0.0);
            let filled = ((busy * bar_w as f64).round() as usize).min(bar_w);
            let bar = format!("{}{} {:>3.0}%", "█".repeat(filled), "░".repeat(bar_w - filled), busy * 100.0);
            let queue = format!(
                "{} {}",
                sparkline(w.local_queue.iter().map(|&v| v as f64), spark_w, 4.0),
                w.sample.local_queue_depth
            );
            let pps = fmt_rate(model::window_mean(&w.polls_per_second, samples).unwrap_or(0.0));
            let now = match model::live_stall(state, w, status.now_unix_nanos) {
                Some(LiveStall { elapsed, task_id, location }) => {
                    // At 80 columns the path and line are what fits; wider, the column too.
                    let loc = match &location {
                        None => "unknown location".to_string(),
                        // The same path as everywhere else (two components), without the column.
                        Some(l) if narrow => {
                            short_location(l).rsplit_once(':').map_or_else(String::new, |(a, _)| a.to_string())
                        }
                        Some(l) => short_location(l),
                    };
                    Span::styled(format!("STALLED {} task {task_id} at {loc}", fmt_duration(elapsed)), ALERT)
                }
                None => match &w.sample.current_poll {
                    Some(p) if Duration::from_nanos(p.elapsed_nanos) < threshold => {
                        Span::styled(format!("polling task {}", p.task_id), DIM)
                    }
                    _ => Span::styled("idle", DIM),
                },
            };
            let row = Row::new(vec![
                Cell::from(format!("{:>3}", w.sample.index)),
                Cell::from(Span::styled(bar, ratio_style(busy))),
                Cell::from(queue),
                Cell::from(format!("{pps:>7}")),
                Cell::from(now),
            ]);
            if i == sel && view.screen == Screen::Overview { row.style(SELECTED) } else { row }
        })
        .collect();
    let hidden = total.saturating_sub(rows.len());
    if hidden > 0 {
        rows.push(Row::new(vec![Cell::from(""), Cell::from(Span::styled(format!("+{hidden} more (↑↓)"), DIM))]));
    }
    let widths = [
        Constraint::Length(3),
        Constraint::Length(u16::try_from(bar_w + 5).unwrap_or(10)),
        Constraint::Length(u16::try_from(spark_w + 5).unwrap_or(20)),
        Constraint::Length(7),
        Constraint::Min(10),
    ];
    let window = model::fmt_window(state, status.rate_window);
    let title =
        Line::from(vec![Span::styled(" Workers ", TITLE), Span::styled(format!("busy, polls/s: {window} "), DIM)]);
    let block = Block::new().title(title);
    let inner = block.inner(area);
    f.render_widget(Table::new(rows, widths).header(header).block(block), area);
    let index = state.workers().nth(sel).map(|w| u64::from(w.sample.index));
    Shown { len: total, selected: index.map(|id| (sel, id)), rows_at: Some((super::tasks::rows_area(inner), start)) }
}

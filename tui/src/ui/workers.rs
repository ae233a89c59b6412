//! The workers table of the Overview: busy bar, local-queue sparkline, polls/s, and what each is doing now.

use super::Status;
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
use crate::view::ViewState;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Constraint;
use ratatui::layout::Rect;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Cell;
use ratatui::widgets::Row;
use ratatui::widgets::Table;
use std::time::Duration;

pub(super) fn draw_workers(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) {
    let narrow = area.width < 100;
    let spark_w: usize = if narrow { 8 } else { 30 };
    let bar_w: usize = if narrow { 5 } else { 10 };
    let header = Row::new(vec!["wkr", "busy", "local queue", "polls/s", "now"]).style(DIM);
    let threshold = state.hello().map_or(Duration::from_millis(10), |h| h.stall_threshold);
    let rows: Vec<Row<'_>> = state
        .workers()
        .enumerate()
        .map(|(i, w)| {
            let busy = w.busy_ratio.latest().copied().unwrap_or(0.0);
            let filled = ((busy * bar_w as f64).round() as usize).min(bar_w);
            let bar = format!("{}{} {:>3.0}%", "█".repeat(filled), "░".repeat(bar_w - filled), busy * 100.0);
            let queue = format!(
                "{} {}",
                sparkline(w.local_queue.iter().map(|&v| v as f64), spark_w, 4.0),
                w.sample.local_queue_depth
            );
            let pps = fmt_rate(w.polls_per_second.latest().copied().unwrap_or(0.0));
            let now = match model::live_stall(state, w, status.now_unix_nanos) {
                Some(LiveStall { elapsed, task_id, location }) => {
                    // At 80 columns the file name and line are what fits; wider, the path too.
                    let loc = match &location {
                        None => "unknown location".to_string(),
                        Some(l) if narrow => {
                            format!("{}:{}", l.file.rsplit('/').next().unwrap_or(&l.file), l.line)
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
            if i == view.workers.selected && view.screen == Screen::Overview { row.style(SELECTED) } else { row }
        })
        .collect();
    let widths = [
        Constraint::Length(3),
        Constraint::Length(u16::try_from(bar_w + 5).unwrap_or(10)),
        Constraint::Length(u16::try_from(spark_w + 5).unwrap_or(20)),
        Constraint::Length(7),
        Constraint::Min(10),
    ];
    let block = Block::new().title(Span::styled(" Workers ", TITLE));
    f.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

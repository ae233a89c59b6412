//! The queue sparklines of the Overview: global, blocking, alive tasks.

use super::style::DIM;
use super::style::TITLE;
use crate::model::sparkline;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Paragraph;

pub(super) fn draw_queues(f: &mut Frame<'_>, area: Rect, state: &State) {
    let label_w = 16usize;
    let g = state.global();
    let rows: [(&str, Vec<f64>, String); 3] = [
        (
            "global queue",
            state.global_queue_history().iter().map(|&v| v as f64).collect(),
            g.global_queue_depth.to_string(),
        ),
        (
            "blocking queue",
            state.blocking_queue_history().iter().map(|&v| v as f64).collect(),
            format!("{} ({}/{} threads idle)", g.blocking_queue_depth, g.idle_blocking_threads, g.blocking_threads),
        ),
        ("alive tasks", state.alive_tasks_history().iter().map(|&v| v as f64).collect(), g.alive_tasks.to_string()),
    ];
    // The latest values get the room they need first (a cut-off count misleads); the sparklines take the rest.
    let value_w = rows.iter().map(|(_, _, v)| v.chars().count()).max().unwrap_or(0) + 1;
    let spark_w = usize::from(area.width).saturating_sub(label_w + value_w).clamp(4, 120);
    let mut lines = vec![Line::from(Span::styled("Queues", TITLE))];
    lines.extend(rows.into_iter().map(|(label, vals, latest)| {
        Line::from(vec![
            Span::styled(format!("{label:<label_w$}"), DIM),
            Span::styled(sparkline(vals.into_iter(), spark_w, 4.0), Style::new().fg(Color::Cyan)),
            Span::raw(format!(" {latest}")),
        ])
    }));
    f.render_widget(Paragraph::new(lines), area);
}

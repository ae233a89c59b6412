//! The Overview screen: workers, queues and the latest stalls, laid out.

use super::queues::draw_queues;
use super::stall_list::stall_widths;
use super::stall_list::{stall_header, stall_row};
use super::status::Status;
use super::style::DIM;
use super::style::TITLE;
use super::workers::draw_workers;
use crate::view::{Shown, ViewState};
use loopscope_wire::state::StallEntry;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Constraint;
use ratatui::layout::Layout;
use ratatui::layout::Rect;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Borders;
use ratatui::widgets::Paragraph;
use ratatui::widgets::Table;

/// Lays out the Overview; returns what it drew of the workers table (the list the arrows move on).
pub(super) fn draw_overview(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) -> Shown {
    let workers = state.workers().count();
    // Workers first; the queues below; recent stalls fill what is left on tall terminals.
    // On a short terminal the workers come first: the queues only get rows the workers leave.
    let worker_rows = u16::try_from(workers).unwrap_or(u16::MAX).saturating_add(2);
    let queue_rows = if area.height >= worker_rows.saturating_add(4) { 4 } else { 0 };
    let [w_area, q_area, rest] =
        Layout::vertical([Constraint::Length(worker_rows), Constraint::Length(queue_rows), Constraint::Min(0)])
            .areas(area);
    let shown = draw_workers(f, w_area, state, view, status);
    if q_area.height > 0 {
        draw_queues(f, q_area, state);
    }
    if rest.height >= 3 {
        let block = Block::new().borders(Borders::TOP).title(Span::styled(" Recent stalls ", TITLE));
        let inner = block.inner(rest);
        f.render_widget(block, rest);
        let stalls: Vec<&StallEntry> = state.stalls().take(usize::from(inner.height.saturating_sub(1))).collect();
        if stalls.is_empty() {
            f.render_widget(Paragraph::new(Span::styled(" none so far", DIM)), inner);
        } else {
            let wide = inner.width >= 120;
            let rows = stalls.iter().map(|e| stall_row(e, status.now_unix_nanos, wide));
            f.render_widget(Table::new(rows, stall_widths(inner.width)).header(stall_header(wide)), inner);
        }
    }
    shown
}

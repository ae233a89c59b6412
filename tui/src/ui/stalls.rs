//! The Stalls screen: the log, newest first, beside (or above) the selected stall's detail.

use super::stall_detail::draw_stall_detail;
use super::stall_list::stall_widths;
use super::stall_list::{stall_header, stall_row};
use super::status::Status;
use super::style::DIM;
use super::style::SELECTED;
use super::style::TITLE;
use crate::model;
use crate::model::fmt_duration;
use crate::view::{Shown, ViewState};
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Constraint;
use ratatui::layout::Layout;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Borders;
use ratatui::widgets::Paragraph;
use ratatui::widgets::Row;
use ratatui::widgets::Table;

pub(super) fn draw_stalls(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) -> Shown {
    let rows_all = model::stall_rows(state, &view.filter);
    let total = rows_all.len();
    let side_by_side = area.width >= 140;
    let (list_area, detail_area) = if side_by_side {
        let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
        (a, b)
    } else {
        let list_h = (area.height / 3).clamp(4, 12);
        let [a, b] = Layout::vertical([Constraint::Length(list_h), Constraint::Min(3)]).areas(area);
        (a, b)
    };
    let filter = if view.filter.is_empty() { String::new() } else { format!(" · filter \"{}\"", view.filter) };
    let title = Line::from(vec![
        Span::styled(" Stalls ", TITLE),
        Span::raw(format!("{total}, newest first{filter} ")),
        Span::styled(
            format!("(threshold {}) ", state.hello().map_or_else(|| "?".into(), |h| fmt_duration(h.stall_threshold))),
            DIM,
        ),
    ]);
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(list_area);
    f.render_widget(block, list_area);
    if total == 0 {
        let msg = if view.filter.is_empty() { " no stalls so far" } else { " no stall matches the filter" };
        f.render_widget(Paragraph::new(Span::styled(msg, DIM)), inner);
        return Shown::default();
    }
    let wide = inner.width >= 120;
    let height = usize::from(inner.height.saturating_sub(1));
    let sel = view.stalls.resolve(total, |id| rows_all.iter().position(|e| e.latest.stall_id == id));
    let start = view.stalls.window_start_at(sel, height, total);
    let rows: Vec<Row<'_>> = rows_all
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, e)| {
            let row = stall_row(e, status.now_unix_nanos, wide);
            if i == sel { row.style(SELECTED) } else { row }
        })
        .collect();
    f.render_widget(Table::new(rows, stall_widths(inner.width)).header(stall_header(wide)), inner);
    if let Some(e) = rows_all.get(sel) {
        draw_stall_detail(f, detail_area, e, status.now_unix_nanos);
    }
    Shown {
        len: total,
        selected: rows_all.get(sel).map(|e| (sel, e.latest.stall_id)),
        rows_at: Some((super::tasks::rows_area(inner), start)),
    }
}

//! The Tasks screen: the by-task and by-location tables with their sort markers, and where the detail goes.

use super::style::ALERT;
use super::style::DIM;
use super::style::SELECTED;
use super::style::TITLE;
use super::task_detail::draw_location_detail;
use super::task_detail::draw_task_detail;
use crate::model;
use crate::model::TaskOrder;
use crate::model::fmt_count;
use crate::model::fmt_nanos;
use crate::model::short_location;
use crate::view::SortKey;
use crate::view::TaskTable;
use crate::view::ViewState;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Constraint;
use ratatui::layout::Layout;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Borders;
use ratatui::widgets::Cell;
use ratatui::widgets::Row;
use ratatui::widgets::Table;

/// The Tasks screen's title: both tables as tabs (`←→` switches), the shown one highlighted, then `tail`.
pub(super) fn task_tabs(shown: TaskTable, tail: String) -> Line<'static> {
    let tab = |name: &'static str, table: TaskTable| {
        if table == shown {
            Span::styled(name, TITLE.add_modifier(Modifier::REVERSED))
        } else {
            Span::styled(name, DIM)
        }
    };
    Line::from(vec![
        Span::styled(" Tasks ", TITLE),
        tab(" by task ", TaskTable::ByTask),
        tab(" by location ", TaskTable::ByLocation),
        Span::raw(tail),
    ])
}

pub(super) fn sort_marker(view: &ViewState, key: SortKey) -> &'static str {
    match (view.sort == key, view.descending) {
        (false, _) => "",
        (true, true) => "▼",
        (true, false) => "▲",
    }
}

/// Numeric columns of both task tables: (title, short title, sort key, width). Durations print in at most
/// seven cells (`12.3ms`, `8.19µs`), so the short titles let an 80-column terminal keep the location readable.
pub(super) const NUM_COLUMNS: [(&str, &str, SortKey, u16); 7] = [
    ("polls", "polls", SortKey::Polls, 6),
    ("busy", "busy", SortKey::Busy, 7),
    ("max poll", "max", SortKey::MaxPoll, 8),
    ("p99 poll", "p99", SortKey::P99Poll, 8),
    ("slow", "slow", SortKey::SlowPolls, 5),
    ("sched p99", "sch p99", SortKey::SchedP99, 9),
    ("stalls", "stall", SortKey::Stalls, 6),
];

/// Below this width the task tables use the short titles and narrower columns.
pub(super) const NARROW: u16 = 100;

pub(super) fn col_width(w: u16, narrow: bool) -> u16 {
    if narrow { w.min(7) } else { w }
}

pub(super) fn table_header(view: &ViewState, first: &[(&str, Option<SortKey>)], narrow: bool) -> Row<'static> {
    let mut cells: Vec<Cell<'static>> =
        first.iter().map(|(t, k)| Cell::from(format!("{t}{}", k.map_or("", |k| sort_marker(view, k))))).collect();
    cells.extend(NUM_COLUMNS.iter().map(|(t, short, k, w)| {
        let s = format!("{}{}", if narrow { short } else { t }, sort_marker(view, *k));
        Cell::from(format!("{s:>width$}", width = usize::from(col_width(*w, narrow))))
    }));
    Row::new(cells).style(DIM.add_modifier(Modifier::BOLD))
}

#[allow(clippy::too_many_arguments)] // one argument per column reads better than a struct built once
pub(super) fn num_cells(
    narrow: bool,
    polls: u64,
    busy: u64,
    max: u64,
    p99: String,
    slow: u64,
    sched: String,
    stalls: u64,
) -> Vec<Cell<'static>> {
    let vals = [fmt_count(polls), fmt_nanos(busy), fmt_nanos(max), p99, fmt_count(slow), sched, stalls.to_string()];
    vals.into_iter()
        .zip(NUM_COLUMNS.iter())
        .map(|(v, (_, _, key, w))| {
            let text = format!("{v:>width$}", width = usize::from(col_width(*w, narrow)));
            if *key == SortKey::Stalls && stalls > 0 { Cell::from(Span::styled(text, ALERT)) } else { Cell::from(text) }
        })
        .collect()
}

pub(super) fn num_widths(first: &[Constraint], narrow: bool) -> Vec<Constraint> {
    let mut w = first.to_vec();
    w.extend(NUM_COLUMNS.iter().map(|(_, _, _, w)| Constraint::Length(col_width(*w, narrow))));
    w
}

pub(super) fn draw_tasks(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState) -> usize {
    let (table_area, detail_area) = if view.detail && area.height >= 14 {
        let [a, b] = Layout::vertical([Constraint::Min(5), Constraint::Length(9)]).areas(area);
        (a, Some(b))
    } else {
        (area, None)
    };
    let filter = if view.filter.is_empty() { String::new() } else { format!(" · filter \"{}\"", view.filter) };
    let narrow = area.width < NARROW;
    match view.task_table {
        TaskTable::ByTask => {
            let mut order = TaskOrder::new(state, &view.filter, view.sort, view.descending);
            let total = order.len();
            let title = task_tabs(TaskTable::ByTask, format!(" {total} live{filter} "));
            let block = Block::new().borders(Borders::TOP).title(title);
            let inner = block.inner(table_area);
            let height = usize::from(inner.height.saturating_sub(1));
            let start = view.tasks.window_start(height, total);
            let tasks = order.window(start, height);
            let rows: Vec<Row<'_>> = tasks
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let loc = state.task_location(t).map_or_else(|| "?".to_string(), short_location);
                    let mut cells = vec![Cell::from(format!("{:>7}", t.id)), Cell::from(loc)];
                    cells.extend(num_cells(
                        narrow,
                        t.poll_count,
                        t.busy_nanos,
                        t.max_poll_nanos,
                        model::task_p99(t),
                        t.slow_poll_count,
                        model::task_sched_p99(t),
                        t.stall_count,
                    ));
                    let row = Row::new(cells);
                    if start + i == view.tasks.shown(total) { row.style(SELECTED) } else { row }
                })
                .collect();
            let header = table_header(view, &[("     id", Some(SortKey::Name)), ("spawned at", None)], narrow);
            let widths = num_widths(&[Constraint::Length(7), Constraint::Min(12)], narrow);
            f.render_widget(block, table_area);
            f.render_widget(Table::new(rows, widths).header(header), inner);
            if let Some(d) = detail_area {
                let selected = order.window(view.tasks.shown(total), 1);
                draw_task_detail(f, d, state, selected.first().copied());
            }
            total
        }
        TaskTable::ByLocation => {
            let rows_all = model::location_rows(state, &view.filter, view.sort, view.descending);
            let total = rows_all.len();
            let title = task_tabs(TaskTable::ByLocation, format!(" {total} locations{filter} "));
            let block = Block::new().borders(Borders::TOP).title(title);
            let inner = block.inner(table_area);
            let height = usize::from(inner.height.saturating_sub(1));
            let start = view.locations.window_start(height, total);
            let rows: Vec<Row<'_>> = rows_all
                .iter()
                .enumerate()
                .skip(start)
                .take(height)
                .map(|(i, r)| {
                    let s = r.stats;
                    let live = s.map_or(0, |s| s.live_tasks);
                    let mut cells = vec![Cell::from(short_location(r.location)), Cell::from(format!("{live:>5}"))];
                    cells.extend(num_cells(
                        narrow,
                        s.map_or(0, |s| s.poll_count),
                        s.map_or(0, |s| s.busy_nanos),
                        s.map_or(0, |s| s.max_poll_nanos),
                        s.map_or_else(|| "-".into(), |s| model::fmt_p99(&s.poll_histogram, s.max_poll_nanos)),
                        s.map_or(0, |s| s.slow_poll_count),
                        s.and_then(|s| s.schedule_latency.as_ref())
                            .map_or_else(|| "-".into(), |l| model::fmt_p99(&l.histogram, l.max_nanos)),
                        s.map_or(0, |s| s.stall_count),
                    ));
                    let row = Row::new(cells);
                    if i == view.locations.shown(total) { row.style(SELECTED) } else { row }
                })
                .collect();
            let header = table_header(view, &[("spawned at", Some(SortKey::Name)), ("live", None)], narrow);
            let widths = num_widths(&[Constraint::Min(14), Constraint::Length(5)], narrow);
            f.render_widget(block, table_area);
            f.render_widget(Table::new(rows, widths).header(header), inner);
            if let Some(d) = detail_area {
                let sel = rows_all.get(view.locations.shown(total));
                draw_location_detail(f, d, sel);
            }
            total
        }
    }
}

//! The Tasks screen: the by-task and by-location tables with their sort markers, and where the detail goes.

use super::status::Status;
use super::style::ALERT;
use super::style::DIM;
use super::style::SELECTED;
use super::style::TITLE;
use super::task_detail::draw_location_detail;
use super::task_detail::draw_task_detail;
use crate::model;
use crate::model::TaskOrder;
use crate::model::TaskScope;
use crate::model::fmt_count;
use crate::model::fmt_nanos;
use crate::model::short_location;
use crate::view::SortKey;
use crate::view::TaskTable;
use crate::view::ViewState;
use crate::view::{Shown, TASK_COLUMNS};
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
use std::time::Duration;

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

/// Numeric columns of both task tables: (title, short title, sort key, width of the values). Durations print
/// in at most seven cells (`12.3ms`, `8.19µs`), so the short titles let an 80-column terminal keep the location
/// readable. A column is never narrower than its title and the sort marker, so every sorted column shows it.
pub(super) const NUM_COLUMNS: [(&str, &str, SortKey, u16); TASK_COLUMNS] = [
    ("polls", "polls", SortKey::Polls, 6),
    ("poll time", "polled", SortKey::Busy, 7),
    ("max poll", "max", SortKey::MaxPoll, 7),
    ("p99 poll", "p99", SortKey::P99Poll, 7),
    ("slow", "slow", SortKey::SlowPolls, 5),
    ("sched p99", "sched", SortKey::SchedP99, 7),
    ("stalls", "stall", SortKey::Stalls, 5),
];

/// Below this width the task tables use the short titles.
pub(super) const NARROW: u16 = 100;

/// The title of column `c` at this width.
fn col_title(c: usize, narrow: bool) -> &'static str {
    let (title, short, ..) = NUM_COLUMNS[c];
    if narrow { short } else { title }
}

/// Column `c`'s width: its values, or its title with room for the sort marker, whichever is wider.
pub(super) fn col_width(c: usize, narrow: bool) -> u16 {
    let title = u16::try_from(col_title(c, narrow).chars().count()).unwrap_or(u16::MAX);
    NUM_COLUMNS[c].3.max(title + 1)
}

/// The numeric columns shown: from the first the horizontal scroll has not passed, as many as fit in
/// `room` cells (each also takes one cell of spacing). At least one is shown.
pub(super) fn visible_columns(first: usize, room: u16, narrow: bool) -> std::ops::Range<usize> {
    let first = first.min(TASK_COLUMNS - 1);
    let mut used = 0u16;
    let mut end = first;
    while end < TASK_COLUMNS {
        let w = col_width(end, narrow) + 1;
        if end > first && used + w > room {
            break;
        }
        used += w;
        end += 1;
    }
    first..end
}

/// ` ◀ 2 cols` / ` 3 cols ▶` for a table scrolled sideways (`<` `>`), or nothing when every column shows.
/// Short, and first in the title, so that it shows on a 40-column terminal.
pub(super) fn hidden_columns_hint(cols: &std::ops::Range<usize>) -> String {
    let left = cols.start;
    let right = TASK_COLUMNS - cols.end;
    match (left, right) {
        (0, 0) => String::new(),
        (0, r) => format!(" {r} cols ▶"),
        (l, 0) => format!(" ◀ {l} cols"),
        (l, r) => format!(" ◀ {l} · {r} cols ▶"),
    }
}

pub(super) fn table_header(
    view: &ViewState,
    first: &[(&str, Option<SortKey>)],
    cols: &std::ops::Range<usize>,
    narrow: bool,
) -> Row<'static> {
    let mut cells: Vec<Cell<'static>> =
        first.iter().map(|(t, k)| Cell::from(format!("{t}{}", k.map_or("", |k| sort_marker(view, k))))).collect();
    cells.extend(cols.clone().map(|c| {
        let s = format!("{}{}", col_title(c, narrow), sort_marker(view, NUM_COLUMNS[c].2));
        Cell::from(format!("{s:>width$}", width = usize::from(col_width(c, narrow))))
    }));
    Row::new(cells).style(DIM.add_modifier(Modifier::BOLD))
}

/// The numeric cells of one row, in `NUM_COLUMNS` order, of which `cols` are shown. `alert` marks cells to
/// draw in red (a poll running past the threshold, any stall).
pub(super) fn num_cells(
    vals: [String; TASK_COLUMNS],
    alert: [bool; TASK_COLUMNS],
    cols: &std::ops::Range<usize>,
    narrow: bool,
) -> Vec<Cell<'static>> {
    cols.clone()
        .map(|c| {
            let text = format!("{:>width$}", vals[c], width = usize::from(col_width(c, narrow)));
            if alert[c] { Cell::from(Span::styled(text, ALERT)) } else { Cell::from(text) }
        })
        .collect()
}

pub(super) fn num_widths(first: &[Constraint], cols: &std::ops::Range<usize>, narrow: bool) -> Vec<Constraint> {
    let mut w = first.to_vec();
    w.extend(cols.clone().map(|c| Constraint::Length(col_width(c, narrow))));
    w
}

/// Width of the by-task id column: seven digits and the state mark.
const ID_W: u16 = 8;

/// Draws the Tasks screen; returns what it drew of its table, for the selection and the mouse.
pub(super) fn draw_tasks(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) -> Shown {
    let (table_area, detail_area) = if view.detail && area.height >= 14 {
        let [a, b] = Layout::vertical([Constraint::Min(5), Constraint::Length(9)]).areas(area);
        (a, Some(b))
    } else {
        (area, None)
    };
    let filter = if view.filter.is_empty() { String::new() } else { format!(" · filter \"{}\"", view.filter) };
    let narrow = area.width < NARROW;
    let threshold = state.hello().map_or(Duration::from_millis(10), |h| h.stall_threshold);
    match view.task_table {
        TaskTable::ByTask => {
            let scope = TaskScope::new(state, status.now_unix_nanos, view.finished);
            let mut order = TaskOrder::new(state, &view.filter, view.sort, view.descending, &scope);
            let total = order.len();
            let done = total - order.live();
            let finished_note = if view.finished {
                format!(", {done} finished (f hides)")
            } else {
                format!(" (f shows {} finished)", state.finished_tasks().count())
            };
            let block = Block::new().borders(Borders::TOP);
            let inner = block.inner(table_area);
            // A name column where there is room for it (see `task_name`).
            let name_w: u16 = if inner.width >= WITH_NAMES { 30 } else { 0 };
            // The id and location stay; the numeric columns scroll sideways when they do not all fit.
            let fixed = ID_W + 1 + 18 + if name_w > 0 { name_w + 1 } else { 0 };
            let cols = visible_columns(view.hscroll, inner.width.saturating_sub(fixed), narrow);
            let title = task_tabs(
                TaskTable::ByTask,
                format!("{} {} live{finished_note}{filter} ", hidden_columns_hint(&cols), order.live()),
            );
            let height = usize::from(inner.height.saturating_sub(1));
            let sel = view.tasks.resolve(total, |id| order.position(id));
            let start = view.tasks.window_start_at(sel, height, total);
            let tasks = order.window(start, height);
            let rows: Vec<Row<'_>> = tasks
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let t = r.task;
                    // A task known only from a stall (its location not yet in the table): the stall names it.
                    let loc = state
                        .task_location(t)
                        .or_else(|| {
                            state.stalls().find(|e| e.latest.task_id == t.id).and_then(|e| e.latest.location.as_ref())
                        })
                        .map_or_else(|| "?".to_string(), short_location);
                    // A mark as well as a colour: finished ✓, polling now ▶.
                    let mark = if r.finished {
                        "✓"
                    } else if r.running.is_some() {
                        "▶"
                    } else {
                        " "
                    };
                    let mut cells = vec![Cell::from(format!("{:>7}{mark}", t.id))];
                    if name_w > 0 {
                        cells.push(Cell::from(Span::styled(task_name(state, t.id), DIM)));
                    }
                    cells.push(Cell::from(loc));
                    let stalling = r.running.is_some_and(|d| d >= threshold);
                    cells.extend(num_cells(
                        [
                            fmt_count(r.polls()),
                            fmt_nanos(r.busy_nanos()),
                            fmt_nanos(r.max_poll_nanos()),
                            model::task_p99(t),
                            fmt_count(t.slow_poll_count),
                            model::task_sched_p99(t),
                            r.stall_count().to_string(),
                        ],
                        [false, stalling, stalling, false, false, false, r.stall_count() > 0],
                        &cols,
                        narrow,
                    ));
                    let row = Row::new(cells);
                    if start + i == sel {
                        row.style(SELECTED)
                    } else if r.finished {
                        row.style(DIM)
                    } else {
                        row
                    }
                })
                .collect();
            let (first, first_w) = if name_w > 0 {
                (
                    vec![("     id", Some(SortKey::Name)), ("name (blocking fn)", None), ("spawned at", None)],
                    vec![Constraint::Length(ID_W), Constraint::Length(name_w), Constraint::Min(12)],
                )
            } else {
                (
                    vec![("     id", Some(SortKey::Name)), ("spawned at", None)],
                    vec![Constraint::Length(ID_W), Constraint::Min(12)],
                )
            };
            let header = table_header(view, &first, &cols, narrow);
            let widths = num_widths(&first_w, &cols, narrow);
            f.render_widget(block.title(title), table_area);
            f.render_widget(Table::new(rows, widths).header(header), inner);
            // The selection is inside the window shown (window_start_at keeps it there): no second sort.
            let selected_row = sel.checked_sub(start).and_then(|i| tasks.get(i)).copied();
            if let Some(d) = detail_area {
                draw_task_detail(f, d, state, selected_row);
            }
            Shown {
                len: total,
                selected: selected_row.map(|r| (sel, r.task.id)),
                rows_at: Some((rows_area(inner), start)),
            }
        }
        TaskTable::ByLocation => {
            let rows_all = model::location_rows(state, &view.filter, view.sort, view.descending);
            let total = rows_all.len();
            let block = Block::new().borders(Borders::TOP);
            let inner = block.inner(table_area);
            let cols = visible_columns(view.hscroll, inner.width.saturating_sub(16 + 1 + 6), narrow);
            let title = task_tabs(
                TaskTable::ByLocation,
                format!("{} {}{filter} ", hidden_columns_hint(&cols), plural(total, "location", "locations")),
            );
            let height = usize::from(inner.height.saturating_sub(1));
            let sel = view.locations.resolve(total, |id| rows_all.iter().position(|r| u64::from(r.id) == id));
            let start = view.locations.window_start_at(sel, height, total);
            let rows: Vec<Row<'_>> = rows_all
                .iter()
                .enumerate()
                .skip(start)
                .take(height)
                .map(|(i, r)| {
                    let s = r.stats;
                    let live = s.map_or(0, |s| s.live_tasks);
                    let stalls = s.map_or(0, |s| s.stall_count);
                    let mut cells = vec![Cell::from(short_location(r.location)), Cell::from(format!("{live:>5}"))];
                    cells.extend(num_cells(
                        [
                            fmt_count(s.map_or(0, |s| s.poll_count)),
                            fmt_nanos(s.map_or(0, |s| s.busy_nanos)),
                            fmt_nanos(s.map_or(0, |s| s.max_poll_nanos)),
                            s.map_or_else(|| "-".into(), |s| model::fmt_p99(&s.poll_histogram, s.max_poll_nanos)),
                            fmt_count(s.map_or(0, |s| s.slow_poll_count)),
                            s.and_then(|s| s.schedule_latency.as_ref())
                                .map_or_else(|| "-".into(), |l| model::fmt_p99(&l.histogram, l.max_nanos)),
                            stalls.to_string(),
                        ],
                        [false, false, false, false, false, false, stalls > 0],
                        &cols,
                        narrow,
                    ));
                    let row = Row::new(cells);
                    if i == sel { row.style(SELECTED) } else { row }
                })
                .collect();
            let header = table_header(view, &[("spawned at", Some(SortKey::Name)), ("live", None)], &cols, narrow);
            let widths = num_widths(&[Constraint::Min(16), Constraint::Length(5)], &cols, narrow);
            f.render_widget(block.title(title), table_area);
            f.render_widget(Table::new(rows, widths).header(header), inner);
            let selected_row = rows_all.get(sel);
            if let Some(d) = detail_area {
                draw_location_detail(f, d, selected_row);
            }
            Shown {
                len: total,
                selected: selected_row.map(|r| (sel, u64::from(r.id))),
                rows_at: Some((rows_area(inner), start)),
            }
        }
    }
}

/// From this width the by-task table has a name column.
const WITH_NAMES: u16 = 130;

/// The by-task table's name for a task. tokio 1.54's task hooks do not pass the name given with
/// `tokio::task::Builder::name` (it reaches only `tracing` spans), so the agent cannot send it and the wire
/// has no field for it yet. Until it does, the column shows what the data has: the function of the app that
/// the task was in when it stalled (its innermost frame of the app's own code, from the stall log), or
/// nothing.
fn task_name(state: &State, id: u64) -> String {
    state
        .stalls()
        .filter(|e| e.latest.task_id == id)
        .find_map(|e| e.culprit.as_ref()?.first_user_frame()?.function.clone())
        .map(|f| short_function(&f))
        .unwrap_or_default()
}

/// `module::function` from a full path (`my_app::handlers::report::{{closure}}` → `handlers::report`).
fn short_function(f: &str) -> String {
    let parts: Vec<&str> = f.split("::").filter(|p| !p.starts_with('{')).collect();
    parts[parts.len().saturating_sub(2)..].join("::")
}

/// Where the title's table tabs are (for the mouse), in the Tasks screen drawn at `area`.
pub(super) fn table_tab_rects(area: Rect) -> Vec<(Rect, TaskTable)> {
    let at = |x: u16, width: u16| Rect { x: area.x + x, y: area.y, width, height: 1 };
    // " Tasks " is 7 cells, " by task " 9, " by location " 13: see `task_tabs`.
    vec![(at(7, 9), TaskTable::ByTask), (at(16, 13), TaskTable::ByLocation)]
}

/// A table's rows: its area below the header line.
pub(super) fn rows_area(inner: Rect) -> Rect {
    Rect { y: inner.y.saturating_add(1), height: inner.height.saturating_sub(1), ..inner }
}

/// `1 location`, `2 locations`.
pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

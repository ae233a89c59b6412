//! The widgets: pure functions of (state, view, status, area) that draw into a ratatui frame.
//!
//! Nothing here reads the clock, the network or the terminal: the caller passes `now` in [`Status`], so a
//! recording renders the same way every time (which is what the snapshot tests rely on).

use crate::model::{
    self, LiveStall, TaskOrder, fmt_count, fmt_duration, fmt_nanos, fmt_rate, short_location, sparkline,
};
use crate::view::{InputMode, RowCounts, Screen, SortKey, TaskTable, ViewState};
use loopscope_wire::proto::TaskSample;
use loopscope_wire::state::{StallEntry, State};
use loopscope_wire::{Classification, FrameOrigin, LogHistogram, StallKind};
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};
use std::time::Duration;

/// The connection, as the status line shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Trying to connect (the first time, or again after losing the app).
    Connecting,
    /// Receiving the stream.
    Connected,
    /// Lost; the data on screen is the last received. The reason, in words.
    Disconnected(String),
    /// Playing a recording.
    Replay,
}

/// Where a replay is.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayPosition {
    /// Position from the start of the recording.
    pub at: Duration,
    /// Length of the recording.
    pub total: Duration,
    /// Playback speed (1.0 = real time).
    pub speed: f64,
    /// Whether the end was reached.
    pub ended: bool,
}

/// Everything the widgets need besides the data and the view.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// What is being watched: an address or a recording's file name.
    pub source: String,
    /// The connection.
    pub connection: Connection,
    /// The replay clock, in `loopscope replay`.
    pub replay: Option<ReplayPosition>,
    /// The moment shown, nanoseconds since the Unix epoch: live stalls tick up to it.
    pub now_unix_nanos: u64,
    /// A note for the status line (for example, a damaged recording's error).
    pub note: Option<String>,
}

impl Status {
    /// A status for rendering a state as of its latest sample (tests, benchmarks).
    pub fn at_latest_sample(state: &State, source: &str) -> Status {
        Status {
            source: source.to_string(),
            connection: Connection::Connected,
            replay: None,
            now_unix_nanos: state.sampled_at_unix_nanos(),
            note: None,
        }
    }
}

const DIM: Style = Style::new().fg(Color::DarkGray);
const KEY: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
const TITLE: Style = Style::new().add_modifier(Modifier::BOLD);
const SELECTED: Style = Style::new().bg(Color::Blue).fg(Color::White);
const ALERT: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const WARN: Style = Style::new().fg(Color::Yellow);
const GOOD: Style = Style::new().fg(Color::Green);

/// Draws the whole dashboard. Returns the row counts it saw, for [`ViewState::clamp`] (a count that this
/// frame did not compute is `usize::MAX`, which clamps nothing).
pub fn draw(f: &mut Frame<'_>, state: &State, view: &ViewState, status: &Status) -> RowCounts {
    let area = f.area();
    let [tabs, header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(2), Constraint::Min(3), Constraint::Length(1)])
            .areas(area);
    draw_tabs(f, tabs, state, view, status);
    draw_header(f, header, state);
    let mut counts = RowCounts {
        tasks: if view.filter.is_empty() { state.tasks().len() } else { usize::MAX },
        locations: usize::MAX,
        stalls: usize::MAX,
        workers: state.workers().count(),
    };
    if !state.is_ready() && state.workers().next().is_none() {
        draw_waiting(f, body, status);
    } else {
        match view.screen {
            Screen::Overview => draw_overview(f, body, state, view, status),
            Screen::Tasks => {
                let n = draw_tasks(f, body, state, view);
                match view.task_table {
                    TaskTable::ByTask => counts.tasks = n,
                    TaskTable::ByLocation => counts.locations = n,
                }
            }
            Screen::Stalls => counts.stalls = draw_stalls(f, body, state, view, status),
            Screen::Histograms => draw_histograms(f, body, state),
        }
    }
    draw_footer(f, footer, view, status);
    if view.help {
        draw_help(f, area, view);
    }
    counts
}

fn draw_tabs(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) {
    let mut spans = vec![Span::styled(" loopscope ", Style::new().bg(Color::Cyan).fg(Color::Black).bold())];
    for (i, s) in Screen::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, s.title());
        spans.push(if *s == view.screen {
            Span::styled(label, Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD))
        } else {
            Span::raw(label)
        });
    }
    f.render_widget(Line::from(spans), area);
    // The app's name on the right, when there is room: which process am I looking at?
    let who = match state.hello() {
        Some(h) => {
            // argv[0] may be a long path; its file name is what people call the program.
            let program = h.program.as_deref().map(|p| p.rsplit('/').next().unwrap_or(p).to_string());
            let name = program.or_else(|| h.runtime.name.clone()).unwrap_or_else(|| "app".into());
            format!("{name} pid {} · {} ", h.pid, status.source)
        }
        None => format!("{} ", status.source),
    };
    let used: usize = 11 + Screen::ALL.iter().map(|s| s.title().len() + 4).sum::<usize>();
    if usize::from(area.width) > used + who.chars().count() {
        f.render_widget(Paragraph::new(Span::styled(who, DIM)).alignment(Alignment::Right), area);
    }
}

fn draw_header(f: &mut Frame<'_>, area: Rect, state: &State) {
    let h = model::header_stats(state);
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
    let line2 = Line::from(vec![
        label("sched delay p50 "),
        Span::raw(sched(h.sched_p50)),
        label(" p99 "),
        Span::styled(sched(h.sched_p99), h.sched_p99.map_or(Style::new(), delay_style)),
        label("  dropped "),
        dropped,
        label("  probes "),
        probes,
    ]);
    f.render_widget(Paragraph::new(vec![line1, line2]), area);
}

fn ratio_style(r: f64) -> Style {
    if r >= 0.9 {
        ALERT
    } else if r >= 0.6 {
        WARN
    } else {
        GOOD
    }
}

fn delay_style(d: Duration) -> Style {
    if d >= Duration::from_millis(10) {
        ALERT
    } else if d >= Duration::from_millis(1) {
        WARN
    } else {
        Style::new()
    }
}

fn draw_waiting(f: &mut Frame<'_>, area: Rect, status: &Status) {
    let msg = match &status.connection {
        Connection::Disconnected(why) => format!("Not connected to {}: {why}\nRetrying…", status.source),
        _ => format!("Waiting for the first data from {}…", status.source),
    };
    f.render_widget(Paragraph::new(msg).alignment(Alignment::Center).wrap(Wrap { trim: true }), area);
}

fn draw_footer(f: &mut Frame<'_>, area: Rect, view: &ViewState, status: &Status) {
    if view.input == InputMode::Filter {
        let line = Line::from(vec![
            Span::styled(" filter: ", KEY),
            Span::raw(view.filter.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled("   Enter keep · Esc cancel", DIM),
        ]);
        f.render_widget(line, area);
        return;
    }
    let mut right: Vec<Span<'_>> = Vec::new();
    if view.paused {
        right.push(Span::styled(" PAUSED ", Style::new().bg(Color::Yellow).fg(Color::Black).bold()));
        right.push(Span::raw(" "));
    }
    match &status.connection {
        Connection::Connected => right.push(Span::styled("● live", GOOD)),
        Connection::Connecting => right.push(Span::styled("○ connecting…", WARN)),
        Connection::Disconnected(why) => {
            right.push(Span::styled(format!("○ disconnected ({why}); showing last data, retrying"), ALERT))
        }
        Connection::Replay => {}
    }
    if let Some(r) = &status.replay {
        let icon = if r.ended {
            "■ end"
        } else if view.paused {
            "⏸"
        } else {
            "▶"
        };
        right.push(Span::styled(
            format!("{icon} {} / {} ×{}", fmt_secs(r.at), fmt_secs(r.total), fmt_speed(r.speed)),
            Style::new().fg(Color::Cyan),
        ));
    }
    if let Some(note) = &status.note {
        right.push(Span::styled(format!("  {note}"), WARN));
    }
    let right = Line::from(right);
    let right_width = u16::try_from(right.width()).unwrap_or(u16::MAX).min(area.width);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(right_width.saturating_add(1))]).areas(area);
    let mut hints: Vec<(&str, &str)> = vec![("q", "quit"), ("?", "help"), ("Tab", "screen")];
    match view.screen {
        Screen::Tasks => hints.extend([("←→", "table"), ("/", "filter"), ("s", "sort"), ("⏎", "detail")]),
        Screen::Stalls => hints.extend([("↑↓", "select"), ("/", "filter")]),
        Screen::Overview => hints.extend([("⏎", "stalls")]),
        Screen::Histograms => {}
    }
    if view.replay {
        hints.extend([("p", "pause"), ("n", "step"), ("[ ]", "seek"), ("+-", "speed")]);
    } else {
        hints.push(("p", "pause"));
    }
    let mut spans = vec![Span::raw(" ")];
    for (k, what) in hints {
        spans.push(Span::styled(k, KEY));
        spans.push(Span::styled(format!(" {what}  "), DIM));
    }
    f.render_widget(Line::from(spans), left_area);
    f.render_widget(right.alignment(Alignment::Right), right_area);
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 { format!("{s:.1}s") } else { format!("{}m{:04.1}s", d.as_secs() / 60, s % 60.0) }
}

fn fmt_speed(x: f64) -> String {
    if x >= 1.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

// ---- Overview ----

fn draw_overview(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) {
    let workers = state.workers().count();
    // Workers first; the queues below; recent stalls fill what is left on tall terminals.
    let worker_rows = u16::try_from(workers).unwrap_or(u16::MAX).saturating_add(1);
    let [w_area, q_area, rest] = Layout::vertical([
        Constraint::Length(worker_rows.saturating_add(1)),
        Constraint::Length(4),
        Constraint::Min(0),
    ])
    .areas(area);
    draw_workers(f, w_area, state, view, status);
    draw_queues(f, q_area, state);
    if rest.height >= 3 {
        let block = Block::new().borders(Borders::TOP).title(Span::styled(" Recent stalls ", TITLE));
        let inner = block.inner(rest);
        f.render_widget(block, rest);
        let stalls: Vec<&StallEntry> = state.stalls().take(usize::from(inner.height)).collect();
        if stalls.is_empty() {
            f.render_widget(Paragraph::new(Span::styled(" none so far", DIM)), inner);
        } else {
            let rows = stalls.iter().map(|e| stall_row(e, status.now_unix_nanos, inner.width >= 120));
            f.render_widget(Table::new(rows, stall_widths(inner.width)), inner);
        }
    }
}

fn draw_workers(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) {
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

fn draw_queues(f: &mut Frame<'_>, area: Rect, state: &State) {
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

// ---- Tasks ----

/// The Tasks screen's title: both tables as tabs (`←→` switches), the shown one highlighted, then `tail`.
fn task_tabs(shown: TaskTable, tail: String) -> Line<'static> {
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

fn sort_marker(view: &ViewState, key: SortKey) -> &'static str {
    match (view.sort == key, view.descending) {
        (false, _) => "",
        (true, true) => "▼",
        (true, false) => "▲",
    }
}

/// Numeric columns of both task tables: (title, short title, sort key, width). Durations print in at most
/// seven cells (`12.3ms`, `8.19µs`), so the short titles let an 80-column terminal keep the location readable.
const NUM_COLUMNS: [(&str, &str, SortKey, u16); 7] = [
    ("polls", "polls", SortKey::Polls, 6),
    ("busy", "busy", SortKey::Busy, 7),
    ("max poll", "max", SortKey::MaxPoll, 8),
    ("p99 poll", "p99", SortKey::P99Poll, 8),
    ("slow", "slow", SortKey::SlowPolls, 5),
    ("sched p99", "sch p99", SortKey::SchedP99, 9),
    ("stalls", "stall", SortKey::Stalls, 6),
];

/// Below this width the task tables use the short titles and narrower columns.
const NARROW: u16 = 100;

fn col_width(w: u16, narrow: bool) -> u16 {
    if narrow { w.min(7) } else { w }
}

fn table_header(view: &ViewState, first: &[(&str, Option<SortKey>)], narrow: bool) -> Row<'static> {
    let mut cells: Vec<Cell<'static>> =
        first.iter().map(|(t, k)| Cell::from(format!("{t}{}", k.map_or("", |k| sort_marker(view, k))))).collect();
    cells.extend(NUM_COLUMNS.iter().map(|(t, short, k, w)| {
        let s = format!("{}{}", if narrow { short } else { t }, sort_marker(view, *k));
        Cell::from(format!("{s:>width$}", width = usize::from(col_width(*w, narrow))))
    }));
    Row::new(cells).style(DIM.add_modifier(Modifier::BOLD))
}

#[allow(clippy::too_many_arguments)] // one argument per column reads better than a struct built once
fn num_cells(
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

fn num_widths(first: &[Constraint], narrow: bool) -> Vec<Constraint> {
    let mut w = first.to_vec();
    w.extend(NUM_COLUMNS.iter().map(|(_, _, _, w)| Constraint::Length(col_width(*w, narrow))));
    w
}

fn draw_tasks(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState) -> usize {
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

fn draw_task_detail(f: &mut Frame<'_>, area: Rect, state: &State, task: Option<&TaskSample>) {
    let block = Block::new().borders(Borders::TOP).title(Span::styled(" Task detail (Esc closes) ", TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(t) = task else {
        f.render_widget(Paragraph::new(Span::styled("no task selected", DIM)), inner);
        return;
    };
    let loc = state.task_location(t).map_or_else(|| "unknown".to_string(), ToString::to_string);
    let lines = vec![
        Line::from(vec![
            Span::styled("task ", DIM),
            Span::raw(t.id.to_string()),
            Span::styled("  spawned at ", DIM),
            Span::raw(loc),
        ]),
        Line::from(vec![
            Span::styled("polls ", DIM),
            Span::raw(t.poll_count.to_string()),
            Span::styled("  busy ", DIM),
            Span::raw(fmt_nanos(t.busy_nanos)),
            Span::styled("  mean poll ", DIM),
            Span::raw(fmt_duration(t.mean_poll())),
            Span::styled("  max ", DIM),
            Span::raw(fmt_nanos(t.max_poll_nanos)),
        ]),
    ];
    let [text, hist] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    f.render_widget(Paragraph::new(lines), text);
    draw_inline_histogram(f, hist, &t.poll_histogram);
}

fn draw_location_detail(f: &mut Frame<'_>, area: Rect, row: Option<&model::LocationRow<'_>>) {
    let block = Block::new().borders(Borders::TOP).title(Span::styled(" Location detail (Esc closes) ", TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(r) = row else {
        f.render_widget(Paragraph::new(Span::styled("no location selected", DIM)), inner);
        return;
    };
    let s = r.stats;
    let lines = vec![
        Line::from(vec![Span::styled("spawned at ", DIM), Span::raw(r.location.to_string())]),
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
fn draw_inline_histogram(f: &mut Frame<'_>, area: Rect, h: &LogHistogram) {
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

// ---- Stalls ----

fn stall_widths(width: u16) -> Vec<Constraint> {
    if width >= 120 {
        vec![
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Length(7),
            Constraint::Length(36),
            Constraint::Min(10),
        ]
    } else {
        vec![
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(3),
            Constraint::Fill(3),
            Constraint::Fill(2),
        ]
    }
}

fn ago(now: u64, at: u64) -> String {
    format!("{} ago", fmt_whole_secs(Duration::from_nanos(now.saturating_sub(at))))
}

/// Whole seconds, for clocks that need no precision: `0s`, `59s`, `2m03s`, `1h02m`.
fn fmt_whole_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 { format!("{s}s") } else { fmt_duration(Duration::from_secs(s)) }
}

fn stall_row<'a>(e: &StallEntry, now: u64, wide: bool) -> Row<'a> {
    let ev = &e.latest;
    let dur = if e.ended {
        Span::raw(fmt_duration(ev.elapsed))
    } else {
        let started = ev.at_unix_nanos.saturating_sub(u64::try_from(ev.elapsed.as_nanos()).unwrap_or(u64::MAX));
        Span::styled(fmt_duration(Duration::from_nanos(now.saturating_sub(started)).max(ev.elapsed)), ALERT)
    };
    let worker = match (ev.kind, ev.worker) {
        (StallKind::BlockInPlace, _) => "bip".to_string(),
        (_, Some(w)) => format!("w{w}"),
        (_, None) => "-".to_string(),
    };
    let loc = match &ev.agent_task {
        Some(name) => format!("loopscope's {name}"),
        None => ev.location.as_ref().map_or_else(|| "unknown location".to_string(), short_location),
    };
    let class = e.culprit.as_ref().map_or_else(
        || if ev.caught_in_flight { "…".to_string() } else { "found after it ended".to_string() },
        |c| if wide { c.classification.to_string() } else { short_classification(&c.classification) },
    );
    if wide {
        Row::new(vec![
            Cell::from(ago(now, e.first_at_unix_nanos)),
            Cell::from(dur),
            Cell::from(worker),
            Cell::from(format!("{:>7}", ev.task_id)),
            Cell::from(loc),
            Cell::from(class),
        ])
    } else {
        Row::new(vec![
            Cell::from(ago(now, e.first_at_unix_nanos)),
            Cell::from(dur),
            Cell::from(worker),
            Cell::from(loc),
            Cell::from(class),
        ])
    }
}

/// The classification in a few cells, for 80-column lists; the detail pane has the full one.
fn short_classification(c: &Classification) -> String {
    match c {
        Classification::CpuBound => "CPU-bound".into(),
        Classification::Syscall { name, .. } => format!("in {name}"),
        Classification::LockWait { .. } => "lock wait".into(),
        Classification::PageFault => "page faults".into(),
        Classification::Unknown => "unclassified".into(),
        Classification::Preempted => "OS delay".into(),
    }
}

fn draw_stalls(f: &mut Frame<'_>, area: Rect, state: &State, view: &ViewState, status: &Status) -> usize {
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
        return 0;
    }
    let wide = inner.width >= 120;
    let height = usize::from(inner.height.saturating_sub(1));
    let start = view.stalls.window_start(height, total);
    let rows: Vec<Row<'_>> = rows_all
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, e)| {
            let row = stall_row(e, status.now_unix_nanos, wide);
            if i == view.stalls.shown(total) { row.style(SELECTED) } else { row }
        })
        .collect();
    let header = if wide {
        Row::new(vec!["when", "lasted", "wkr", "   task", "task spawned at", "classification"])
    } else {
        Row::new(vec!["when", "lasted", "wkr", "task spawned at", "blocked by"])
    };
    f.render_widget(Table::new(rows, stall_widths(inner.width)).header(header.style(DIM)), inner);
    if let Some(e) = rows_all.get(view.stalls.shown(total)) {
        draw_stall_detail(f, detail_area, e, status.now_unix_nanos);
    }
    total
}

fn draw_stall_detail(f: &mut Frame<'_>, area: Rect, e: &StallEntry, now: u64) {
    let ev = &e.latest;
    let block = Block::new().borders(Borders::TOP).title(Span::styled(format!(" Stall {} ", ev.stall_id), TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let label = |s: &'static str| Span::styled(format!("{s:<16}"), DIM);
    let loc = ev.location.as_ref().map_or_else(|| "unknown".to_string(), ToString::to_string);
    let duration = if e.ended {
        Span::raw(format!("{} (ended)", fmt_duration(ev.elapsed)))
    } else {
        let started = ev.at_unix_nanos.saturating_sub(u64::try_from(ev.elapsed.as_nanos()).unwrap_or(u64::MAX));
        let live = Duration::from_nanos(now.saturating_sub(started)).max(ev.elapsed);
        Span::styled(format!("{} and still running", fmt_duration(live)), ALERT)
    };
    let worker = match (ev.kind, ev.worker) {
        (StallKind::BlockInPlace, _) => "block_in_place (the worker's queue moved to another thread)".to_string(),
        (_, Some(w)) => format!("worker {w} blocked"),
        (_, None) => "a thread that is not a worker".to_string(),
    };
    let thread =
        format!("tid {}{}", ev.thread.tid, ev.thread.name.as_ref().map_or(String::new(), |n| format!(" ({n})")));
    let loc = match &ev.agent_task {
        Some(name) => format!("loopscope's own {name} (not the app's code; the OS or the app delayed it)"),
        None => loc,
    };
    let mut lines = vec![
        Line::from(vec![label("task spawned at"), Span::styled(loc, TITLE)]),
        Line::from(vec![label("task"), Span::raw(format!("{}  {worker}, {thread}", ev.task_id))]),
        Line::from(vec![label("duration"), duration]),
    ];
    match &e.culprit {
        None => {
            let why = if ev.caught_in_flight {
                "not analysed (yet); the probes report with a later event"
            } else {
                "found after it ended (the watchdog could not look while it ran), so no stack"
            };
            lines.push(Line::from(vec![label("classification"), Span::styled(why, DIM)]));
        }
        Some(c) => {
            lines.push(Line::from(vec![
                label("classification"),
                Span::styled(c.classification.to_string(), WARN.add_modifier(Modifier::BOLD)),
                Span::styled(format!("  {}", c.reason), DIM),
            ]));
            match &ev.time {
                // Where the wall time went: the poll's own time (what `check` judges) and the OS's share.
                Some(t) => lines.push(Line::from(vec![
                    label("own time"),
                    Span::styled(fmt_duration(t.self_time()), TITLE),
                    Span::styled("  waiting for a CPU ", DIM),
                    Span::raw(fmt_duration(t.run_queue)),
                    Span::styled(" · on CPU ", DIM),
                    Span::raw(fmt_duration(t.on_cpu)),
                    Span::styled("  blocked ", DIM),
                    Span::raw(fmt_duration(t.off_cpu)),
                    Span::styled("  unmeasured ", DIM),
                    Span::raw(fmt_duration(t.unmeasured)),
                    Span::styled(if t.estimated { "  (estimated)" } else { "" }, DIM),
                ])),
                None => {
                    let pct = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{:.0}%", r * 100.0));
                    lines.push(Line::from(vec![
                        label("on CPU"),
                        Span::raw(pct(c.on_cpu_ratio)),
                        Span::styled("   waiting for a CPU ", DIM),
                        Span::raw(pct(c.run_queue_ratio)),
                    ]));
                }
            }
            let latest = c.samples.last();
            let syscall = match &c.classification {
                Classification::Syscall { name, fd_target } => Some((name.clone(), fd_target.clone())),
                _ => latest.and_then(|s| s.syscall.clone().map(|n| (n, s.fd_target.clone()))),
            };
            let sys = match syscall {
                Some((name, Some(fd))) => format!("{name} on {fd}"),
                Some((name, None)) => name,
                None => "-".to_string(),
            };
            lines.push(Line::from(vec![label("syscall, fd"), Span::raw(sys)]));
            let frames = c.frames();
            if frames.is_empty() {
                let why = latest.and_then(|s| s.stack_error.clone()).unwrap_or_else(|| "no stack captured".into());
                lines.push(Line::from(vec![label("stack"), Span::styled(why, DIM)]));
            } else {
                lines.push(Line::from(vec![
                    label("stack"),
                    Span::styled("innermost first; ", DIM),
                    Span::styled("» your code", Style::new().fg(Color::Yellow).bold()),
                ]));
                // Show the user's frames even when the stack is longer than the pane: skip the frames of
                // the blocking call itself down to a few before the first user frame.
                let first_user = frames.iter().position(|fr| fr.origin == FrameOrigin::User).unwrap_or(0);
                let room = usize::from(inner.height).saturating_sub(lines.len());
                let skip = if first_user + 3 > room { first_user.saturating_sub(2) } else { 0 };
                if skip > 0 {
                    lines.push(Line::from(Span::styled(format!("  … {skip} frames inside the blocking call"), DIM)));
                }
                for fr in frames.iter().skip(skip) {
                    // A marker as well as the colour, so the user's frames stand out on any terminal.
                    let (mark, style) = match fr.origin {
                        FrameOrigin::User => ("» ", Style::new().fg(Color::Yellow).bold()),
                        _ => ("  ", DIM),
                    };
                    lines.push(Line::from(Span::styled(format!("{mark}{}", fr.display_short()), style)));
                }
            }
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
}

// ---- Histograms ----

/// A bar `width` cells long at most, its length proportional to log(1 + count): a log scale, so one slow
/// poll among a million fast ones is still visible.
fn log_bar(count: u64, max: u64, width: usize) -> String {
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

fn draw_histogram(f: &mut Frame<'_>, area: Rect, title: &str, subtitle: String, h: &LogHistogram) {
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
    lines.push(Line::from(Span::styled("log-scale bars; each row ×2", DIM)));
    f.render_widget(Paragraph::new(lines), inner);
}

/// The leading `"  "`-separated parts of `s` that fit in `width` cells: a narrow pane drops whole figures
/// (p99.9 first) rather than cutting one in half.
fn fit_parts(s: &str, width: usize) -> String {
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

fn quantiles(h: &LogHistogram) -> String {
    let q = |p: f64| h.quantile(p).map_or_else(|| "-".to_string(), |d| format!("≤{}", fmt_duration(d)));
    format!("n {}  p50 {}  p99 {}  p99.9 {}", fmt_count(h.count()), q(0.5), q(0.99), q(0.999))
}

fn draw_histograms(f: &mut Frame<'_>, area: Rect, state: &State) {
    let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let polls = state.poll_histogram();
    draw_histogram(f, left, "Poll duration (every poll)", quantiles(polls), polls);
    let wait = &state.waits().first_poll_delay;
    let recent = match (wait.recent_p50_nanos, wait.recent_p99_nanos) {
        (Some(a), Some(b)) => format!("recent p50 {} p99 {}", fmt_nanos(a), fmt_nanos(b)),
        _ => quantiles(&wait.histogram),
    };
    draw_histogram(f, right, "Scheduling delay (spawn → first poll)", recent, &wait.histogram);
}

// ---- Help ----

fn draw_help(f: &mut Frame<'_>, area: Rect, view: &ViewState) {
    let mut keys: Vec<(&str, &str)> = vec![
        ("Tab / Shift-Tab, 1-4", "next / previous screen"),
        ("← → / h l", "screens; on Tasks: by task ↔ by location"),
        ("↑ ↓ / k j, PgUp PgDn", "move the selection"),
        ("g / G", "first / last row"),
        ("Enter", "Overview: go to stalls; Tasks: detail pane"),
        ("Esc", "close pane, clear filter, back to Overview"),
        ("/", "filter by location, task id or stall text"),
        ("s / r", "next sort column / reverse the order"),
        ("p, space", "pause: freeze the data on screen"),
    ];
    if view.replay {
        keys.extend([
            ("n / .", "step one sample (when paused)"),
            ("[ / ]", "seek back / forward 10 s"),
            ("- / +", "slower / faster"),
            ("0", "restart"),
        ]);
    }
    keys.push(("q, Ctrl-C", "quit"));
    let mut lines: Vec<Line<'_>> = keys
        .iter()
        .map(|(k, what)| Line::from(vec![Span::styled(format!("{k:>22}  "), KEY), Span::raw(*what)]))
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::from(Span::styled("STALLED: a task poll holding its worker past the threshold right now.", DIM)));
    lines.push(Line::from(Span::styled("Any key closes this help.", DIM)));
    let w = 76.min(area.width);
    let h = (u16::try_from(lines.len()).unwrap_or(u16::MAX).saturating_add(2)).min(area.height);
    let popup = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    f.render_widget(Clear, popup);
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(Span::styled(" Keys ", TITLE))), popup);
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

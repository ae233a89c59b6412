//! Per-screen view state: which screen is shown, selections, sort order, filter, pause, help. It turns keys
//! into updates and knows nothing about the terminal or the network, so every key binding is unit-tested.
//!
//! The data itself lives in [`loopscope_wire::state::State`]; widgets in [`crate::ui`] are pure functions of
//! (state, view, area). Keeping the three apart is what lets the snapshot tests drive each screen from a
//! recording (see `STYLE.md`, "TUI").

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use std::cell::Cell;

/// The screens, in Tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// Header, one row per worker, queue sparklines.
    Overview,
    /// Tasks by task or by spawn location.
    Tasks,
    /// The stall log and the selected stall's details.
    Stalls,
    /// Poll duration and scheduling delay distributions.
    Histograms,
}

impl Screen {
    /// Every screen, in Tab order.
    pub const ALL: [Screen; 4] = [Screen::Overview, Screen::Tasks, Screen::Stalls, Screen::Histograms];

    /// The name shown in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Tasks => "Tasks",
            Screen::Stalls => "Stalls",
            Screen::Histograms => "Histograms",
        }
    }

    fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// Which table the Tasks screen shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskTable {
    /// One row per live task.
    ByTask,
    /// One row per spawn location (live and finished tasks together).
    ByLocation,
}

/// The column the Tasks tables are sorted by. `s` cycles through them in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Total time spent polling.
    Busy,
    /// Number of polls.
    Polls,
    /// Longest poll.
    MaxPoll,
    /// 99th percentile poll duration.
    P99Poll,
    /// Polls over the slow-poll threshold.
    SlowPolls,
    /// 99th percentile wake→poll latency.
    SchedP99,
    /// Polls over the stall threshold.
    Stalls,
    /// Task id (by task) or location name (by location).
    Name,
}

impl SortKey {
    const ORDER: [SortKey; 8] = [
        SortKey::Busy,
        SortKey::Polls,
        SortKey::MaxPoll,
        SortKey::P99Poll,
        SortKey::SlowPolls,
        SortKey::SchedP99,
        SortKey::Stalls,
        SortKey::Name,
    ];

    /// The next key in `s` order.
    pub fn next(self) -> SortKey {
        let i = SortKey::ORDER.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ORDER[(i + 1) % SortKey::ORDER.len()]
    }

    /// Whether this key sorts largest first by default (every measurement does; names sort A→Z).
    pub fn default_descending(self) -> bool {
        self != SortKey::Name
    }
}

/// Numeric columns of the Tasks tables (`ui::tasks::NUM_COLUMNS`), the range of the sideways scroll.
pub const TASK_COLUMNS: usize = 7;

/// Whether keys go to navigation or into the filter being typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputMode {
    /// Keys navigate.
    Normal,
    /// Keys edit the filter (after `/`); Enter keeps it, Esc drops it.
    Filter,
}

/// A command for the replay clock (only meaningful in `loopscope replay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayCommand {
    /// Apply the next tick while paused.
    Step,
    /// Jump by this many seconds (negative: back).
    Seek(i32),
    /// Play faster (×2).
    Faster,
    /// Play slower (÷2).
    Slower,
    /// Back to the start.
    Restart,
}

/// What the caller must do after a key, beyond the view's own update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more; redraw.
    None,
    /// Leave the dashboard.
    Quit,
    /// Freeze or unfreeze the data on screen (live: keep receiving in the background; replay: stop the clock).
    TogglePause,
    /// Move the replay clock.
    Replay(ReplayCommand),
}

/// Per-screen selection. It follows its item, not its row (as in tokio-console and k9s): `id` is the item
/// (task, location, stall) drawn as selected last frame, and the next frame selects that item wherever the
/// order has moved it; only when it is gone does the selection stay at its row and take the item there.
/// The renderer reports what it drew ([`Drawn`]) and [`ViewState::clamp`] writes it back here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The selected row index in the current order (as last drawn, or as moved by a key since).
    pub selected: usize,
    /// The selected item's id, as last drawn; `None` after a key moved the selection (the next frame takes
    /// the item at `selected`).
    pub id: Option<u64>,
    /// The first visible row, as last rendered.
    pub offset: Cell<usize>,
}

impl Selection {
    fn up(&mut self, n: usize) {
        self.selected = self.selected.saturating_sub(n);
        self.id = None;
    }

    fn down(&mut self, n: usize) {
        self.selected = self.selected.saturating_add(n);
        self.id = None;
    }

    /// Selects row `i` (a click, Home, End).
    pub fn select(&mut self, i: usize) {
        self.selected = i;
        self.id = None;
    }

    /// The row to highlight among `len` rows: where `position_of` finds the followed item, else the selected
    /// row (which may point past the end until the next clamp).
    pub fn resolve(&self, len: usize, position_of: impl FnOnce(u64) -> Option<usize>) -> usize {
        self.id.and_then(position_of).filter(|&i| i < len).unwrap_or_else(|| self.selected.min(len.saturating_sub(1)))
    }

    /// The row to highlight among `len` rows when the item is not looked up (the selection may point past
    /// the end until the next clamp).
    pub fn shown(&self, len: usize) -> usize {
        self.selected.min(len.saturating_sub(1))
    }

    /// Keeps the selection within `len` rows.
    pub fn clamp(&mut self, len: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// Takes what a frame drew: the row it highlighted and the item on it.
    fn sync(&mut self, drawn: &Shown) {
        self.clamp(drawn.len);
        if let Some((i, id)) = drawn.selected {
            self.selected = i;
            self.id = Some(id);
        }
    }

    /// The first row to show in a window of `height` rows so that row `sel` is visible, remembering it so
    /// that moving the selection inside the window does not scroll.
    pub fn window_start_at(&self, sel: usize, height: usize, len: usize) -> usize {
        let sel = sel.min(len.saturating_sub(1));
        let height = height.max(1);
        let mut off = self.offset.get().min(len.saturating_sub(height));
        if sel < off {
            off = sel;
        } else if sel >= off + height {
            off = sel + 1 - height;
        }
        self.offset.set(off);
        off
    }

    /// [`Selection::window_start_at`] the selected row.
    pub fn window_start(&self, height: usize, len: usize) -> usize {
        self.window_start_at(self.selected, height, len)
    }
}

/// One list as a frame drew it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    /// Rows in the list (after the filter).
    pub len: usize,
    /// The highlighted row and its item's id.
    pub selected: Option<(usize, u64)>,
    /// Where the list's rows are on screen (for the mouse): `(area, first row index shown)`.
    pub rows_at: Option<(Rect, usize)>,
}

/// What a frame drew, for [`ViewState::clamp`] and the mouse: each list drawn this frame (`None`: not drawn,
/// leave its selection alone) and where the clickable tabs are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drawn {
    /// The by-task table.
    pub tasks: Option<Shown>,
    /// The by-location table.
    pub locations: Option<Shown>,
    /// The stall log.
    pub stalls: Option<Shown>,
    /// The workers.
    pub workers: Option<Shown>,
    /// Screen tabs: the cells each covers on the tab bar.
    pub screen_tabs: Vec<(Rect, Screen)>,
    /// The Tasks screen's table tabs.
    pub table_tabs: Vec<(Rect, TaskTable)>,
}

/// Everything about *how* the data is shown. See the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct ViewState {
    /// The screen shown.
    pub screen: Screen,
    /// Which table the Tasks screen shows.
    pub task_table: TaskTable,
    /// Sort column of the Tasks tables.
    pub sort: SortKey,
    /// Largest first.
    pub descending: bool,
    /// Case-insensitive substring filter on task id, location and stall text. Empty: no filter.
    pub filter: String,
    /// Where keys go.
    pub input: InputMode,
    /// The filter as it was before `/`, restored by Esc.
    pub filter_before_edit: String,
    /// Selection in the by-task table.
    pub tasks: Selection,
    /// Selection in the by-location table.
    pub locations: Selection,
    /// Selection in the stall log.
    pub stalls: Selection,
    /// Selected worker on the Overview.
    pub workers: Selection,
    /// Whether the detail pane of the Tasks screen is open (Enter).
    pub detail: bool,
    /// Whether the help overlay is shown.
    pub help: bool,
    /// Whether the data on screen is frozen.
    pub paused: bool,
    /// Whether this view drives a replay (enables the replay keys and their help).
    pub replay: bool,
    /// Numeric columns of the Tasks tables scrolled off to the left (`<` `>`, Shift-← →), for terminals too
    /// narrow to show them all; the id and location columns stay.
    pub hscroll: usize,
    /// Whether the by-task table lists recently finished tasks too (`f` toggles).
    pub finished: bool,
    /// What the last frame drew: where the lists and tabs are, for the mouse.
    pub drawn: Drawn,
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState::new()
    }
}

/// Rows moved by PageUp/PageDown.
const PAGE: usize = 10;

impl ViewState {
    /// The view a dashboard starts with: Overview, tasks sorted by busy time.
    pub fn new() -> Self {
        ViewState {
            screen: Screen::Overview,
            task_table: TaskTable::ByTask,
            sort: SortKey::Busy,
            descending: true,
            filter: String::new(),
            input: InputMode::Normal,
            filter_before_edit: String::new(),
            tasks: Selection::default(),
            locations: Selection::default(),
            stalls: Selection::default(),
            workers: Selection::default(),
            detail: false,
            help: false,
            paused: false,
            replay: false,
            hscroll: 0,
            finished: true,
            drawn: Drawn::default(),
        }
    }

    /// A view for `loopscope replay`.
    pub fn for_replay() -> Self {
        ViewState { replay: true, ..ViewState::new() }
    }

    /// The selection the arrow keys move on the current screen.
    pub fn current_selection(&mut self) -> &mut Selection {
        match (self.screen, self.task_table) {
            (Screen::Tasks, TaskTable::ByTask) => &mut self.tasks,
            (Screen::Tasks, TaskTable::ByLocation) => &mut self.locations,
            (Screen::Stalls, _) => &mut self.stalls,
            (Screen::Overview | Screen::Histograms, _) => &mut self.workers,
        }
    }

    /// Takes what a frame drew: each selection moves to the row its item is on now, within the data.
    pub fn clamp(&mut self, drawn: Drawn) {
        for (sel, shown) in [
            (&mut self.tasks, &drawn.tasks),
            (&mut self.locations, &drawn.locations),
            (&mut self.stalls, &drawn.stalls),
            (&mut self.workers, &drawn.workers),
        ] {
            if let Some(s) = shown {
                sel.sync(s);
            }
        }
        self.drawn = drawn;
    }

    /// Handles one key. Key releases and repeats of non-navigation keys are ignored (terminals that report
    /// releases would otherwise act twice).
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        // Ctrl-C always quits: in raw mode the terminal sends it as a key rather than a signal.
        if key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c')) {
            return Action::Quit;
        }
        if self.input == InputMode::Filter {
            self.filter_key(key);
            return Action::None;
        }
        if self.help {
            // Any key closes the help; `q` still quits from there.
            self.help = false;
            return if key.code == KeyCode::Char('q') { Action::Quit } else { Action::None };
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.screen = Screen::ALL[(self.screen.index() + 1) % Screen::ALL.len()],
            KeyCode::BackTab => {
                self.screen = Screen::ALL[(self.screen.index() + Screen::ALL.len() - 1) % Screen::ALL.len()]
            }
            KeyCode::Char(c @ '1'..='4') => {
                self.screen = Screen::ALL[usize::from(c as u8 - b'1')];
            }
            KeyCode::Left if key.modifiers.contains(KeyModifiers::SHIFT) => self.scroll_sideways(-1),
            KeyCode::Right if key.modifiers.contains(KeyModifiers::SHIFT) => self.scroll_sideways(1),
            KeyCode::Char('<') => self.scroll_sideways(-1),
            KeyCode::Char('>') => self.scroll_sideways(1),
            KeyCode::Up | KeyCode::Char('k') => self.current_selection().up(1),
            KeyCode::Down | KeyCode::Char('j') => self.current_selection().down(1),
            KeyCode::PageUp => self.current_selection().up(PAGE),
            KeyCode::PageDown => self.current_selection().down(PAGE),
            KeyCode::Home | KeyCode::Char('g') => self.current_selection().select(0),
            KeyCode::End | KeyCode::Char('G') => self.current_selection().select(usize::MAX),
            KeyCode::Left | KeyCode::Char('h') | KeyCode::Right | KeyCode::Char('l')
                if self.screen == Screen::Tasks =>
            {
                self.task_table = match self.task_table {
                    TaskTable::ByTask => TaskTable::ByLocation,
                    TaskTable::ByLocation => TaskTable::ByTask,
                };
            }
            KeyCode::Left | KeyCode::Char('h') => self.prev_screen(),
            KeyCode::Right | KeyCode::Char('l') => self.next_screen(),
            KeyCode::Enter => self.enter(),
            KeyCode::Esc => self.escape(),
            KeyCode::Char('/') => {
                // A new search, as in less, vim and k9s: the old filter comes back with Esc.
                self.filter_before_edit = std::mem::take(&mut self.filter);
                self.input = InputMode::Filter;
                // Filtering only makes sense on lists; from elsewhere, go to the tasks.
                if !matches!(self.screen, Screen::Tasks | Screen::Stalls) {
                    self.screen = Screen::Tasks;
                }
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.descending = self.sort.default_descending();
            }
            KeyCode::Char('S') | KeyCode::Char('r') => self.descending = !self.descending,
            KeyCode::Char('f') => self.finished = !self.finished,
            KeyCode::Char('p') | KeyCode::Char(' ') => return Action::TogglePause,
            KeyCode::Char('n') | KeyCode::Char('.') if self.replay => return Action::Replay(ReplayCommand::Step),
            KeyCode::Char(']') if self.replay => return Action::Replay(ReplayCommand::Seek(10)),
            KeyCode::Char('[') if self.replay => return Action::Replay(ReplayCommand::Seek(-10)),
            KeyCode::Char('+') | KeyCode::Char('=') if self.replay => return Action::Replay(ReplayCommand::Faster),
            KeyCode::Char('-') if self.replay => return Action::Replay(ReplayCommand::Slower),
            KeyCode::Char('0') if self.replay => return Action::Replay(ReplayCommand::Restart),
            _ => {}
        }
        Action::None
    }

    /// Scrolls the Tasks tables' numeric columns by `by` columns.
    fn scroll_sideways(&mut self, by: isize) {
        self.hscroll = self.hscroll.saturating_add_signed(by).min(TASK_COLUMNS - 1);
    }

    /// Handles one mouse event: a click selects a row or a tab, the wheel moves the selection (sideways
    /// on the Tasks tables with the horizontal wheel). Uses where the last frame drew things.
    pub fn handle_mouse(&mut self, m: MouseEvent) -> Action {
        if self.help {
            if matches!(m.kind, MouseEventKind::Down(_)) {
                self.help = false;
            }
            return Action::None;
        }
        let at = Position { x: m.column, y: m.row };
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if let Some((_, screen)) = self.drawn.screen_tabs.iter().find(|(r, _)| r.contains(at)) {
                    self.screen = *screen;
                    return Action::None;
                }
                if let Some((_, table)) = self.drawn.table_tabs.iter().find(|(r, _)| r.contains(at)) {
                    self.task_table = *table;
                    return Action::None;
                }
                let shown = self.current_shown().and_then(|s| s.rows_at);
                if let Some((area, first)) = shown
                    && area.contains(at)
                {
                    let row = first + usize::from(at.y - area.y);
                    self.current_selection().select(row);
                }
            }
            MouseEventKind::ScrollDown => self.current_selection().down(3),
            MouseEventKind::ScrollUp => self.current_selection().up(3),
            MouseEventKind::ScrollRight if self.screen == Screen::Tasks => self.scroll_sideways(1),
            MouseEventKind::ScrollLeft if self.screen == Screen::Tasks => self.scroll_sideways(-1),
            _ => {}
        }
        Action::None
    }

    /// What the last frame drew of the current screen's list.
    fn current_shown(&self) -> Option<Shown> {
        match (self.screen, self.task_table) {
            (Screen::Tasks, TaskTable::ByTask) => self.drawn.tasks,
            (Screen::Tasks, TaskTable::ByLocation) => self.drawn.locations,
            (Screen::Stalls, _) => self.drawn.stalls,
            (Screen::Overview | Screen::Histograms, _) => self.drawn.workers,
        }
    }

    fn next_screen(&mut self) {
        let i = self.screen.index();
        if i + 1 < Screen::ALL.len() {
            self.screen = Screen::ALL[i + 1];
        }
    }

    fn prev_screen(&mut self) {
        let i = self.screen.index();
        if i > 0 {
            self.screen = Screen::ALL[i - 1];
        }
    }

    fn enter(&mut self) {
        match self.screen {
            // Enter on a worker jumps to the stall log, where the culprit's details are.
            Screen::Overview => self.screen = Screen::Stalls,
            Screen::Tasks => self.detail = !self.detail,
            Screen::Stalls | Screen::Histograms => {}
        }
    }

    /// Esc backs out one level: help, then the detail pane, then the filter, then to the Overview.
    fn escape(&mut self) {
        if self.detail {
            self.detail = false;
        } else if !self.filter.is_empty() {
            self.filter.clear();
        } else {
            self.screen = Screen::Overview;
        }
    }

    fn filter_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Enter => self.input = InputMode::Normal,
            KeyCode::Esc => {
                self.filter = std::mem::take(&mut self.filter_before_edit);
                self.input = InputMode::Normal;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            // Long enough for any path; bounded so that a stuck key cannot grow it forever.
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) && self.filter.len() < 256 => {
                self.filter.push(c);
            }
            _ => {}
        }
        // A new filter changes every row index: each selection stays on its item if the filter keeps it, and
        // starts again from the top if not.
        self.tasks.selected = 0;
        self.locations.selected = 0;
        self.stalls.selected = 0;
    }
}

#[cfg(test)]
mod tests;

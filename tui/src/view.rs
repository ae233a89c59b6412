//! Per-screen view state: which screen is shown, selections, sort order, filter, pause, help. It turns keys
//! into updates and knows nothing about the terminal or the network, so every key binding is unit-tested.
//!
//! The data itself lives in [`loopscope_wire::state::State`]; widgets in [`crate::ui`] are pure functions of
//! (state, view, area). Keeping the three apart is what lets the snapshot tests drive each screen from a
//! recording (see `STYLE.md`, "TUI").

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
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

/// Per-screen selection: the selected row and the first row shown (kept by the renderer so the selection
/// stays visible; a `Cell` because rendering only borrows the view).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The selected row index in the current order.
    pub selected: usize,
    /// The first visible row, as last rendered.
    pub offset: Cell<usize>,
}

impl Selection {
    fn up(&mut self, n: usize) {
        self.selected = self.selected.saturating_sub(n);
    }

    fn down(&mut self, n: usize) {
        self.selected = self.selected.saturating_add(n);
    }

    /// The row to highlight among `len` rows (the selection may point past the end until the next clamp).
    pub fn shown(&self, len: usize) -> usize {
        self.selected.min(len.saturating_sub(1))
    }

    /// Keeps the selection within `len` rows.
    pub fn clamp(&mut self, len: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// The first row to show in a window of `height` rows so that the selection is visible, remembering it
    /// so that moving the selection inside the window does not scroll.
    pub fn window_start(&self, height: usize, len: usize) -> usize {
        let sel = self.selected.min(len.saturating_sub(1));
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
}

/// Row counts of the current data, for clamping selections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// Rows of the by-task table (after the filter).
    pub tasks: usize,
    /// Rows of the by-location table (after the filter).
    pub locations: usize,
    /// Stalls in the log (after the filter).
    pub stalls: usize,
    /// Workers.
    pub workers: usize,
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

    /// Keeps every selection within the current data.
    pub fn clamp(&mut self, counts: RowCounts) {
        self.tasks.clamp(counts.tasks);
        self.locations.clamp(counts.locations);
        self.stalls.clamp(counts.stalls);
        self.workers.clamp(counts.workers);
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
            KeyCode::Up | KeyCode::Char('k') => self.current_selection().up(1),
            KeyCode::Down | KeyCode::Char('j') => self.current_selection().down(1),
            KeyCode::PageUp => self.current_selection().up(PAGE),
            KeyCode::PageDown => self.current_selection().down(PAGE),
            KeyCode::Home | KeyCode::Char('g') => self.current_selection().selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.current_selection().selected = usize::MAX,
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
                self.filter_before_edit = self.filter.clone();
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
        // A new filter changes every row index; start again from the top.
        self.tasks.selected = 0;
        self.locations.selected = 0;
        self.stalls.selected = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventState;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn press(v: &mut ViewState, codes: &[KeyCode]) -> Vec<Action> {
        codes.iter().map(|c| v.handle_key(key(*c))).collect()
    }

    fn chars(s: &str) -> Vec<KeyCode> {
        s.chars().map(KeyCode::Char).collect()
    }

    #[test]
    fn tab_cycles_screens_both_ways() {
        let mut v = ViewState::new();
        let mut seen = vec![v.screen];
        for _ in 0..4 {
            v.handle_key(key(KeyCode::Tab));
            seen.push(v.screen);
        }
        assert_eq!(seen, vec![Screen::Overview, Screen::Tasks, Screen::Stalls, Screen::Histograms, Screen::Overview]);
        v.handle_key(key(KeyCode::BackTab));
        assert_eq!(v.screen, Screen::Histograms);
        press(&mut v, &chars("2"));
        assert_eq!(v.screen, Screen::Tasks);
    }

    #[test]
    fn arrows_and_vi_keys_move_the_selection_of_the_current_screen() {
        let mut v = ViewState::new();
        press(&mut v, &[KeyCode::Tab, KeyCode::Down, KeyCode::Char('j'), KeyCode::Char('j'), KeyCode::Up]);
        assert_eq!(v.tasks.selected, 2);
        assert_eq!(v.stalls.selected, 0);
        v.clamp(RowCounts { tasks: 2, ..RowCounts::default() });
        assert_eq!(v.tasks.selected, 1);
        press(&mut v, &[KeyCode::Char('k'), KeyCode::Char('k'), KeyCode::Char('k')]);
        assert_eq!(v.tasks.selected, 0, "up stops at the top");
        press(&mut v, &[KeyCode::End]);
        v.clamp(RowCounts { tasks: 40, ..RowCounts::default() });
        assert_eq!(v.tasks.selected, 39);
    }

    #[test]
    fn left_right_switch_tables_on_tasks_and_screens_elsewhere() {
        let mut v = ViewState::new();
        press(&mut v, &[KeyCode::Char('l')]);
        assert_eq!(v.screen, Screen::Tasks);
        press(&mut v, &[KeyCode::Right]);
        assert_eq!((v.screen, v.task_table), (Screen::Tasks, TaskTable::ByLocation));
        press(&mut v, &[KeyCode::Char('h')]);
        assert_eq!(v.task_table, TaskTable::ByTask);
        press(&mut v, &[KeyCode::Tab, KeyCode::Left]);
        assert_eq!(v.screen, Screen::Tasks);
    }

    #[test]
    fn filter_is_typed_kept_with_enter_and_dropped_with_esc() {
        let mut v = ViewState::new();
        press(&mut v, &[KeyCode::Char('/')]);
        assert_eq!((v.screen, v.input), (Screen::Tasks, InputMode::Filter));
        // While typing, letters that are also commands go into the filter.
        press(&mut v, &chars("sleq"));
        press(&mut v, &[KeyCode::Backspace, KeyCode::Char('e'), KeyCode::Char('p'), KeyCode::Enter]);
        assert_eq!(v.filter, "sleep");
        assert_eq!(v.input, InputMode::Normal);
        assert_eq!(v.sort, SortKey::Busy, "'s' typed into the filter must not change the sort");
        // Editing again and pressing Esc restores what was there.
        press(&mut v, &[KeyCode::Char('/'), KeyCode::Char('x'), KeyCode::Esc]);
        assert_eq!(v.filter, "sleep");
        // In normal mode Esc clears the filter, then goes back to the overview.
        press(&mut v, &[KeyCode::Esc]);
        assert_eq!(v.filter, "");
        press(&mut v, &[KeyCode::Esc]);
        assert_eq!(v.screen, Screen::Overview);
    }

    #[test]
    fn sort_cycles_and_reverses() {
        let mut v = ViewState::new();
        let mut order = vec![v.sort];
        for _ in 0..8 {
            press(&mut v, &chars("s"));
            order.push(v.sort);
        }
        assert_eq!(order.first(), order.last());
        assert_eq!(order[1], SortKey::Polls);
        assert!(v.descending);
        press(&mut v, &chars("r"));
        assert!(!v.descending);
        while v.sort != SortKey::Name {
            press(&mut v, &chars("s"));
        }
        assert!(!v.descending, "names sort A to Z");
    }

    #[test]
    fn quit_pause_help_and_ctrl_c() {
        let mut v = ViewState::new();
        assert_eq!(v.handle_key(key(KeyCode::Char('p'))), Action::TogglePause);
        assert_eq!(v.handle_key(key(KeyCode::Char('?'))), Action::None);
        assert!(v.help);
        assert_eq!(v.handle_key(key(KeyCode::Tab)), Action::None, "a key closes the help");
        assert!(!v.help);
        assert_eq!(v.screen, Screen::Overview, "the key that closes the help does nothing else");
        assert_eq!(v.handle_key(key(KeyCode::Char('q'))), Action::Quit);
        press(&mut v, &[KeyCode::Char('/')]);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(v.handle_key(ctrl_c), Action::Quit, "Ctrl-C quits even while typing a filter");
    }

    #[test]
    fn key_releases_are_ignored() {
        let mut v = ViewState::new();
        let release = KeyEvent {
            code: KeyCode::Tab,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Release,
            state: KeyEventState::NONE,
        };
        v.handle_key(release);
        assert_eq!(v.screen, Screen::Overview);
    }

    #[test]
    fn replay_keys_only_in_replay() {
        let mut live = ViewState::new();
        assert_eq!(live.handle_key(key(KeyCode::Char(']'))), Action::None);
        let mut r = ViewState::for_replay();
        assert_eq!(r.handle_key(key(KeyCode::Char(']'))), Action::Replay(ReplayCommand::Seek(10)));
        assert_eq!(r.handle_key(key(KeyCode::Char('['))), Action::Replay(ReplayCommand::Seek(-10)));
        assert_eq!(r.handle_key(key(KeyCode::Char('n'))), Action::Replay(ReplayCommand::Step));
        assert_eq!(r.handle_key(key(KeyCode::Char('+'))), Action::Replay(ReplayCommand::Faster));
        assert_eq!(r.handle_key(key(KeyCode::Char('-'))), Action::Replay(ReplayCommand::Slower));
    }

    #[test]
    fn enter_opens_details_and_overview_enter_goes_to_stalls() {
        let mut v = ViewState::new();
        press(&mut v, &[KeyCode::Enter]);
        assert_eq!(v.screen, Screen::Stalls);
        press(&mut v, &[KeyCode::Char('1'), KeyCode::Tab, KeyCode::Enter]);
        assert!(v.detail);
        press(&mut v, &[KeyCode::Esc]);
        assert!(!v.detail);
        assert_eq!(v.screen, Screen::Tasks);
    }

    #[test]
    fn window_keeps_the_selection_visible_without_jumping() {
        let mut s = Selection::default();
        assert_eq!(s.window_start(5, 100), 0);
        s.selected = 7;
        assert_eq!(s.window_start(5, 100), 3);
        s.selected = 4;
        assert_eq!(s.window_start(5, 100), 3, "moving up inside the window does not scroll");
        s.selected = 1;
        assert_eq!(s.window_start(5, 100), 1);
        s.selected = 99;
        assert_eq!(s.window_start(5, 3), 0, "shrunk data");
    }
}

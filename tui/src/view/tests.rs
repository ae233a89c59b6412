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
    v.clamp(Drawn { tasks: Some(Shown { len: 2, ..Shown::default() }), ..Drawn::default() });
    assert_eq!(v.tasks.selected, 1);
    press(&mut v, &[KeyCode::Char('k'), KeyCode::Char('k'), KeyCode::Char('k')]);
    assert_eq!(v.tasks.selected, 0, "up stops at the top");
    press(&mut v, &[KeyCode::End]);
    v.clamp(Drawn { tasks: Some(Shown { len: 40, ..Shown::default() }), ..Drawn::default() });
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
fn slash_starts_a_new_filter() {
    let mut v = ViewState { filter: "sleep".into(), ..ViewState::new() };
    press(&mut v, &[KeyCode::Char('/'), KeyCode::Char('c'), KeyCode::Char('p'), KeyCode::Char('u'), KeyCode::Enter]);
    assert_eq!(v.filter, "cpu", "typing after / replaces the filter, as in less and vim");
}

#[test]
fn the_mouse_clicks_tabs_and_rows_and_scrolls() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mouse = |kind, column, row| MouseEvent { kind, column, row, modifiers: KeyModifiers::NONE };
    let mut v = ViewState::new();
    v.clamp(Drawn {
        screen_tabs: vec![(Rect::new(21, 0, 9, 1), Screen::Tasks)],
        table_tabs: vec![(Rect::new(16, 3, 13, 1), TaskTable::ByLocation)],
        tasks: Some(Shown { len: 50, selected: Some((0, 7)), rows_at: Some((Rect::new(0, 5, 80, 10), 20)) }),
        ..Drawn::default()
    });
    v.handle_mouse(mouse(MouseEventKind::Down(MouseButton::Left), 25, 0));
    assert_eq!(v.screen, Screen::Tasks);
    // A click on the third row shown selects row 20 + 2, and lets go of the followed task.
    v.handle_mouse(mouse(MouseEventKind::Down(MouseButton::Left), 10, 7));
    assert_eq!((v.tasks.selected, v.tasks.id), (22, None));
    v.handle_mouse(mouse(MouseEventKind::ScrollDown, 10, 7));
    assert_eq!(v.tasks.selected, 25);
    v.handle_mouse(mouse(MouseEventKind::ScrollRight, 10, 7));
    assert_eq!(v.hscroll, 1);
    v.handle_mouse(mouse(MouseEventKind::Down(MouseButton::Left), 20, 3));
    assert_eq!(v.task_table, TaskTable::ByLocation);
}

#[test]
fn columns_scroll_sideways_within_bounds() {
    let mut v = ViewState { screen: Screen::Tasks, ..ViewState::new() };
    press(&mut v, &[KeyCode::Char('<')]);
    assert_eq!(v.hscroll, 0);
    for _ in 0..20 {
        press(&mut v, &[KeyCode::Char('>')]);
    }
    assert_eq!(v.hscroll, TASK_COLUMNS - 1);
    v.handle_key(KeyEvent::new(KeyCode::Left, KeyModifiers::SHIFT));
    assert_eq!(v.hscroll, TASK_COLUMNS - 2);
    assert_eq!(v.task_table, TaskTable::ByTask, "Shift-← scrolls; it does not switch tables");
    press(&mut v, &chars("f"));
    assert!(!v.finished);
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
fn the_selection_follows_its_item_and_keys_let_go_of_it() {
    let mut v = ViewState { screen: Screen::Stalls, ..ViewState::new() };
    // Frame 1 draws stall 17 on row 0.
    v.clamp(Drawn { stalls: Some(Shown { len: 3, selected: Some((0, 17)), rows_at: None }), ..Drawn::default() });
    assert_eq!((v.stalls.selected, v.stalls.id), (0, Some(17)));
    // Stall 18 arrives on top: the frame finds 17 on row 1.
    assert_eq!(v.stalls.resolve(4, |id| (id == 17).then_some(1)), 1);
    // A key moves by rows from there and lets go of the item until the next frame picks the new one.
    v.clamp(Drawn { stalls: Some(Shown { len: 4, selected: Some((1, 17)), rows_at: None }), ..Drawn::default() });
    v.handle_key(key(KeyCode::Down));
    assert_eq!((v.stalls.selected, v.stalls.id), (2, None));
    assert_eq!(v.stalls.resolve(4, |_| Some(0)), 2, "no item to follow: the row");
    // An item that is gone leaves the selection on its row.
    v.clamp(Drawn { stalls: Some(Shown { len: 4, selected: Some((2, 16)), rows_at: None }), ..Drawn::default() });
    assert_eq!(v.stalls.resolve(4, |_| None), 2);
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

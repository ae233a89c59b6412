//! The help overlay: every key.

use super::style::DIM;
use super::style::KEY;
use super::style::TITLE;
use crate::view::ViewState;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Clear;
use ratatui::widgets::Paragraph;

pub(super) fn draw_help(f: &mut Frame<'_>, area: Rect, view: &ViewState) {
    let mut keys: Vec<(&str, &str)> = vec![
        ("Tab / Shift-Tab, 1-4", "next / previous screen"),
        ("← → / h l", "screens; on Tasks: by task ↔ by location"),
        ("↑ ↓ / k j, PgUp PgDn", "move the selection"),
        ("g / G", "first / last row"),
        ("Enter", "Overview: go to stalls; Tasks: detail pane"),
        ("Esc", "close pane, clear filter, back to Overview"),
        ("/", "filter by location, task id or stall text"),
        ("s / r", "next sort column / reverse the order"),
        ("< > / Shift-← →", "Tasks: scroll the columns sideways"),
        ("f", "Tasks: show / hide finished tasks (✓)"),
        ("mouse", "click a row or tab; wheel scrolls (Shift-drag selects text)"),
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
    lines.push(Line::from(Span::styled("q quits; any other key closes this help.", DIM)));
    let w = 76.min(area.width);
    let h = (u16::try_from(lines.len()).unwrap_or(u16::MAX).saturating_add(2)).min(area.height);
    let popup = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    f.render_widget(Clear, popup);
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(Span::styled(" Keys ", TITLE))), popup);
}

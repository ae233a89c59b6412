//! The tab bar: the screens, and which app is watched.

use super::status::Status;
use super::style::DIM;
use crate::view::Screen;
use crate::view::ViewState;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Alignment;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::style::Modifier;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Paragraph;

/// Draws the tab bar; returns where each screen's tab is, for the mouse.
pub(super) fn draw_tabs(
    f: &mut Frame<'_>,
    area: Rect,
    state: &State,
    view: &ViewState,
    status: &Status,
) -> Vec<(Rect, Screen)> {
    let mut spans = vec![Span::styled(" loopscope ", Style::new().bg(Color::Cyan).fg(Color::Black).bold())];
    let mut rects = Vec::new();
    let mut x = area.x + 11;
    for (i, s) in Screen::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, s.title());
        let w = u16::try_from(label.chars().count()).unwrap_or(0);
        rects.push((Rect { x, y: area.y, width: w, height: 1 }.intersection(area), *s));
        x = x.saturating_add(w);
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
            // pid 0: the source does not know it (console mode).
            let pid = if h.pid == 0 { String::new() } else { format!(" pid {}", h.pid) };
            format!("{name}{pid} · {} ", status.source)
        }
        None => format!("{} ", status.source),
    };
    let used: usize = 11 + Screen::ALL.iter().map(|s| s.title().len() + 4).sum::<usize>();
    if usize::from(area.width) > used + who.chars().count() {
        f.render_widget(Paragraph::new(Span::styled(who, DIM)).alignment(Alignment::Right), area);
    }
    rects
}

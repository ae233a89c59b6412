//! The footer: key hints on the left, connection or replay clock on the right; the filter being typed.

use super::Connection;
use super::status::Status;
use super::style::ALERT;
use super::style::DIM;
use super::style::GOOD;
use super::style::KEY;
use super::style::WARN;
use crate::view::InputMode;
use crate::view::Screen;
use crate::view::ViewState;
use ratatui::Frame;
use ratatui::layout::Alignment;
use ratatui::layout::Constraint;
use ratatui::layout::Layout;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::style::Modifier;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::text::Span;
use std::time::Duration;

pub(super) fn draw_footer(f: &mut Frame<'_>, area: Rect, view: &ViewState, status: &Status) {
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
        Connection::Waiting(_) => right.push(Span::styled("○ waiting for the app", WARN)),
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
    // Most useful first; a narrow terminal shows the hints that fit whole (`?` lists every key).
    let mut hints: Vec<(&str, &str)> = vec![("q", "quit"), ("?", "help")];
    match view.screen {
        Screen::Tasks => {
            hints.extend([("⏎", "detail"), ("s", "sort"), ("/", "filter"), ("←→", "table"), ("f", "finished")])
        }
        Screen::Stalls => hints.extend([("↑↓", "select"), ("/", "filter")]),
        Screen::Overview => hints.extend([("⏎", "stalls")]),
        Screen::Histograms => {}
    }
    hints.push(("Tab", "screen"));
    if view.replay {
        hints.extend([("p", "pause"), ("n", "step"), ("[ ]", "seek"), ("+-", "speed")]);
    } else {
        hints.push(("p", "pause"));
    }
    let mut spans = vec![Span::raw(" ")];
    let mut used = 1;
    for (k, what) in hints {
        let text = format!(" {what}  ");
        let w = k.chars().count() + text.chars().count();
        if used + w > usize::from(left_area.width) + 2 {
            break;
        }
        used += w;
        spans.push(Span::styled(k, KEY));
        spans.push(Span::styled(text, DIM));
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

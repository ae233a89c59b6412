//! Colours shared by the widgets, and the thresholds that pick them.

use ratatui::style::Color;
use ratatui::style::Modifier;
use ratatui::style::Style;
use std::time::Duration;

pub(super) const DIM: Style = Style::new().fg(Color::DarkGray);
pub(super) const KEY: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
pub(super) const TITLE: Style = Style::new().add_modifier(Modifier::BOLD);
pub(super) const SELECTED: Style = Style::new().bg(Color::Blue).fg(Color::White);
pub(super) const ALERT: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
pub(super) const WARN: Style = Style::new().fg(Color::Yellow);
pub(super) const GOOD: Style = Style::new().fg(Color::Green);

pub(super) fn ratio_style(r: f64) -> Style {
    if r >= 0.9 {
        ALERT
    } else if r >= 0.6 {
        WARN
    } else {
        GOOD
    }
}

pub(super) fn delay_style(d: Duration) -> Style {
    if d >= Duration::from_millis(10) {
        ALERT
    } else if d >= Duration::from_millis(1) {
        WARN
    } else {
        Style::new()
    }
}

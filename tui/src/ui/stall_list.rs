//! One row of the stall log, as the Stalls screen and the Overview's recent stalls show it.

use super::style::ALERT;
use super::style::DIM;
use crate::model::fmt_duration;
use crate::model::short_location;
use loopscope_wire::Classification;
use loopscope_wire::StallKind;
use loopscope_wire::state::StallEntry;
use ratatui::layout::Constraint;
use ratatui::text::Span;
use ratatui::widgets::Cell;
use ratatui::widgets::Row;
use std::time::Duration;

/// The column titles over stall rows.
pub(super) fn stall_header(wide: bool) -> Row<'static> {
    let titles = if wide {
        vec!["when", "lasted", "wkr", "   task", "task spawned at", "classification"]
    } else {
        vec!["when", "lasted", "wkr", "task spawned at", "blocked by"]
    };
    Row::new(titles).style(DIM)
}

pub(super) fn stall_widths(width: u16) -> Vec<Constraint> {
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

pub(super) fn ago(now: u64, at: u64) -> String {
    format!("{} ago", fmt_whole_secs(Duration::from_nanos(now.saturating_sub(at))))
}

/// Whole seconds, for clocks that need no precision: `0s`, `59s`, `2m03s`, `1h02m`.
pub(super) fn fmt_whole_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 { format!("{s}s") } else { fmt_duration(Duration::from_secs(s)) }
}

pub(super) fn stall_row<'a>(e: &StallEntry, now: u64, wide: bool) -> Row<'a> {
    let ev = &e.latest;
    let dur = if e.ended {
        Span::raw(fmt_duration(ev.elapsed))
    } else {
        let started = ev.at_unix_nanos.saturating_sub(u64::try_from(ev.elapsed.as_nanos()).unwrap_or(u64::MAX));
        Span::styled(fmt_duration(Duration::from_nanos(now.saturating_sub(started)).max(ev.elapsed)), ALERT)
    };
    let worker = match (ev.kind, ev.worker) {
        (StallKind::BlockInPlace, _) => "bip".to_string(),
        (StallKind::BlockOn, _) => "bdy".to_string(),
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
pub(super) fn short_classification(c: &Classification) -> String {
    match c {
        Classification::CpuBound => "CPU-bound".into(),
        Classification::Syscall { name, .. } => format!("in {name}"),
        Classification::LockWait { .. } => "lock wait".into(),
        Classification::PageFault => "page faults".into(),
        Classification::Unknown => "unclassified".into(),
        Classification::Preempted => "OS delay".into(),
    }
}

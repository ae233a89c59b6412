//! The selected stall: where, how long, classification, where its time went, syscall, and the stack.

use super::style::ALERT;
use super::style::DIM;
use super::style::TITLE;
use super::style::WARN;
use crate::model::fmt_duration;
use loopscope_wire::Classification;
use loopscope_wire::FrameOrigin;
use loopscope_wire::StallKind;
use loopscope_wire::state::StallEntry;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::style::Modifier;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::text::Span;
use ratatui::widgets::Block;
use ratatui::widgets::Borders;
use ratatui::widgets::Paragraph;
use ratatui::widgets::Wrap;
use std::time::Duration;

pub(super) fn draw_stall_detail(f: &mut Frame<'_>, area: Rect, e: &StallEntry, now: u64) {
    let ev = &e.latest;
    let block = Block::new().borders(Borders::TOP).title(Span::styled(format!(" Stall {} ", ev.stall_id), TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let label = |s: &'static str| Span::styled(format!("{s:<16}"), DIM);
    let loc = ev.location.as_ref().map_or_else(|| "unknown".to_string(), crate::model::short_location);
    let duration = if e.ended {
        Span::raw(format!("{} (ended)", fmt_duration(ev.elapsed)))
    } else {
        let started = ev.at_unix_nanos.saturating_sub(u64::try_from(ev.elapsed.as_nanos()).unwrap_or(u64::MAX));
        let live = Duration::from_nanos(now.saturating_sub(started)).max(ev.elapsed);
        Span::styled(format!("{} and still running", fmt_duration(live)), ALERT)
    };
    let worker = match (ev.kind, ev.worker) {
        (StallKind::BlockInPlace, _) => "block_in_place (the worker's queue moved to another thread)".to_string(),
        (StallKind::BlockOn, Some(w)) => format!("the block_on body, on worker {w}"),
        (StallKind::BlockOn, None) => "the block_on body (its thread is not a worker)".to_string(),
        (_, Some(w)) => format!("worker {w} blocked"),
        // tid 0: the source does not know the thread (console mode), not that it is no worker.
        (_, None) if ev.thread.tid == 0 => "a worker thread (which one is unknown)".to_string(),
        (_, None) => "a thread that is not a worker".to_string(),
    };
    let thread = if ev.thread.tid == 0 {
        "tid unknown".to_string()
    } else {
        format!("tid {}{}", ev.thread.tid, ev.thread.name.as_ref().map_or(String::new(), |n| format!(" ({n})")))
    };
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
    // Long lines (a classification with its reason, a generic frame) wrap rather than run off the edge.
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

//! The widgets: pure functions of (state, view, status, area) that draw into a ratatui frame.
//!
//! Nothing here reads the clock, the network or the terminal: the caller passes `now` in [`Status`], so a
//! recording renders the same way every time (which is what the snapshot tests rely on).

mod footer;
mod header;
mod help;
mod histograms;
mod overview;
mod queues;
mod stall_detail;
mod stall_list;
mod stalls;
mod status;
mod style;
mod tabs;
mod task_detail;
mod tasks;
mod workers;

use self::footer::draw_footer;
use self::header::draw_header;
use self::help::draw_help;
use self::histograms::draw_histograms;
use self::overview::draw_overview;
use self::stalls::draw_stalls;
pub use self::status::{Connection, DEFAULT_RATE_WINDOW, ReplayPosition, Status};
use self::tabs::draw_tabs;
use self::tasks::draw_tasks;
use crate::view::Drawn;
use crate::view::Screen;
use crate::view::TaskTable;
use crate::view::ViewState;
use loopscope_wire::state::State;
use ratatui::Frame;
use ratatui::layout::Alignment;
use ratatui::layout::Constraint;
use ratatui::layout::Layout;
use ratatui::layout::Rect;
use ratatui::widgets::Paragraph;
use ratatui::widgets::Wrap;

/// Draws the whole dashboard. Returns what it drew (each list's rows and selected item, where the tabs
/// are), for [`ViewState::clamp`] and the mouse.
pub fn draw(f: &mut Frame<'_>, state: &State, view: &ViewState, status: &Status) -> Drawn {
    let area = f.area();
    let [tabs, header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(2), Constraint::Min(3), Constraint::Length(1)])
            .areas(area);
    let mut drawn = Drawn { screen_tabs: draw_tabs(f, tabs, state, view, status), ..Drawn::default() };
    draw_header(f, header, state, status);
    if !state.is_ready() && state.workers().next().is_none() {
        draw_waiting(f, body, status);
    } else {
        match view.screen {
            Screen::Overview => drawn.workers = Some(draw_overview(f, body, state, view, status)),
            Screen::Tasks => {
                let shown = draw_tasks(f, body, state, view, status);
                drawn.table_tabs = tasks::table_tab_rects(body);
                match view.task_table {
                    TaskTable::ByTask => drawn.tasks = Some(shown),
                    TaskTable::ByLocation => drawn.locations = Some(shown),
                }
            }
            Screen::Stalls => drawn.stalls = Some(draw_stalls(f, body, state, view, status)),
            Screen::Histograms => draw_histograms(f, body, state),
        }
    }
    draw_footer(f, footer, view, status);
    if view.help {
        draw_help(f, area, view);
    }
    drawn
}

fn draw_waiting(f: &mut Frame<'_>, area: Rect, status: &Status) {
    let msg = match &status.connection {
        Connection::Disconnected(why) => format!("Not connected to {}: {why}\nRetrying…", status.source),
        Connection::Waiting(what) => format!("{what}\nIt appears here when the app starts; q quits."),
        _ => format!("Waiting for the first data from {}…", status.source),
    };
    f.render_widget(Paragraph::new(msg).alignment(Alignment::Center).wrap(Wrap { trim: true }), area);
}

//! What the stream keeps between ticks and shares with the server's threads: stream ids of spawn locations,
//! what the last tick said about the runtime as a whole, and the agent-side recording until the agent thread
//! takes it. Written by the feed on the agent thread (and by a full state's build, which assigns ids too),
//! read by full states on the server's threads.

use crate::shared::tables::{LocationTable, NONE, OTHER_LOCATION};
use loopscope_wire::Location;
use loopscope_wire::proto::{GlobalSample, LocationInfo, WaitTimes, WorkerSample};
use loopscope_wire::record::Recorder;
use std::collections::HashMap;
use std::sync::Mutex;

/// Stream ids of spawn locations. One `Location` value can have several table indexes (one per codegen
/// unit), so ids are assigned per value; the stream never shows the same line twice.
#[derive(Debug, Default)]
pub(crate) struct LocationIds {
    by_value: HashMap<Location, u32>,
    by_index: HashMap<u32, u32>,
    /// Every location with an id, in id order.
    pub(crate) infos: Vec<LocationInfo>,
}

impl LocationIds {
    /// The stream id for a location-table index, assigning one on first sight.
    pub(crate) fn id(&mut self, locations: &LocationTable, index: u32) -> u32 {
        if let Some(id) = self.by_index.get(&index) {
            return *id;
        }
        let location = match index {
            OTHER_LOCATION => Location::new("<other locations: location table full>", 0, 0),
            NONE => Location::new("<unknown>", 0, 0),
            i => locations.get(i).map_or_else(|| Location::new("<unknown>", 0, 0), Location::from_std),
        };
        let id = match self.by_value.get(&location) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.infos.len()).unwrap_or(u32::MAX);
                self.by_value.insert(location.clone(), id);
                self.infos.push(LocationInfo { id, location });
                id
            }
        };
        self.by_index.insert(index, id);
        id
    }
}

/// What the last tick said about the runtime as a whole; a full state repeats it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latest {
    pub(crate) seq: u64,
    pub(crate) workers: Vec<WorkerSample>,
    pub(crate) global: GlobalSample,
    pub(crate) waits: WaitTimes,
}

/// The state the feed shares with the server's full-state builder.
#[derive(Debug, Default)]
pub(crate) struct FeedShared {
    pub(crate) ids: Mutex<LocationIds>,
    pub(crate) latest: Mutex<Latest>,
}

/// The agent-side recording (`LOOPSCOPE_RECORD`).
pub(crate) type FileRecorder = Recorder<std::io::BufWriter<std::fs::File>>;

//! Stack frames: where a frame's code comes from, and the symbolized frame itself.

/// Where a stack frame's code comes from; used to put the user's own frames first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FrameOrigin {
    /// The application's own code.
    User,
    /// The async runtime and its ecosystem (tokio, futures, mio, loopscope).
    Runtime,
    /// The standard library, libc, the unwinder.
    Std,
    /// The sampling signal's own frames.
    Probe,
    /// Not symbolized.
    Unknown,
}

/// One symbolized stack frame: what the symbolizer (`loopscope-probes`) makes of an instruction pointer, and
/// what a stall report (`loopscope-wire`) carries. An instruction pointer inside inlined code yields several
/// frames with the same `ip`: the inlined callees first (`inlined == true`), the function that contains the
/// code last.
///
/// One type for both, so the agent never copies frames field by field. The last two fields are the
/// symbolizer's own and are **not part of the stream**: with the `serde` feature they are skipped (neither
/// written nor read), so a frame encodes to exactly the bytes the five stream fields always did (postcard
/// writes fields in order, with no names), recordings and older peers read it unchanged, and a decoded frame
/// has `inlined: false, object: None`. The agent clears them when it puts a frame into a stall event, so that
/// its own events (`Agent::stalls`) equal what its clients decode.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Frame {
    /// The instruction pointer.
    pub ip: u64,
    /// Demangled function name without the hash suffix (`tokio::runtime::task::harness::poll`).
    pub function: Option<String>,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// Whose code this is.
    pub origin: FrameOrigin,
    /// This frame was inlined into the next frame (same `ip`). Symbolizer only: not sent on the stream.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub inlined: bool,
    /// The shared object (or executable) containing `ip`, as the dynamic loader knows it. Symbolizer only:
    /// not sent on the stream.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub object: Option<String>,
}

impl Frame {
    /// `function` or, without symbols, the address in hex.
    pub fn display_name(&self) -> String {
        match &self.function {
            Some(f) => f.clone(),
            None => format!("{:#x}", self.ip),
        }
    }

    /// `function (file:line)`, shortened for one-line displays.
    pub fn display_short(&self) -> String {
        let func = self.function.as_deref().unwrap_or("??");
        match (self.short_file(), self.line) {
            (Some(short), Some(line)) => format!("{func} ({short}:{line})"),
            _ => func.to_string(),
        }
    }

    /// The last two parts of the source file's path, as one-line displays show it.
    ///
    /// ```
    /// use loopscope_types::{Frame, FrameOrigin};
    /// let f = Frame {
    ///     ip: 0x1000,
    ///     function: Some("app::main".into()),
    ///     file: Some("/home/me/app/src/main.rs".into()),
    ///     line: Some(7),
    ///     origin: FrameOrigin::User,
    ///     inlined: false,
    ///     object: None,
    /// };
    /// assert_eq!(f.short_file().as_deref(), Some("src/main.rs"));
    /// assert_eq!(f.display_short(), "app::main (src/main.rs:7)");
    /// ```
    pub fn short_file(&self) -> Option<String> {
        let file = self.file.as_deref()?;
        let mut parts: Vec<&str> = file.rsplit('/').take(2).collect();
        parts.reverse();
        Some(parts.join("/"))
    }
}

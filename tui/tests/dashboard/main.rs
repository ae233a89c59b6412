//! Integration tests of the `loopscope` tool, in one test binary (fewer binaries to link): the screens
//! (snapshots from a recorded fixture) and the real binary (errors, and the dashboard in a pseudo-terminal).

mod cli;
mod screens;

/// The recording of the real demo app that the screen tests and the CLI tests read.
fn fixture() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo.lsrec")
}

//! Names in every build users ship: a fixture (`build_matrix/fixture_main.rs`, depending only on this crate)
//! is built with each common setting for debug info, split debug info, stripping and PIE, and must name the
//! culprit of a sleeping, a spinning and a mutex-waiting handler with its full path.
//!
//! The fixture's dependencies are built once (in `CARGO_TARGET_TMPDIR`, kept between runs); each setting is a
//! per-package profile override of the fixture crate alone, so a setting costs one small compile and a link.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::{Path, PathBuf};
use std::process::Command;

const HANDLERS: [&str; 3] = ["sleeping_handler", "spinning_handler", "mutex_waiting_handler"];

/// One build setting: its name and the `--config` values (or `cargo rustc` flags) that make it.
struct Setting {
    name: &'static str,
    config: &'static [&'static str],
    /// Extra flags for the fixture crate's own compile (`cargo rustc -- ...`).
    rustc: &'static [&'static str],
    /// Whether file:line is expected for the culprit.
    lines: bool,
    /// Whether function names are expected (false: stripped of its symbol table).
    names: bool,
}

const SETTINGS: &[Setting] = &[
    Setting { name: "debug", config: &[], rustc: &[], lines: true, names: true },
    Setting { name: "release, debug = 0", config: &["debug=0"], rustc: &[], lines: false, names: true },
    Setting {
        name: "release, line-tables-only",
        config: &["debug=\"line-tables-only\""],
        rustc: &[],
        lines: true,
        names: true,
    },
    Setting {
        name: "release, debug = \"limited\"",
        config: &["debug=\"limited\""],
        rustc: &[],
        lines: true,
        names: true,
    },
    Setting { name: "release, debug = \"full\"", config: &["debug=\"full\""], rustc: &[], lines: true, names: true },
    Setting {
        name: "release, full, split-debuginfo = \"packed\"",
        config: &["debug=\"full\"", "split-debuginfo=\"packed\""],
        rustc: &[],
        // Split debug info isn't read (a hint says so); the names come from the symbol table.
        lines: false,
        names: true,
    },
    Setting {
        name: "release, full, split-debuginfo = \"unpacked\"",
        config: &["debug=\"full\"", "split-debuginfo=\"unpacked\""],
        rustc: &[],
        // Split debug info isn't read (a hint says so); the names come from the symbol table.
        lines: false,
        names: true,
    },
    Setting { name: "release, strip = true", config: &["strip=true"], rustc: &[], lines: false, names: false },
    Setting {
        name: "release, line-tables-only, not PIE",
        config: &["debug=\"line-tables-only\""],
        rustc: &["-C", "relocation-model=static"],
        lines: true,
        names: true,
    },
];

/// Writes the fixture crate (once; unchanged files are left alone so builds stay incremental).
fn fixture_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("build-matrix");
    let probes = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"culprit_fixture\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n[dependencies]\nloopscope-probes = {{ path = {:?} }}\n",
        probes.display().to_string()
    );
    let write = |path: PathBuf, text: &str| {
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            std::fs::write(path, text).unwrap();
        }
    };
    write(dir.join("Cargo.toml"), &manifest);
    write(dir.join("src/main.rs"), include_str!("build_matrix/fixture_main.rs"));
    // The workspace's lock file: the same dependency versions, already downloaded, so `--offline` works.
    let lock = std::fs::read_to_string(probes.join("../Cargo.lock")).unwrap();
    write(dir.join("Cargo.lock"), &lock);
    dir
}

/// Builds the fixture with `setting` and runs it; returns its output.
fn build_and_run(dir: &Path, setting: &Setting) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = setting.name != "debug";
    let mut cmd = Command::new(&cargo);
    cmd.arg(if setting.rustc.is_empty() { "build" } else { "rustc" });
    cmd.args(["--quiet", "--offline", "--bin", "culprit_fixture"]);
    if release {
        cmd.arg("--release");
    }
    let profile = if release { "release" } else { "dev" };
    for c in setting.config {
        cmd.args(["--config", &format!("profile.{profile}.package.culprit_fixture.{c}")]);
    }
    if !setting.rustc.is_empty() {
        cmd.arg("--").args(setting.rustc);
    }
    // The fixture builds on its own settings, not the caller's (a RUSTFLAGS variable would rebuild every
    // dependency per setting).
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    let out = cmd.current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{}: build failed:\n{}", setting.name, String::from_utf8_lossy(&out.stderr));
    let binary = dir.join("target").join(if release { "release" } else { "debug" }).join("culprit_fixture");
    let run = Command::new(&binary).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{}: the fixture failed:\n{text}\n{}",
        setting.name,
        String::from_utf8_lossy(&run.stderr)
    );
    text
}

/// Whether the executable is a PIE (`ET_DYN`), from its ELF header.
fn is_pie(binary: &Path) -> bool {
    let header = std::fs::read(binary).unwrap();
    u16::from_le_bytes([header[16], header[17]]) == 3
}

#[test]
fn culprits_are_named_in_every_build_setting() {
    let dir = fixture_dir();
    let mut failures = Vec::new();
    for setting in SETTINGS {
        let started = std::time::Instant::now();
        let text = build_and_run(&dir, setting);
        eprintln!("--- {} ({:?})\n{text}", setting.name, started.elapsed());
        let hints: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("HINT ")).collect();
        for handler in HANDLERS {
            let line = text.lines().find(|l| l.starts_with(&format!("CULPRIT {handler} "))).unwrap_or("");
            let fields: Vec<&str> = line.split(' ').collect();
            let (function, file) = (fields.get(2).copied().unwrap_or("-"), fields.get(3).copied().unwrap_or("-"));
            let expected = format!("culprit_fixture::handlers::{handler}");
            if setting.names && function != expected {
                failures.push(format!("{}: {handler}: culprit {function:?}, expected {expected}", setting.name));
            }
            if setting.lines && !file.ends_with("main.rs") {
                failures.push(format!("{}: {handler}: no file:line ({line})", setting.name));
            }
        }
        if !setting.lines
            && !hints.iter().any(|h| ["line-tables-only", "strip", "split-debuginfo"].iter().any(|w| h.contains(w)))
        {
            failures.push(format!("{}: no hint about how to get file:line: {hints:?}", setting.name));
        }
        if !setting.names && !hints.iter().any(|h| h.contains("strip")) {
            failures.push(format!("{}: no hint about the stripped symbols: {hints:?}", setting.name));
        }
        if setting.rustc.contains(&"relocation-model=static") {
            let binary = dir.join("target/release/culprit_fixture");
            assert!(!is_pie(&binary), "{}: the fixture was built as a PIE", setting.name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

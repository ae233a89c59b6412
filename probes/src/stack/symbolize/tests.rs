//! `symbolize.rs`'s tests, in a file of their own to keep that one short.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn origins() {
    use FrameOrigin::*;
    type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, FrameOrigin);
    let cases: &[Case<'_>] = &[
        (Some("std::thread::sleep"), Some("/rustc/abc/library/std/src/thread/mod.rs"), None, Std),
        (Some("<alloc::vec::Vec<T> as core::ops::Drop>::drop"), None, None, Std),
        (Some("core::ops::function::FnOnce::call_once"), None, None, Std),
        (
            Some("<F as core::future::future::Future>::poll"),
            Some("/rustc/x/library/core/src/future/future.rs"),
            None,
            Std,
        ),
        (
            Some("tokio::runtime::task::harness::poll"),
            Some("/root/.cargo/registry/src/idx/tokio-1.54.1/src/x.rs"),
            None,
            Runtime,
        ),
        (Some("<tokio::time::Sleep as core::future::Future>::poll"), None, None, Runtime),
        (
            Some("parking_lot::raw_mutex::RawMutex::lock_slow"),
            Some("/home/u/.cargo/registry/src/i/parking_lot-0.12.5/src/raw_mutex.rs"),
            None,
            Runtime,
        ),
        (Some("loopscope::agent::watchdog"), Some("/work/main/agent/src/x.rs"), None, Runtime),
        (Some("loopscope_probes::stack::imp::handler"), None, None, Probe),
        (Some("__restore_rt"), None, Some("/lib/x86_64-linux-gnu/libc.so.6"), Probe),
        (Some("clock_nanosleep"), None, Some("/lib/x86_64-linux-gnu/libc.so.6"), Std),
        (Some("__GI___clock_nanosleep"), None, None, Std),
        (Some("myapp::handlers::checkout"), Some("/src/myapp/src/handlers.rs"), None, User),
        (Some("myapp::handlers::checkout"), Some("src/handlers.rs"), None, User),
        // Without a path, a crate nothing is known about is not taken for the application's.
        (Some("<myapp::Foo as core::fmt::Debug>::fmt"), None, None, Runtime),
        (Some("parking_lot::raw_mutex::RawMutex::lock_slow"), None, None, Runtime),
        (
            Some("serde_json::de::from_str"),
            Some("/usr/local/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde_json-1.0.1/src/de.rs"),
            None,
            Runtime,
        ),
        (Some("dep::f"), Some("/root/.cargo/git/checkouts/dep-0123/abcdef0/src/lib.rs"), None, Runtime),
        (Some("hash_spin"), Some("/root/.rustup/toolchains/x/lib/rustlib/src/rust/library/core/src/x.rs"), None, Std),
        (None, Some("/src/app/main.rs"), None, User),
        (None, None, Some("/usr/lib/libfoo.so"), Unknown),
        (None, None, None, Unknown),
    ];
    for (function, file, object, expected) in cases {
        assert_eq!(origin_of(*function, *file, *object), *expected, "{function:?} {file:?} {object:?}");
    }
}

#[test]
fn origins_learn_the_apps_crates() {
    use FrameOrigin::*;
    let mut crates = Crates { exe: Some(crate_from_file_name("mini-redis-server")), ..Crates::default() };
    // The binary's crate, and a library of the same package, are the app's even without a path.
    assert_eq!(crates.origin(Some("mini_redis_server::main"), None, None), User);
    assert_eq!(crates.origin(Some("mini_redis::cmd::get::Get::apply (async fn)"), None, None), User);
    assert_eq!(crates.origin(Some("<myapp::Foo as core::fmt::Debug>::fmt"), None, None), Runtime);
    // Seen once with a workspace path: the app's from then on, even in frames without one.
    assert_eq!(crates.origin(Some("myapp::Foo::new"), Some("/work/myapp/src/foo.rs"), None), User);
    assert_eq!(crates.origin(Some("<myapp::Foo as core::fmt::Debug>::fmt"), None, None), User);
    // Seen with a registry path: never the app's.
    let registry = "/root/.cargo/registry/src/index.crates.io-x/parking_lot-0.12.5/src/raw_mutex.rs";
    assert_eq!(crates.origin(Some("parking_lot::raw_mutex::RawMutex::lock_slow"), Some(registry), None), Runtime);
    assert_eq!(crates.origin(Some("parking_lot::Mutex::lock"), None, None), Runtime);
    assert!(crates.dependencies.contains("parking_lot"));
    assert_eq!(crate_from_file_name("culprits-0123456789abcdef"), "culprits");
    assert_eq!(crate_from_file_name("my-app"), "my_app");
}

fn frame(name: &str, origin: FrameOrigin) -> Frame {
    Frame { ip: 0, function: Some(name.into()), file: None, line: None, origin, inlined: false, object: None }
}

#[test]
fn views() {
    use FrameOrigin::*;
    let frames = [
        frame("h", Probe),
        frame("t", Probe),
        frame("libc_read", Std),
        frame("std::io::read", Std),
        frame("app::inner", User),
        frame("app::outer", User),
        frame("tokio::a", Runtime),
        frame("tokio::b", Runtime),
        frame("std::rt", Std),
    ];
    assert_eq!(without_probe_frames(&frames).len(), 7);
    assert_eq!(first_user_frame(&frames).unwrap().display_name(), "app::inner");
    let names: Vec<String> = collapsed(&frames).iter().map(|f| f.display_name()).collect();
    assert_eq!(names, ["libc_read", "app::inner", "app::outer", "tokio::a", "std::rt"]);
    assert_eq!(folded(&frames), "std::rt;tokio::b;tokio::a;app::outer;app::inner;std::io::read;libc_read");
    assert!(first_user_frame(&frames[..4]).is_none());
    assert!(collapsed(&[]).is_empty());
}

/// End to end, in the build users run: a release build with `debug = "line-tables-only"`, whose DWARF
/// names inlined functions without any path (`hash_spin`). A tiny fixture crate (no dependencies, about
/// 5 s to build here) prints the address of an instruction inside `my_app::db::load::hash_spin`, inlined
/// into a closure of `main`; the function also has an out-of-line copy (taken as a function pointer), whose
/// concrete DWARF entry shares the inlined one's abstract origin, and whose symbol gives the full path.
#[test]
#[cfg(target_arch = "x86_64")]
fn inlined_frames_are_qualified_in_a_release_build_with_line_tables() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("loopscope-fixture-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"my_app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n\
         [profile.release]\ndebug = \"line-tables-only\"\ncodegen-units = 1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        "mod db;\nfn main() {\n    let f = |x: u64| db::load::hash_spin(x) ^ 3;\n    \
         let v: Vec<u64> = std::env::args().skip(1).map(|a| a.len() as u64).collect();\n    \
         let total: u64 = v.iter().map(|&x| f(x)).sum();\n    \
         let g: fn(u64) -> u64 = std::hint::black_box(db::load::hash_spin);\n    \
         println!(\"main {:#x} {} {}\", main as *const () as usize, total, g(total));\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/db.rs"),
        "pub mod load {\n    #[inline(always)]\n    pub fn hash_spin(x: u64) -> u64 {\n        let ip: usize;\n        \
         // SAFETY: reads the instruction pointer into a register; no memory access.\n        \
         unsafe { std::arch::asm!(\"lea {}, [rip]\", out(reg) ip) };\n        \
         println!(\"ip {ip:#x}\");\n        let mut h = x;\n        \
         for i in 0..std::hint::black_box(100u64) { h = h.wrapping_mul(31).wrapping_add(i); }\n        h\n    }\n}\n",
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--offline"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success());
    let binary = dir.join("target/release/my_app");
    let out = Command::new(&binary).arg("abc").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = |prefix: &str| {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
        let word = line.split_whitespace().nth(1).unwrap();
        u64::from_str_radix(word.trim_start_matches("0x"), 16).unwrap()
    };
    // The first `ip` line comes from the inlined copy (the closure runs before `g`).
    let (ip, main) = (hex("ip "), hex("main "));
    let mut debug = super::super::debuginfo::ObjectDebug::open(&binary).unwrap();
    assert!(debug.has_lines);
    // The load bias, from `main`'s symbol: runtime address - file address.
    let main_svma = {
        use object::{Object, ObjectSymbol};
        let data = std::fs::read(&binary).unwrap();
        let file = object::File::parse(&*data).unwrap();
        file.symbols().find(|s| s.name().is_ok_and(|n| names::demangle(n) == "my_app::main")).unwrap().address()
    };
    let svma = ip - (main - main_svma);
    let frames = build_frames(ip as usize, &debug.resolve(svma), Some("my_app"));
    let names: Vec<String> = frames.iter().map(|f| f.display_name()).collect();
    let spin = frames.iter().find(|f| f.function.as_deref().is_some_and(|n| n.ends_with("hash_spin")));
    let spin = spin.unwrap_or_else(|| panic!("{names:#?}"));
    assert_eq!(spin.function.as_deref(), Some("my_app::db::load::hash_spin"), "{names:#?}");
    assert!(spin.inlined, "{names:#?}");
    assert!(spin.file.as_deref().is_some_and(|f| f.ends_with("db.rs")), "{frames:#?}");
    // The physical function is named from the symbol table, whatever DWARF calls it.
    assert!(frames.last().and_then(|f| f.function.as_deref()).is_some_and(|n| n.starts_with("my_app::")), "{names:#?}");
    eprintln!("{names:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[inline(never)]
fn marker_function() -> usize {
    std::hint::black_box(marker_function as *const () as usize)
}

#[test]
fn symbolizes_and_caches() {
    let ip = marker_function();
    let raw = RawStack {
        tid: 1,
        ips: vec![ip, ip + 1],
        probe_frames: 0,
        truncated: false,
        incomplete: false,
        unwinder: super::super::Unwinder::Dwarf,
        stack_pointer: 0,
        latency: Default::default(),
        method: super::super::CaptureMethod::Signal,
    };
    let mut s = Symbolizer::with_capacity(4);
    let frames = s.symbolize(&raw);
    let name = frames[0].function.clone().unwrap();
    assert!(name.ends_with("marker_function"), "{name}");
    assert!(!name.contains("::h"), "hash suffix must be stripped: {name}");
    assert!(frames[0].file.as_deref().unwrap().ends_with("symbolize/tests.rs"));
    assert!(frames[0].line.is_some());
    let (_, misses) = s.stats();
    s.symbolize(&raw);
    let (hits, misses_after) = s.stats();
    assert_eq!(misses, misses_after, "second pass is served from the cache");
    assert!(hits >= 2);
    // Bounded: many distinct addresses never grow the cache beyond its capacity.
    for i in 0..20 {
        s.lookup(ip + i, true);
    }
    assert!(s.cached() <= 4, "{}", s.cached());
}

#[test]
fn probe_frames_are_marked() {
    let ip = marker_function();
    let raw = RawStack {
        tid: 1,
        ips: vec![ip, ip],
        probe_frames: 1,
        truncated: false,
        incomplete: false,
        unwinder: super::super::Unwinder::Dwarf,
        stack_pointer: 0,
        latency: Default::default(),
        method: super::super::CaptureMethod::Signal,
    };
    let frames = Symbolizer::new().symbolize(&raw);
    assert_eq!(frames.first().unwrap().origin, FrameOrigin::Probe);
    assert_ne!(frames.last().unwrap().origin, FrameOrigin::Probe);
}

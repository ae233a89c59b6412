//! CI mode: `#[loopscope::test]` and the `Check` function form, on real runtimes with real blocking.

use crate::support::ms;
use loopscope::check::Check;

#[inline(never)]
fn blocking_sleep_handler() {
    std::thread::sleep(ms(100));
}

#[loopscope::test(max_poll = "30ms")]
async fn clean_code_passes() {
    for _ in 0..100 {
        tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
    }
}

#[loopscope::test(max_poll = "30ms", flavor = "multi_thread", worker_threads = 2)]
async fn clean_code_passes_on_multi_thread() -> Result<(), String> {
    let n = tokio::spawn(async { 21 * 2 }).await.map_err(|e| e.to_string())?;
    assert_eq!(n, 42);
    Ok(())
}

#[loopscope::test(max_poll = "30ms")]
#[should_panic(expected = "1 poll held a worker thread longer than max_poll = 30ms")]
async fn a_sleeping_handler_fails_the_test() {
    tokio::spawn(async { blocking_sleep_handler() }).await.unwrap();
}

#[loopscope::test(max_poll = "30ms")]
#[should_panic(expected = "spawned at tests/integration/check.rs")]
async fn the_failure_names_the_spawn_location() {
    tokio::spawn(async { blocking_sleep_handler() }).await.unwrap();
}

#[inline(never)]
fn cpu_spinning_handler() -> u64 {
    // 100 ms of its own CPU time, however busy the machine: a spin timed by the wall clock gets little CPU on
    // a crowded machine, and its own time can then rightly stay under the limit.
    let me = loopscope_probes::current_tid();
    let start = loopscope_probes::thread::cpu_time(me).unwrap();
    let mut x = 0u64;
    while loopscope_probes::thread::cpu_time(me).unwrap() - start < ms(100) {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
    x
}

#[loopscope::test(max_poll = "30ms", flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "blocking_sleep_handler")]
async fn the_failure_names_the_sleeping_function() {
    tokio::spawn(async { blocking_sleep_handler() }).await.unwrap();
}

#[loopscope::test(max_poll = "30ms", flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "cpu_spinning_handler")]
async fn the_failure_names_the_spinning_function() {
    tokio::spawn(async { cpu_spinning_handler() }).await.unwrap();
}

#[loopscope::test(max_poll = "30ms", allow_spawn = ["tests/integration/check.rs"])]
async fn the_allow_list_exempts_a_location() {
    tokio::spawn(async { blocking_sleep_handler() }).await.unwrap();
}

#[loopscope::test(max_poll = "30ms", max_stalls = 1)]
async fn a_limit_tolerates_some_stalls() {
    tokio::spawn(async { blocking_sleep_handler() }).await.unwrap();
}

#[loopscope::test(max_poll = "30ms")]
#[should_panic(expected = "the body's own panic")]
async fn a_panicking_body_is_reported_as_itself() {
    panic!("the body's own panic");
}

#[loopscope::test(max_poll = "30ms")]
#[should_panic(expected = "held a worker thread")]
async fn the_test_body_itself_is_checked() {
    // The body runs as a task, so blocking in it directly is caught too.
    blocking_sleep_handler();
}

#[test]
fn function_form_reports_and_iterates() {
    let report = Check::new().max_poll(ms(30)).run_multi_thread(2, async {
        tokio::spawn(async { blocking_sleep_handler() }).await.unwrap();
        tokio::spawn(async { blocking_sleep_handler() }).await.unwrap();
    });
    assert!(!report.passed());
    assert_eq!(report.violations(), 2, "{report}");
    for stall in report.stalls() {
        assert!(stall.elapsed >= ms(100), "{stall:?}");
        assert!(stall.location.as_ref().is_some_and(|l| l.file.ends_with("check.rs")));
    }
    let text = report.to_string();
    assert!(text.contains("2 polls held a worker thread"), "{text}");
    let clean = Check::new().max_poll(ms(30)).run_current_thread(async { tokio::task::yield_now().await });
    assert!(clean.passed());
    clean.assert_no_stalls();
}

#[test]
fn custom_runtime_with_install() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let guard = Check::new().max_poll(ms(30)).install(&mut b).unwrap();
    let rt = b.build().unwrap();
    rt.block_on(async { tokio::spawn(async { blocking_sleep_handler() }).await.unwrap() });
    drop(rt);
    let report = guard.finish();
    assert_eq!(report.violations(), 1, "{report}");
}

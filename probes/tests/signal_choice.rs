//! The sampler never replaces a signal handler the application installed. This binary installs its own handler
//! on the first candidate signal before the sampler is installed, so it has its own test file (one process).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use loopscope_probes::ProbeError;
use loopscope_probes::stack::{SamplerConfig, StackSampler};

static APP_HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn app_handler(_: libc::c_int) {
    APP_HANDLER_CALLS.fetch_add(1, Ordering::SeqCst);
}

fn handler_of(signal: i32) -> libc::sighandler_t {
    // SAFETY: querying a disposition into a zeroed struct.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut current), 0);
        current.sa_sigaction
    }
}

#[test]
fn never_overwrites_an_application_handler() {
    let taken = libc::SIGRTMIN() + 4; // the sampler's first candidate
    let ignored = taken + 1; // an ignored signal is taken too
    let entry: extern "C" fn(libc::c_int) = app_handler;
    // SAFETY: installing a trivial, async-signal-safe handler and SIG_IGN.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = entry as libc::sighandler_t;
        assert_eq!(libc::sigaction(taken, &act, std::ptr::null_mut()), 0);
        act.sa_sigaction = libc::SIG_IGN;
        assert_eq!(libc::sigaction(ignored, &act, std::ptr::null_mut()), 0);
    }

    // Explicitly asking for the taken signal is refused, and changes nothing.
    let err = StackSampler::install(SamplerConfig { signal: Some(taken), ..SamplerConfig::default() }).unwrap_err();
    assert!(matches!(err, ProbeError::SignalInUse { signal } if signal == taken), "{err:?}");
    assert!(err.to_string().contains("refusing"), "{err}");
    assert_eq!(handler_of(taken), entry as libc::sighandler_t);

    // Classic signals are refused outright.
    let err =
        StackSampler::install(SamplerConfig { signal: Some(libc::SIGPROF), ..SamplerConfig::default() }).unwrap_err();
    assert!(matches!(err, ProbeError::InvalidSignal { .. }), "{err:?}");

    // Automatic choice skips both.
    let sampler = StackSampler::install(SamplerConfig::default()).unwrap();
    assert!(sampler.signal() > ignored, "{}", sampler.signal());
    assert!(sampler.signal() <= libc::SIGRTMAX());
    assert_eq!(handler_of(taken), entry as libc::sighandler_t);
    assert_eq!(handler_of(ignored), libc::SIG_IGN);

    // The application's handler still works, and our captures do not reach it.
    let tid = loopscope_probes::current_tid();
    sampler.capture(tid, std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(APP_HANDLER_CALLS.load(Ordering::SeqCst), 0);
    // SAFETY: raising a signal whose handler we installed above.
    assert_eq!(unsafe { libc::raise(taken) }, 0);
    assert_eq!(APP_HANDLER_CALLS.load(Ordering::SeqCst), 1);

    // A second install: same sampler; with a conflicting explicit signal: a clear error.
    let again = StackSampler::install(SamplerConfig::default()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&sampler, &again));
    let err = StackSampler::install(SamplerConfig { signal: Some(sampler.signal() + 1), ..SamplerConfig::default() })
        .unwrap_err();
    assert!(matches!(err, ProbeError::AlreadyInstalled { .. }), "{err:?}");
    let err = StackSampler::install(SamplerConfig { max_depth: 500, ..SamplerConfig::default() }).unwrap_err();
    assert!(matches!(err, ProbeError::InvalidConfig(_)), "{err:?}");
}

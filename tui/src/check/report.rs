//! The machine-readable reports of `loopscope check`: `--json` and `--junit`.

use super::summary::{CulpritGroup, Outcome};
use loopscope_wire::Frame;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

/// The JSON report. Its shape (all durations in nanoseconds, plus a readable copy where useful):
///
/// ```json
/// { "passed": false, "exit_code": 1, "max_poll_nanos": 10000000, "command": ["cargo", "test"],
///   "child": { "exit_code": 0, "signal": null, "description": "exited with code 0" },
///   "violations": 3, "unlisted_stalls": 0, "below_limit_stalls": 0, "elapsed_nanos": 1234,
///   "allowed": [ { "by": "--allow-fn \"legacy::load\"", "count": 2 } ],
///   "agents": [ { "pid": 1, "program": "...", "runtime_id": 1, "finished": true, "stall_count": 3, ... } ],
///   "groups": [ { "function": "app::handler", "location": "src/main.rs:10:5", "kind": "worker blocked",
///                 "count": 3, "worst_nanos": 120000000, "worst": "120.0ms", "classifications": ["..."],
///                 "places": ["app (pid 1) ×3"], "stack": [ { "function": "...", "file": "...", "line": 7,
///                 "origin": "User" } ], "stalls": [ { "pid": 1, "program": "...", "ended": true,
///                 "event": { ...the StallEvent... } } ] } ],
///   "notes": ["..."] }
/// ```
pub(crate) fn json(o: &Outcome) -> String {
    let (exit_code, signal) = match o.child {
        super::ChildEnd::Exited(c) => (Some(c), None),
        super::ChildEnd::Signaled { signal, .. } => (None, Some(signal)),
    };
    let agents: Vec<Value> = o
        .agents
        .iter()
        .map(|a| {
            json!({
                "pid": a.info.pid,
                "program": a.info.program,
                "thread": a.info.thread,
                "runtime_id": a.info.runtime_id,
                "runtime_name": a.info.runtime_name,
                "flavor": a.info.flavor,
                "workers": a.info.workers,
                "stall_threshold_nanos": a.info.stall_threshold_nanos,
                "started_at_unix_nanos": a.info.started_at_unix_nanos,
                "finished": a.finished.is_some(),
                "stall_count": a.stall_count(),
                "unlisted_stalls": a.unlisted_stalls(),
                "torn": a.is_torn(),
                "damaged_lines": a.damage.len(),
                "missing": a.info.missing,
                "no_stall_detection": a.info.no_stall_detection,
                "probes": a.info.probes,
            })
        })
        .collect();
    let groups: Vec<Value> = o.groups.iter().map(|g| group_json(o, g)).collect();
    let report = json!({
        "passed": o.passed(),
        "exit_code": o.exit_code(),
        "max_poll_nanos": nanos(o.max_poll),
        "max_poll": format!("{:?}", o.max_poll),
        "command": o.command,
        "child": { "exit_code": exit_code, "signal": signal, "description": o.child.describe() },
        "violations": o.violations(),
        "unlisted_stalls": o.unlisted,
        "below_limit_stalls": o.below_limit,
        "allowed": o.allowed.iter().map(|(by, n)| json!({ "by": by, "count": n })).collect::<Vec<_>>(),
        "count_preemption": o.count_preemption,
        "delayed_by_os": o.delayed_by_os.iter().map(|s| json!({
            "pid": o.agents.get(s.agent).map(|a| a.info.pid),
            "elapsed_nanos": nanos(s.stall.last.elapsed),
            "self_nanos": nanos(s.stall.last.self_time()),
            "event": s.stall.last,
        })).collect::<Vec<_>>(),
        "agent_task_stalls": o.agent_tasks,
        "elapsed_nanos": nanos(o.elapsed),
        "agents": agents,
        "groups": groups,
        "notes": o.notes(),
    });
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

fn group_json(o: &Outcome, g: &CulpritGroup) -> Value {
    let stack = g.stack();
    let frames: Vec<Value> = stack.user.iter().chain(stack.inner.iter().rev()).map(|f| frame_json(f)).collect();
    let stalls: Vec<Value> = g
        .stalls
        .iter()
        .map(|s| {
            let agent = o.agents.get(s.agent);
            json!({
                "pid": agent.map(|a| a.info.pid),
                "program": agent.map(|a| a.info.program.clone()),
                "thread": agent.and_then(|a| a.info.thread.clone()),
                "ended": s.stall.ended,
                "elapsed_nanos": nanos(s.stall.last.elapsed),
                "event": s.stall.last,
            })
        })
        .collect();
    json!({
        "title": g.title(),
        "function": g.function,
        "location": g.location.as_ref().map(ToString::to_string),
        "kind": g.kind.to_string(),
        "count": g.count(),
        "worst_nanos": nanos(g.worst().elapsed),
        "worst": format!("{:.1?}", g.worst().elapsed),
        "classifications": g.classifications(),
        "places": o.group_places(g),
        "stack": frames,
        "stack_missing": stack.missing,
        "stalls": stalls,
    })
}

fn frame_json(f: &Frame) -> Value {
    json!({ "function": f.function, "file": f.file, "line": f.line, "origin": f.origin })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The JUnit XML report: one `<testsuite>` with a failing `<testcase>` per culprit group; a passing case
/// when nothing blocked; an `<error>` case when the command crashed or nothing reported.
pub(crate) fn junit(o: &Outcome) -> String {
    let mut cases = String::new();
    let mut tests = 0;
    let mut failures = 0;
    let mut errors = 0;
    for g in &o.groups {
        tests += 1;
        failures += 1;
        let message = format!(
            "{} stall{} longer than {:?}, worst {:.1?}: {}",
            g.count(),
            if g.count() == 1 { "" } else { "s" },
            o.max_poll,
            g.worst().elapsed,
            g.classifications().join("; ")
        );
        let mut body = String::new();
        let _ = writeln!(
            body,
            "task spawned at {}",
            g.location.as_ref().map_or("an unknown location".into(), ToString::to_string)
        );
        let _ = writeln!(body, "in {}", o.group_places(g).join(", "));
        let stack = g.stack();
        for f in stack.user.iter().chain(stack.inner.iter().rev()) {
            let _ = writeln!(body, "  {}", f.display_short());
        }
        if let Some(why) = &stack.missing {
            let _ = writeln!(body, "(no stack: {why})");
        }
        let _ = writeln!(
            cases,
            "    <testcase classname=\"loopscope.stall\" name=\"{}\" time=\"{}\">\n      \
             <failure type=\"stall\" message=\"{}\">{}</failure>\n    </testcase>",
            escape(&g.title()),
            seconds(g.worst().elapsed),
            escape(&message),
            escape(&body)
        );
    }
    if o.unlisted > 0 {
        tests += 1;
        failures += 1;
        let _ = writeln!(
            cases,
            "    <testcase classname=\"loopscope.stall\" name=\"stalls without details\">\n      \
             <failure type=\"stall\" message=\"{} stall(s) counted without details (rate-limited or dropped)\"/>\n    \
             </testcase>",
            o.unlisted
        );
    }
    let crashed_or_silent = o.child.crashed() || !o.checked_anything();
    if crashed_or_silent {
        tests += 1;
        errors += 1;
        let notes = o.notes().join("\n");
        let _ = writeln!(
            cases,
            "    <testcase classname=\"loopscope.check\" name=\"{}\">\n      \
             <error type=\"{}\" message=\"{}\">{}</error>\n    </testcase>",
            escape(&super::shell_words(&o.command)),
            if o.child.crashed() { "crash" } else { "no agent" },
            escape(&format!("the command {}", o.child.describe())),
            escape(&notes)
        );
    }
    if o.passed() && o.checked_anything() {
        tests += 1;
        let _ = writeln!(
            cases,
            "    <testcase classname=\"loopscope.check\" name=\"no poll held its thread longer than {}\" time=\"{}\"/>",
            escape(&format!("{:?}", o.max_poll)),
            seconds(o.elapsed)
        );
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"loopscope check\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{}\">",
        seconds(o.elapsed)
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"loopscope check\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" \
         skipped=\"0\" time=\"{}\">",
        seconds(o.elapsed)
    );
    let _ = writeln!(xml, "    <properties>");
    for (name, value) in [
        ("max_poll", format!("{:?}", o.max_poll)),
        ("command", super::shell_words(&o.command)),
        ("exit_code", o.exit_code().to_string()),
    ] {
        let _ = writeln!(xml, "      <property name=\"{name}\" value=\"{}\"/>", escape(&value));
    }
    let _ = writeln!(xml, "    </properties>");
    xml.push_str(&cases);
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Escapes text for XML content and attribute values. Characters XML 1.0 cannot hold at all (most control
/// characters) become `?`, so a stray byte in a function name can't make the whole report unreadable.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::summary::tests::{outcome, stall};
    use super::*;
    use crate::check::ChildEnd;

    #[test]
    fn escaping_covers_markup_quotes_and_control_characters() {
        assert_eq!(escape("<a href=\"x\">&'\u{1}"), "&lt;a href=&quot;x&quot;&gt;&amp;&apos;?");
        assert_eq!(escape("fn<T>::{{closure}}\n"), "fn&lt;T&gt;::{{closure}}\n");
    }

    #[test]
    fn json_has_groups_and_the_full_events() {
        let o = outcome(&[(1, vec![stall(1, "src/a.rs", Some("app::spin<T>"), 30)], true)], ChildEnd::Exited(0));
        let v: Value = serde_json::from_str(&json(&o)).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["groups"][0]["function"], "app::spin<T>");
        assert_eq!(v["groups"][0]["count"], 1);
        assert_eq!(v["groups"][0]["worst_nanos"], 30_000_000);
        assert_eq!(v["groups"][0]["stalls"][0]["event"]["stall_id"], 1);
        assert_eq!(v["groups"][0]["stack"][0]["function"], "app::spin<T>");
        assert_eq!(v["agents"][0]["pid"], 1);
    }

    #[test]
    fn junit_escapes_function_names() {
        let o = outcome(&[(1, vec![stall(1, "src/a.rs", Some("app::spin<T>&\"x\""), 30)], true)], ChildEnd::Exited(0));
        let xml = junit(&o);
        assert!(xml.contains("name=\"app::spin&lt;T&gt;&amp;&quot;x&quot;\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
    }
}

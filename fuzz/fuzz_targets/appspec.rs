//! Fuzz target: `hoist_appspec::parse` on any text.
//!
//! Parsing must never panic, whatever the YAML (anchors, aliases, merge keys, tags, deep
//! nesting), and what it accepts must hold the model's promises: version 0.0, os linux,
//! absolute destinations and objects, modes of at most 12 bits, hooks only on events that
//! take them, in lifecycle order, each once, with positive timeouts. A refusal always says
//! why. It does not check messages' wording (the parser's table tests do).

#![no_main]

use hoist_appspec::{parse, LifecycleEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The agent reads an appspec as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(parsed) => {
            let spec = &parsed.spec;
            assert_eq!((spec.version.as_str(), spec.os.as_str()), ("0.0", "linux"));
            for f in &spec.files {
                assert!(f.destination.is_absolute(), "{f:?}");
            }
            for p in &spec.permissions {
                assert!(p.object.is_absolute(), "{p:?}");
                assert!(p.mode.is_none_or(|m| m <= 0o7777), "{p:?}");
            }
            let mut previous: Option<LifecycleEvent> = None;
            for (event, scripts) in &spec.hooks {
                assert!(!event.is_builtin(), "hooks on {event}");
                assert!(previous < Some(*event), "{event} out of order");
                assert!(!scripts.is_empty(), "{event} listed with no scripts");
                for hook in scripts {
                    assert!(hook.timeout_secs > 0, "{hook:?}");
                    assert!(!hook.location.trim().is_empty(), "{hook:?}");
                }
                previous = Some(*event);
            }
        }
        Err(invalid) => assert!(!invalid.errors.is_empty(), "refused without an error"),
    }
});

#![no_main]
//! The SSE relay never panics on arbitrary upstream bytes cut into arbitrary chunks, calls
//! its `on_finish` exactly once, and is transparent when it is not asked to strip the usage
//! event: the client gets the expert's bytes unchanged, plus at most a closing: an error
//! event for a stream cut short, the blank line a last `[DONE]` lacked, or the `[DONE]` of a
//! stream that ended after its finish reason without one.
//!
//! Input: one flags byte, then the upstream bytes. Flags: bit 0 strips usage, bit 1 ends
//! the upstream with an error instead of a clean end, bits 2-7 are the chunk size (0: one
//! chunk).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use triage::dispatch::sse::{Relay, RelayOutcome};
use triage::experts::ExpertError;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else { return };
    let strip = flags & 1 == 1;
    let fail = flags & 2 == 2;
    let size = usize::from(flags >> 2);
    let mut chunks: Vec<Result<Bytes, ExpertError>> = if size == 0 {
        vec![Ok(Bytes::copy_from_slice(body))]
    } else {
        body.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect()
    };
    if fail {
        chunks.push(Err(ExpertError::Stream { expert: "fuzz".into(), detail: "reset".into() }));
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(Mutex::new(None::<RelayOutcome>));
    let (c, o) = (calls.clone(), outcome.clone());
    let relay = Relay::new(futures::stream::iter(chunks).boxed(), strip, move |out| {
        c.fetch_add(1, Ordering::SeqCst);
        *o.lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
    });
    let out: Vec<u8> = futures::executor::block_on(relay.collect::<Vec<_>>())
        .into_iter()
        .flat_map(|r| match r {
            Ok(b) => b.to_vec(),
            Err(never) => match never {},
        })
        .collect();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "on_finish must run exactly once");
    let outcome = outcome.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    assert!(outcome.completed != outcome.error.is_some(), "completed and error disagree: {outcome:?}");
    // After an upstream error the cut event in progress is dropped, so only a clean end
    // promises every byte.
    if !strip && !fail {
        assert!(out.starts_with(body), "the relay changed bytes it should pass through");
        if outcome.completed {
            let added = &out[body.len()..];
            assert!(
                added.is_empty() || added == b"\n\n" || added == b"data: [DONE]\n\n",
                "a complete stream gained more than its closing: {added:?}"
            );
        }
    }
});

#![no_main]
//! The SSE relay never panics on arbitrary upstream bytes split at arbitrary points.
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = usize::from(split).min(rest.len());
    let chunks: Vec<Result<bytes::Bytes, triage::experts::ExpertError>> =
        vec![Ok(bytes::Bytes::copy_from_slice(&rest[..cut])), Ok(bytes::Bytes::copy_from_slice(&rest[cut..]))];
    let relay = triage::dispatch::sse::Relay::new(futures::stream::iter(chunks).boxed(), split % 2 == 0, |_| {});
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(relay.collect::<Vec<_>>());
});

//! Relays an expert's SSE stream to the client event by event, reading the token usage
//! on the way and removing the usage event the gateway asked for on the client's behalf.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::Stream;
use memchr::memmem::{Finder, FinderRev};

use crate::api::error::stream_error_event;
use crate::experts::{ExpertError, Usage};

/// The error code of a stream the expert ended (cleanly) before its `data: [DONE]`: the
/// answer is cut short, and the client must be able to tell.
pub const TRUNCATED: &str = "stream_truncated";

/// How a relayed stream ended; handed to the `on_finish` callback exactly once, also
/// when the client goes away mid-stream (then `completed` is false).
#[derive(Debug, Default, Clone)]
pub struct RelayOutcome {
    pub usage: Option<Usage>,
    pub error: Option<&'static str>,
    pub completed: bool,
    pub first_event_at: Option<Instant>,
    /// `id` and `model` of the first chunk (the same on every chunk of a completion).
    pub response_id: Option<String>,
    pub response_model: Option<String>,
    /// Each choice's non-null `finish_reason`, in the order they arrived.
    pub finish_reasons: Vec<String>,
    /// Events relayed, comments and `[DONE]` not counted. Servers stream about one token
    /// an event, so this is the estimate of the output when no usage arrived (the client
    /// hung up, or the stream broke, before the usage event).
    pub events: u64,
}

type OnFinish = Box<dyn FnOnce(RelayOutcome) + Send>;

pub struct Relay {
    upstream: BoxStream<'static, Result<Bytes, ExpertError>>,
    strip_usage: bool,
    partial: BytesMut,
    outcome: RelayOutcome,
    on_finish: Option<OnFinish>,
    done: bool,
    /// The first data event was read for the response id and model.
    head_seen: bool,
    /// The expert sent `data: [DONE]`, its promise that the answer is complete.
    saw_done: bool,
}

impl Relay {
    pub fn new(
        upstream: BoxStream<'static, Result<Bytes, ExpertError>>,
        strip_usage: bool,
        on_finish: impl FnOnce(RelayOutcome) + Send + 'static,
    ) -> Self {
        Self {
            upstream,
            strip_usage,
            partial: BytesMut::new(),
            outcome: RelayOutcome::default(),
            on_finish: Some(Box::new(on_finish)),
            done: false,
            head_seen: false,
            saw_done: false,
        }
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(f) = self.on_finish.take() {
            f(std::mem::take(&mut self.outcome));
        }
    }

    /// Turns one upstream chunk into the bytes to forward now (possibly none, while an
    /// event is incomplete).
    fn process(&mut self, chunk: Bytes) -> Bytes {
        if self.outcome.first_event_at.is_none() {
            self.outcome.first_event_at = Some(Instant::now());
        }
        // Fast path: whole events with no usage in them pass through without a copy.
        if self.partial.is_empty() && ends_with_event_boundary(&chunk) && !contains_usage(&chunk) {
            let mut rest = &chunk[..];
            while let Some(end) = event_end(rest) {
                self.observe(&rest[..end]);
                rest = &rest[end..];
            }
            // `[DONE]` is the last event, so the chunk's last event is the one to check.
            self.saw_done |= ends_with_done(&chunk);
            return chunk;
        }
        self.partial.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.partial) {
            let event = self.partial.split_to(end).freeze();
            self.observe(&event);
            self.saw_done |= ends_with_done(&event);
            if contains_usage(&event) {
                if let Some(kept) = self.inspect_usage(&event) {
                    out.extend_from_slice(&kept);
                }
            } else {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }

    /// Reads the response id and model from the first event and the finish reasons from
    /// the event that carries them; the other events are only scanned, never parsed.
    fn observe(&mut self, event: &[u8]) {
        if !event.starts_with(b":") && !ends_with_done(event) {
            self.outcome.events += 1;
        }
        let first = !self.head_seen;
        if !first && !has_finish_reason(event) {
            return;
        }
        let Some(data) = data_payload(event) else { return };
        self.head_seen = true;
        let Ok(head) = serde_json::from_str::<ChunkHead>(&data) else { return };
        if first {
            self.outcome.response_id = head.id;
            self.outcome.response_model = head.model;
        }
        let reasons = head.choices.into_iter().filter_map(|c| c.finish_reason);
        self.outcome.finish_reasons.extend(reasons);
    }

    /// Records the usage in `event`; returns the event to forward (None = drop it).
    fn inspect_usage(&mut self, event: &Bytes) -> Option<Bytes> {
        /// What deciding needs; the whole chunk is parsed only to rewrite it.
        #[derive(serde::Deserialize)]
        struct UsageChunk<'a> {
            usage: Option<serde_json::Value>,
            #[serde(borrow)]
            choices: Option<&'a serde_json::value::RawValue>,
        }
        let Some(data) = data_payload(event) else { return Some(event.clone()) };
        // serde would read a struct from an array too (by position): a chunk is an object.
        if !data.trim_start().starts_with('{') {
            return Some(event.clone());
        }
        let Ok(chunk) = serde_json::from_str::<UsageChunk>(&data) else { return Some(event.clone()) };
        let Some(usage) = chunk.usage.filter(|u| !u.is_null()) else { return Some(event.clone()) };
        if let Ok(u) = serde_json::from_value::<Usage>(usage) {
            self.outcome.usage = Some(u);
        }
        if !self.strip_usage {
            return Some(event.clone());
        }
        let no_choices = chunk
            .choices
            .is_none_or(|c| serde_json::from_str::<Vec<serde::de::IgnoredAny>>(c.get()).map_or(true, |v| v.is_empty()));
        if no_choices {
            return None;
        }
        // Some servers put usage on the last content chunk: keep the content, drop the field.
        let mut chunk: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&data).ok()?;
        chunk.remove("usage");
        let json = serde_json::to_string(&chunk).ok()?;
        Some(Bytes::from(format!("data: {json}\n\n")))
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    let mut rest = self.partial.split();
                    self.saw_done |= ends_with_done(&rest);
                    let whole = rest.is_empty() || ends_with_event_boundary(&rest);
                    if self.saw_done {
                        self.outcome.completed = true;
                        if !whole {
                            // A last `data: [DONE]` without its blank line: end the event.
                            rest.extend_from_slice(b"\n\n");
                        }
                    } else if whole && !self.outcome.finish_reasons.is_empty() {
                        // Every event arrived and the answer said how it ended; only the
                        // `[DONE]` marker is missing (older llama.cpp servers): complete it.
                        tracing::debug!("Expert stream ended after its finish reason without [DONE]; adding it.");
                        self.outcome.completed = true;
                        rest.extend_from_slice(b"data: [DONE]\n\n");
                    } else {
                        tracing::warn!("Expert stream ended before data: [DONE]; telling the client.");
                        self.outcome.error = Some(TRUNCATED);
                        if !rest.is_empty() && !ends_with_event_boundary(&rest) {
                            // Close the cut event so the error event parses on its own.
                            rest.extend_from_slice(b"\n\n");
                        }
                        rest.extend_from_slice(&stream_error_event(
                            "the expert's stream ended before [DONE]",
                            TRUNCATED,
                        ));
                    }
                    self.finish();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(rest.freeze())));
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "Expert stream failed after the response started.");
                    self.outcome.error = Some(e.kind());
                    self.finish();
                    return Poll::Ready(Some(Ok(stream_error_event(&e.to_string(), e.kind()))));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.process(chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.on_finish.is_some() {
            self.outcome.error = Some("client_disconnected");
            self.finish();
        }
    }
}

/// The searches made on every event, built once: `memmem::find(haystack, needle)` builds
/// its searcher on each call, which cost more than the search itself. Building them once
/// (and one timer per stream, `remote.rs`) took a 22-event stream from 424k to 351k
/// instructions (callgrind, bench/README.md "Tenth session").
struct Finders {
    usage: Finder<'static>,
    finish_reason: Finder<'static>,
    data: FinderRev<'static>,
}

static FINDERS: LazyLock<Finders> = LazyLock::new(|| Finders {
    usage: Finder::new(b"\"usage\""),
    finish_reason: Finder::new(FINISH_REASON),
    data: FinderRev::new(b"data:"),
});

const FINISH_REASON: &[u8] = b"\"finish_reason\"";

fn contains_usage(haystack: &[u8]) -> bool {
    FINDERS.usage.find(haystack).is_some()
}

/// Whether the last event in `b` is `data: [DONE]` (or `data:[DONE]`).
fn ends_with_done(b: &[u8]) -> bool {
    let t = b.trim_ascii_end();
    if !t.ends_with(b"[DONE]") {
        return false;
    }
    let Some(i) = FINDERS.data.rfind(t) else { return false };
    (i == 0 || t[i - 1] == b'\n') && t[i + 5..].trim_ascii_start() == b"[DONE]"
}

fn ends_with_event_boundary(b: &[u8]) -> bool {
    b.ends_with(b"\n\n") || b.ends_with(b"\r\n\r\n")
}

/// Length of the first complete event (including its blank-line terminator), in one pass
/// over the line ends: a boundary is `\n\n` or `\r\n\r\n`, and the first one
/// found ends first.
fn event_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| match buf.get(i + 1) {
        Some(b'\n') => Some(i + 2),
        Some(b'\r') if i > 0 && buf[i - 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

/// The fields of a chunk that telemetry reports; everything else is skipped unparsed.
#[derive(serde::Deserialize)]
struct ChunkHead {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChoiceHead>,
}

#[derive(serde::Deserialize)]
struct ChoiceHead {
    finish_reason: Option<String>,
}

/// Whether the event sets a finish reason (`"finish_reason": "..."`, not `null`).
fn has_finish_reason(event: &[u8]) -> bool {
    FINDERS.finish_reason.find_iter(event).any(|at| {
        let after = event[at + FINISH_REASON.len()..].iter().skip_while(|b| b.is_ascii_whitespace() || **b == b':');
        after.take(1).any(|b| *b == b'"')
    })
}

/// The text of an event's `data:` line(s), joined as the SSE spec says.
fn data_payload(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
    if data.is_empty() || data == ["[DONE]"] {
        return None;
    }
    Some(data.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};

    async fn run(chunks: Vec<&'static str>, strip: bool) -> (String, RelayOutcome) {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let upstream = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))).boxed();
        let relay = Relay::new(upstream, strip, move |o| *s.lock().unwrap() = Some(o));
        let out: Vec<_> = relay.map(|r| r.unwrap()).collect().await;
        let text = out.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<String>();
        let outcome = seen.lock().unwrap().take().expect("on_finish called");
        (text, outcome)
    }

    const USAGE: &str = "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";

    #[tokio::test]
    async fn strips_the_usage_event_the_client_did_not_ask_for_but_counts_it() {
        let (text, o) =
            run(vec!["data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n", USAGE, "data: [DONE]\n\n"], true)
                .await;
        assert!(!text.contains("usage"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(o.usage.map(|u| u.total_tokens), Some(5));
        assert!(o.completed);
    }

    #[tokio::test]
    async fn usage_on_a_content_chunk_is_removed_and_the_content_kept() {
        let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n";
        let (text, o) = run(vec![chunk, "data: [DONE]\n\n"], true).await;
        assert!(text.contains("\"content\":\"hi\"") && !text.contains("usage"), "{text}");
        assert_eq!(o.usage.map(|u| u.total_tokens), Some(2));
        // Data that is not an object is relayed as it came, whatever it mentions.
        let (text, o) = run(vec!["data: [\"usage\", 1]\n\n", "data: [DONE]\n\n"], true).await;
        assert_eq!(text, "data: [\"usage\", 1]\n\ndata: [DONE]\n\n");
        assert!(o.usage.is_none());
    }

    #[tokio::test]
    async fn events_are_counted_whichever_path_they_take_and_without_done_or_comments() {
        let content = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        // Whole events in one chunk (no copy), a split event, a comment, then [DONE].
        let (_, o) =
            run(vec![content, content, "data: {\"choi", "ces\":[]}\n\n", ": keep-alive\n\n", "data: [DONE]\n\n"], true)
                .await;
        assert_eq!(o.events, 3);
        let (_, o) = run(vec!["data: [DONE]\n\n"], true).await;
        assert_eq!(o.events, 0);
    }

    #[test]
    fn an_event_ends_at_the_first_blank_line_lf_or_crlf() {
        assert_eq!(event_end(b"data: a\n\ndata: b\n\n"), Some("data: a\n\n".len()));
        assert_eq!(event_end(b"data: a\r\n\r\ndata: b\n\n"), Some("data: a\r\n\r\n".len()));
        // A CRLF line end inside an event is not a boundary.
        assert_eq!(event_end(b"data: a\r\ndata: b\n\n"), Some("data: a\r\ndata: b\n\n".len()));
        assert_eq!(event_end(b"data: a\r\ndata: b\r\n\r\n"), Some("data: a\r\ndata: b\r\n\r\n".len()));
        assert_eq!(event_end(b"data: a\n"), None);
        assert_eq!(event_end(b"data: a\n\r\n"), None);
        assert_eq!(event_end(b"\n\n"), Some(2));
        assert_eq!(event_end(b""), None);
    }

    #[tokio::test]
    async fn keeps_usage_when_the_client_asked_and_joins_split_events() {
        let (head, tail) = USAGE.split_at(20);
        let (text, o) = run(vec![head, tail, "data: [DONE]\n\n"], false).await;
        assert_eq!(text, format!("{USAGE}data: [DONE]\n\n"));
        assert_eq!(o.usage.map(|u| u.prompt_tokens), Some(3));
    }

    #[tokio::test]
    async fn a_stream_cut_before_done_ends_with_an_error_event() {
        let content = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let (text, o) = run(vec![content, "data: {\"choi"], false).await;
        assert!(text.starts_with(content), "{text}");
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
        assert!(last.starts_with("data: {\"error\":") && last.contains(TRUNCATED), "{text}");
        assert_eq!((o.error, o.completed), (Some(TRUNCATED), false));
        // Split or whole, a [DONE] at the end is a complete stream.
        for chunks in [vec![content, "data: [DO", "NE]\n\n"], vec![content, "data:[DONE]\n\n"]] {
            let (text, o) = run(chunks, false).await;
            assert!(!text.contains(TRUNCATED) && o.completed && o.error.is_none(), "{text}");
        }
        // A last [DONE] without its blank line is ended for the client.
        let (text, o) = run(vec![content, "data: [DONE]"], false).await;
        assert_eq!((text.as_str(), o.completed), (format!("{content}data: [DONE]\n\n").as_str(), true));
        // Whole events that said how the answer ended, then a clean close without [DONE]
        // (older llama.cpp): complete, and the client gets its [DONE].
        let last = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let (text, o) = run(vec![content, last], false).await;
        assert_eq!(text, format!("{content}{last}data: [DONE]\n\n"));
        assert!(o.completed && o.error.is_none(), "{o:?}");
        // Without a finish reason the same close is a truncation.
        let (text, o) = run(vec![content, content], false).await;
        assert!(text.contains(TRUNCATED) && !o.completed, "{text}");
    }

    #[tokio::test]
    async fn a_mid_stream_failure_becomes_an_error_event_and_ends_the_stream() {
        let upstream = futures::stream::iter(vec![
            Ok(Bytes::from("data: {\"choices\":[]}\n\n")),
            Err(ExpertError::Stream { expert: "e".into(), detail: "reset".into() }),
            Ok(Bytes::from("data: never\n\n")),
        ])
        .boxed();
        let relay = Relay::new(upstream, false, |_| {});
        let out: Vec<_> = relay.map(|r| r.unwrap()).collect().await;
        assert_eq!(out.len(), 2);
        let err = String::from_utf8_lossy(&out[1]).into_owned();
        assert!(err.starts_with("data: {\"error\":"), "{err}");
        assert!(err.contains("reset"));
    }

    #[tokio::test]
    async fn reads_the_response_id_model_and_finish_reasons_on_the_way() {
        let (text, o) = run(
            vec![
                ": keep-alive\n\n",
                "data: {\"id\":\"chatcmpl-7\",\"model\":\"m-v2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"chatcmpl-7\",\"model\":\"m-v2\",\"choices\":[{\"index\":0,\"delta\":{},",
                "\"finish_reason\": \"length\"}]}\n\n",
                "data: [DONE]\n\n",
            ],
            false,
        )
        .await;
        assert!(text.contains("\"finish_reason\": \"length\""), "{text}");
        assert_eq!(o.response_id.as_deref(), Some("chatcmpl-7"));
        assert_eq!(o.response_model.as_deref(), Some("m-v2"));
        assert_eq!(o.finish_reasons, ["length"]);
    }
}

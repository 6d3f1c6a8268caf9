//! Remote experts: any OpenAI-compatible HTTP endpoint (vLLM, SGLang, Ollama,
//! llama.cpp server, OpenAI, ...).

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};
use tokio::time::{timeout, timeout_at, Instant};

use super::{CallOptions, ExpertError, Reply, ReplyHead};
use crate::config::{RemoteConfig, Timeouts};
use crate::dispatch::request::Endpoint;

/// Keep-alive connections are the main saving of a proxy; idle ones are dropped after
/// this long so a backend restart does not leave dead sockets in the pool for long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for reading an error body: it is only quoted back, never streamed.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RemoteExpert {
    name: String,
    client: reqwest::Client,
    /// Parsed once: reqwest would otherwise parse (and IDNA-check) a string per call.
    chat_url: reqwest::Url,
    completions_url: reqwest::Url,
    embeddings_url: reqwest::Url,
    model: serde_json::Value,
    headers: HeaderMap,
    timeouts: Timeouts,
}

impl RemoteExpert {
    pub fn new(name: &str, cfg: &RemoteConfig) -> Result<Self, ExpertError> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Retries are the gateway's own (`[resilience]`, before the first byte, with backoff
            // and the breaker told). reqwest's default replays refused HTTP/2 streams on
            // its own, and clones every request's head so that it could.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()
            .map_err(|e| ExpertError::Unavailable { expert: name.to_string(), detail: e.to_string() })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &cfg.headers {
            headers.insert(k.clone(), v.clone());
        }
        if let Some(key) = &cfg.api_key {
            let mut v =
                HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| ExpertError::Unavailable {
                    expert: name.to_string(),
                    detail: "API key is not a valid header value".into(),
                })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        Ok(Self {
            name: name.to_string(),
            client,
            chat_url: endpoint(name, &cfg.base_url, Endpoint::Chat.path())?,
            completions_url: endpoint(name, &cfg.base_url, Endpoint::Completions.path())?,
            embeddings_url: endpoint(name, &cfg.base_url, "embeddings")?,
            model: serde_json::Value::String(cfg.model.clone()),
            headers,
            timeouts: cfg.timeouts.clone(),
        })
    }

    pub async fn chat(
        &self,
        body: &serde_json::Map<String, serde_json::Value>,
        opts: CallOptions<'_>,
        trace: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<Reply, ExpertError> {
        let now = Instant::now();
        let deadline = now + self.timeouts.total;
        // One first-byte window from the send: the response head and, for a stream, its
        // first event must both arrive within it.
        let first_byte_by = now + self.timeouts.first_byte;
        let url = match opts.endpoint {
            Endpoint::Chat => &self.chat_url,
            Endpoint::Completions => &self.completions_url,
        };
        let resp = self.send(url, body, trace, first_byte_by).await?;
        if !opts.stream {
            let body = self.read_body(resp, deadline).await?;
            let head = ReplyHead::parse(&body).map_err(|detail| self.refused_reply(body.clone(), detail))?;
            return Ok(Reply::Json { body, head });
        }
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_sse {
            // A backend that ignored `stream: true` (or an error page with status 200)
            // would otherwise be relayed as a broken stream.
            return Err(self.protocol("a streaming request was not answered with text/event-stream".into()));
        }
        let mut upstream = resp.bytes_stream();
        let first = match timeout_at(deadline.min(first_byte_by), upstream.next()).await {
            Err(_) => {
                return Err(ExpertError::FirstByteTimeout {
                    expert: self.name.clone(),
                    after: self.timeouts.first_byte,
                })
            }
            Ok(None) => return Err(self.protocol("the stream ended before its first event".into())),
            Ok(Some(Err(e))) => return Err(self.connect(&e)),
            Ok(Some(Ok(b))) => b,
        };
        // Nothing has reached the client yet: a garbled first event can still go to the
        // next expert instead of breaking the client's stream parser.
        if let Some((detail, error)) = invalid_first_event(&first) {
            return Err(match error {
                Some(json) => self.refused_reply(json, detail),
                None => self.protocol(detail),
            });
        }
        let name = self.name.clone();
        let total = self.timeouts.total;
        let rest = deadline_stream(upstream, deadline, move |e| match e {
            None => ExpertError::TotalTimeout { expert: name.clone(), after: total },
            Some(e) => ExpertError::Stream { expert: name.clone(), detail: e.to_string() },
        });
        Ok(Reply::Stream { events: futures::stream::once(async move { Ok(first) }).chain(rest).boxed() })
    }

    pub async fn embeddings(
        &self,
        body: &serde_json::Map<String, serde_json::Value>,
        trace: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<(Bytes, ReplyHead), ExpertError> {
        let now = Instant::now();
        let deadline = now + self.timeouts.total;
        let resp = self.send(&self.embeddings_url, body, trace, now + self.timeouts.first_byte).await?;
        let body = self.read_body(resp, deadline).await?;
        let head = ReplyHead::parse(&body).map_err(|detail| self.refused_reply(body.clone(), detail))?;
        Ok((body, head))
    }

    /// A 200 reply (or first stream event) that `ReplyHead::parse` or the first-event check
    /// refused. An error object with a client-error code is the request's fault or a rate
    /// limit: it keeps its status (a 400 reaches the client, a 429 is neutral). Anything
    /// else is a broken backend.
    fn refused_reply(&self, json: Bytes, detail: String) -> ExpertError {
        match super::embedded_client_status(&json) {
            Some(status) => ExpertError::Status { expert: self.name.clone(), status, body: json, retry_after: None },
            None => self.protocol(detail),
        }
    }

    /// Sends the request and waits for the response head until `head_by`; non-2xx becomes
    /// an error.
    async fn send(
        &self,
        url: &reqwest::Url,
        body: &serde_json::Map<String, serde_json::Value>,
        trace: &[(http::HeaderName, http::HeaderValue)],
        head_by: Instant,
    ) -> Result<reqwest::Response, ExpertError> {
        let payload =
            serde_json::to_vec(&WithModel { body, model: &self.model }).map_err(|e| self.protocol(e.to_string()))?;
        let mut req = self.client.post(url.clone()).headers(self.headers.clone()).body(payload);
        for (k, v) in trace {
            req = req.header(k, v);
        }
        let resp = match timeout_at(head_by, req.send()).await {
            Err(_) => {
                return Err(ExpertError::FirstByteTimeout {
                    expert: self.name.clone(),
                    after: self.timeouts.first_byte,
                })
            }
            Ok(Err(e)) => return Err(self.connect(&e)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp.headers().get(RETRY_AFTER).cloned();
        let body = timeout(ERROR_BODY_TIMEOUT, resp.bytes()).await.ok().and_then(Result::ok).unwrap_or_default();
        Err(ExpertError::Status { expert: self.name.clone(), status, body, retry_after })
    }

    async fn read_body(&self, resp: reqwest::Response, deadline: Instant) -> Result<Bytes, ExpertError> {
        match timeout_at(deadline, resp.bytes()).await {
            Err(_) => Err(ExpertError::TotalTimeout { expert: self.name.clone(), after: self.timeouts.total }),
            Ok(Err(e)) => Err(ExpertError::Protocol {
                expert: self.name.clone(),
                detail: format!("reading the body failed: {e}"),
            }),
            Ok(Ok(b)) => Ok(b),
        }
    }

    fn connect(&self, e: &reqwest::Error) -> ExpertError {
        // reqwest's Display nests the cause; walk the chain so "connection refused" shows.
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            src = s.source();
        }
        ExpertError::Connect { expert: self.name.clone(), detail }
    }

    fn protocol(&self, detail: String) -> ExpertError {
        ExpertError::Protocol { expert: self.name.clone(), detail }
    }
}

/// `base_url` + `/path`, checked when the expert is built rather than on every call.
fn endpoint(name: &str, base_url: &str, path: &str) -> Result<reqwest::Url, ExpertError> {
    reqwest::Url::parse(&format!("{base_url}/{path}")).map_err(|e| ExpertError::Unavailable {
        expert: name.to_string(),
        detail: format!("base_url {base_url:?} is not a valid URL: {e}"),
    })
}

/// The client's body with `model` set to the expert's upstream name, serialized without
/// copying the body (it may be retried against another expert, so it is not consumed).
struct WithModel<'a> {
    body: &'a serde_json::Map<String, serde_json::Value>,
    model: &'a serde_json::Value,
}

impl serde::Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let has_model = self.body.contains_key("model");
        let mut map = s.serialize_map(Some(self.body.len() + usize::from(!has_model)))?;
        if !has_model {
            map.serialize_entry("model", self.model)?;
        }
        for (k, v) in self.body {
            if k == "model" {
                map.serialize_entry(k, self.model)?;
            } else {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// Why the first SSE event in `chunk` is not an OpenAI event (its `data:` is neither JSON
/// nor `[DONE]`, or it is an error object, whose data comes back too); None when it is, or
/// when the chunk holds no complete event to judge.
fn invalid_first_event(chunk: &[u8]) -> Option<(String, Option<Bytes>)> {
    let end = memchr::memmem::find(chunk, b"\n\n")?;
    let event = std::str::from_utf8(&chunk[..end]).map_err(|_| "the first stream event is not UTF-8".to_string());
    let event = match event {
        Ok(e) => e,
        Err(detail) => return Some((detail, None)),
    };
    let data: Vec<&str> =
        event.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
    if data.is_empty() {
        return None; // A comment or keep-alive; the client's parser skips it.
    }
    let data = data.join("\n");
    if data.trim() == "[DONE]" {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        error: Option<&'a serde_json::value::RawValue>,
    }
    if !data.trim_start().starts_with('{') {
        // serde would read a struct from an array by position.
        return serde_json::from_str::<serde::de::IgnoredAny>(&data)
            .err()
            .map(|e| (format!("the first stream event is not JSON: {e}"), None));
    }
    match serde_json::from_str::<Probe>(&data) {
        Err(e) => Some((format!("the first stream event is not JSON: {e}"), None)),
        // vLLM and others report a failure as a stream's only event: nothing reached the
        // client, so the next expert can still answer.
        Ok(Probe { error: Some(error) }) => {
            let detail = format!("the stream began with an error: {}", super::error_text(error.get().as_bytes()));
            Some((detail, Some(Bytes::from(data))))
        }
        Ok(_) => None,
    }
}

/// Ends the stream with an error from `on_error(None)` at `deadline`, or with
/// `on_error(Some(e))` when the upstream fails.
fn deadline_stream<S, F>(
    upstream: S,
    deadline: Instant,
    on_error: F,
) -> impl Stream<Item = Result<Bytes, ExpertError>> + Send
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
    F: Fn(Option<reqwest::Error>) -> ExpertError + Send + 'static,
{
    // One timer for the whole stream: a `timeout_at` per event built and registered a new
    // timer entry for every chunk.
    let expiry = Box::pin(tokio::time::sleep_until(deadline));
    futures::stream::unfold(Some((upstream, on_error, expiry)), |state| async move {
        let (mut upstream, on_error, mut expiry) = state?;
        tokio::select! {
            // The upstream first: a chunk that is already there is relayed, as before.
            biased;
            next = upstream.next() => match next {
                None => None,
                Some(Err(e)) => Some((Err(on_error(Some(e))), None)),
                Some(Ok(b)) => Some((Ok(b), Some((upstream, on_error, expiry)))),
            },
            () = &mut expiry => Some((Err(on_error(None)), None)),
        }
    })
}

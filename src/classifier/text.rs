//! What is classified: the text extracted from an OpenAI chat request.

use serde_json::Value;

/// A latest user turn shorter than this (in bytes) is likely a follow-up ("now make it
/// shorter") whose category only the preceding turn reveals, so context is appended.
const FOLLOW_UP_MAX_BYTES: usize = 200;
/// Context is a hint, not the subject: capping each piece keeps a long system prompt from
/// outweighing the question itself.
const SYSTEM_PROMPT_MAX_BYTES: usize = 400;
/// The previous user turn is cut to its head, where a request usually says what it asks
/// for ("Act as ...", "Write a ..."). Short enough that with a short follow-up both fit in
/// the encoder's token window (32 tokens for routers/default), so the window's tail holds
/// the previous turn's opening instead of the middle of a long request. Chosen on the
/// public eval's dev half (routers/default/README.md).
const PREVIOUS_TURN_MAX_BYTES: usize = 80;

/// Builds the text a router classifies from OpenAI chat `messages`.
///
/// The latest user turn comes first, so that head+tail truncation in the encoder always
/// keeps its beginning. When that turn is short (a likely follow-up), the head of the
/// previous user turn and then the system prompt follow it, each capped, to disambiguate.
/// Content may be a string or an array of parts, of which only `type == "text"` parts are
/// used.
pub fn prompt_text(messages: &[Value]) -> String {
    let role = |m: &Value| m.get("role").and_then(Value::as_str).unwrap_or("").to_owned();
    let Some(last_user) = messages.iter().rposition(|m| role(m) == "user") else {
        // No user turn at all: classify whatever text there is, most recent first.
        return messages.iter().rev().map(content_text).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("\n\n");
    };
    let mut out = content_text(&messages[last_user]);
    if out.len() >= FOLLOW_UP_MAX_BYTES {
        return out;
    }
    let previous_user = messages[..last_user].iter().rposition(|m| role(m) == "user");
    let system = messages.iter().find(|m| role(m) == "system" || role(m) == "developer");
    let pieces = [(previous_user.map(|i| &messages[i]), PREVIOUS_TURN_MAX_BYTES), (system, SYSTEM_PROMPT_MAX_BYTES)];
    for (piece, cap) in pieces {
        let Some(piece) = piece else { continue };
        let text = content_text(piece);
        if !text.is_empty() {
            out.push_str("\n\n");
            out.push_str(truncate_bytes(&text, cap));
        }
    }
    out
}

/// The text of one message: a string, or the `text` parts of an array joined by newlines.
fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Keeps the first and last `each` bytes of `s` (on char boundaries), joined by a
/// newline, so that cost stays bounded for very long inputs.
pub(crate) fn head_tail_bytes(s: &str, each: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= 2 * each {
        return std::borrow::Cow::Borrowed(s);
    }
    let head = truncate_bytes(s, each);
    let mut start = s.len() - each;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    std::borrow::Cow::Owned(format!("{head}\n{}", &s[start..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_text_uses_latest_user_turn_and_context_for_follow_ups() {
        let msgs = vec![
            json!({"role": "system", "content": "You are a poet."}),
            json!({"role": "user", "content": "Write a haiku about rain."}),
            json!({"role": "assistant", "content": "Drops on the tin roof"}),
            json!({"role": "user", "content": [{"type": "text", "text": "Shorter."}, {"type": "image_url", "image_url": {"url": "x"}}]}),
        ];
        assert_eq!(prompt_text(&msgs), "Shorter.\n\nWrite a haiku about rain.\n\nYou are a poet.");
        // A long previous turn contributes only its head; a long system prompt its first 400 bytes.
        let request = format!("Act as a travel agent and plan my trip. {}", "Details follow. ".repeat(20));
        let system = "s".repeat(1000);
        let msgs = vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": request}),
            json!({"role": "assistant", "content": "Sure."}),
            json!({"role": "user", "content": "Cheaper?"}),
        ];
        let expected =
            format!("Cheaper?\n\n{}\n\n{}", &request[..PREVIOUS_TURN_MAX_BYTES], &system[..SYSTEM_PROMPT_MAX_BYTES]);
        assert_eq!(prompt_text(&msgs), expected);
        let long = "x".repeat(FOLLOW_UP_MAX_BYTES);
        let msgs = vec![json!({"role": "user", "content": "a"}), json!({"role": "user", "content": long.clone()})];
        assert_eq!(prompt_text(&msgs), long);
    }

    #[test]
    fn head_tail_keeps_both_ends_on_char_boundaries() {
        let s = "é".repeat(100);
        let ht = head_tail_bytes(&s, 11);
        assert!(ht.starts_with("ééééé") && ht.ends_with("ééééé"));
        assert!(ht.len() <= 23);
    }
}

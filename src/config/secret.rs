//! A value that must never reach a log line, an error message or a debug dump.

use std::fmt;

/// An API key or other credential. It has no `Display`, and its `Debug` is redacted,
/// so `?config` in a log statement cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The raw value, for the one place that needs it: the outgoing `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("sk-live-123".into());
        assert!(!format!("{s:?}").contains("sk-live"));
    }
}

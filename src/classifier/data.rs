//! Labelled JSONL data: `{"prompt": "...", "category": "..."}` or
//! `{"messages": [...chat...], "category": "..."}` per line.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::text::prompt_text;

/// Errors reading labelled data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    Line { path: PathBuf, line: usize, reason: String },
    #[error("{path}:{line}: category {category:?} is not one of the router's labels {labels:?}")]
    UnknownLabel { path: PathBuf, line: usize, category: String, labels: Vec<String> },
    #[error("no .jsonl files in {0}")]
    Empty(PathBuf),
}

/// One labelled example, as the classifier will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    /// Index into the router's labels.
    pub label: usize,
}

/// Reads one JSONL file; every category must be one of `labels`.
pub fn load_jsonl(path: &Path, labels: &[String]) -> Result<Vec<Example>, DataError> {
    let body = std::fs::read_to_string(path).map_err(|source| DataError::Read { path: path.to_owned(), source })?;
    let mut out = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| DataError::Line { path: path.to_owned(), line: line_no, reason };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let category =
            v.get("category").and_then(Value::as_str).ok_or_else(|| bad("missing string `category`".into()))?;
        let text = match (v.get("prompt"), v.get("messages")) {
            (Some(Value::String(p)), _) => p.clone(),
            (_, Some(Value::Array(m))) => prompt_text(m),
            _ => return Err(bad("needs a string `prompt` or an array `messages`".into())),
        };
        let label = labels.iter().position(|l| l == category).ok_or_else(|| DataError::UnknownLabel {
            path: path.to_owned(),
            line: line_no,
            category: category.to_owned(),
            labels: labels.to_vec(),
        })?;
        out.push(Example { text, label });
    }
    Ok(out)
}

/// Reads every `*.jsonl` in `dir`, in file-name order (so runs are reproducible).
pub fn load_dir(dir: &Path, labels: &[String]) -> Result<Vec<Example>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Read { path: dir.to_owned(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::Empty(dir.to_owned()));
    }
    let mut out = Vec::new();
    for f in files {
        out.extend(load_jsonl(&f, labels)?);
    }
    Ok(out)
}

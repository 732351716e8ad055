//! Records of JSON list and JSONL files (optionally gzipped), shared by every reader: where a
//! record sits (file, line or record number, field) for error messages that cut long values,
//! and what to do with a malformed record: fail (the default) or, opted into with
//! `--skip-invalid`, skip it, count it by reason and keep it for a rejects file.

use crate::corpus::{read_bytes, to_utf8};
use crate::error::{DataError, Result};
use crate::message::{Message, Role};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a record sits, for error messages.
pub(crate) struct At<'a> {
    pub path: &'a Path,
    /// The line of a JSONL record; `None` in a JSON list.
    pub line: Option<usize>,
    /// The 1-based position of a record in a JSON list.
    pub record: Option<usize>,
}

impl At<'_> {
    pub(crate) fn err(&self, field: &str, msg: impl std::fmt::Display) -> DataError {
        let what = match self.record {
            Some(r) => format!("record {r}: field `{field}`: {msg}"),
            None => format!("field `{field}`: {msg}"),
        };
        DataError::Record {
            path: self.path.to_path_buf(),
            line: self.line,
            msg: what,
        }
    }
}

/// A JSON value for an error message: at most 80 characters of it.
pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 80 {
        return s;
    }
    format!(
        "{}… ({} characters)",
        s.chars().take(80).collect::<String>(),
        s.len()
    )
}

pub(crate) fn string<'v>(at: &At, obj: &'v Value, field: &str, path: &str) -> Result<&'v str> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(at.err(path, format!("expected a string, got {}", short(other)))),
        None => Err(at.err(path, "missing")),
    }
}

/// A list of turns `[{role_key, content_key}]`, roles named as `role_of` reads them. An
/// optional `weight` (0 or 1, as OpenAI's fine-tuning files give it) on an assistant turn
/// says whether the loss trains on it.
pub(crate) fn turns(
    at: &At,
    list: &Value,
    field: &str,
    role_key: &str,
    content_key: &str,
    role_of: impl Fn(&str) -> Option<Role>,
) -> Result<Vec<Message>> {
    let items = list.as_array().ok_or_else(|| {
        at.err(
            field,
            format!("expected a list of turns, got {}", short(list)),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, turn)| {
            message(
                at,
                turn,
                &format!("{field}[{i}]"),
                role_key,
                content_key,
                &role_of,
            )
        })
        .collect()
}

/// One turn `{role_key, content_key, weight?}`; `name` is its place in the record.
pub(crate) fn message(
    at: &At,
    turn: &Value,
    name: &str,
    role_key: &str,
    content_key: &str,
    role_of: &dyn Fn(&str) -> Option<Role>,
) -> Result<Message> {
    let key = |k: &str| format!("{name}.{k}");
    let role = string(at, turn, role_key, &key(role_key))?;
    let role =
        role_of(role).ok_or_else(|| at.err(&key(role_key), format!("unknown role `{role}`")))?;
    let content = string(at, turn, content_key, &key(content_key))?;
    let mut m = Message::new(role, content);
    match turn.get("weight") {
        None | Some(Value::Null) => {}
        Some(w) => match w.as_f64() {
            Some(x) if (x == 0.0 || x == 1.0) && role == Role::Assistant => m.train = x == 1.0,
            Some(x) if x == 0.0 || x == 1.0 => {
                return Err(at.err(&key("weight"), "a weight belongs on an assistant turn"));
            }
            _ => {
                return Err(at.err(
                    &key("weight"),
                    format!(
                        "expected 0 or 1 (train on this turn or not), got {}",
                        short(w)
                    ),
                ));
            }
        },
    }
    Ok(m)
}

/// A record that was skipped: where it was, why, and the record itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejected {
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<usize>,
    pub reason: String,
    /// The record as it was (its JSON, or the line when it was not JSON).
    pub text: String,
}

/// What readers do with a malformed record: fail naming it (the default), or skip it and
/// keep it here.
#[derive(Debug, Default)]
pub struct Rejects {
    pub skip: bool,
    pub rejected: Vec<Rejected>,
}

impl Rejects {
    /// Fail on the first malformed record.
    pub fn strict() -> Self {
        Rejects::default()
    }

    /// Skip malformed records, keeping each.
    pub fn skipping() -> Self {
        Rejects {
            skip: true,
            rejected: vec![],
        }
    }

    /// A malformed record: an error when strict, else kept and skipped.
    fn reject(&mut self, at: &At, err: DataError, text: &str) -> Result<()> {
        if !self.skip {
            return Err(match err {
                DataError::Record { path, line, msg } => DataError::Record {
                    path,
                    line,
                    msg: format!(
                        "{msg} (to skip such records and keep going, pass --skip-invalid: \
                         they are counted and written to the run's rejects.jsonl)"
                    ),
                },
                other => other,
            });
        }
        let reason = match &err {
            DataError::Record { msg, .. } => msg.clone(),
            other => other.to_string(),
        };
        // The reason without the record number, so equal reasons count together.
        let reason = match reason.strip_prefix("record ") {
            Some(r) => r
                .split_once(": ")
                .map_or(reason.clone(), |x| x.1.to_string()),
            None => reason,
        };
        self.rejected.push(Rejected {
            file: at.path.to_path_buf(),
            line: at.line,
            record: at.record,
            reason,
            text: text.to_string(),
        });
        Ok(())
    }

    /// How many records were skipped for each reason.
    pub fn by_reason(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.rejected {
            *m.entry(r.reason.clone()).or_default() += 1;
        }
        m
    }

    /// Writes the skipped records as JSON lines to `path` (atomically), and logs the counts.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text: String = self
            .rejected
            .iter()
            .map(|r| format!("{}\n", serde_json::to_string(r).expect("JSON")))
            .collect();
        cria_core::fsutil::write_atomic(path, text.as_bytes())?;
        for (reason, n) in self.by_reason() {
            tracing::warn!(skipped = n, "{reason}");
        }
        if !self.rejected.is_empty() {
            tracing::warn!(
                skipped = self.rejected.len(),
                file = %path.display(),
                "invalid records skipped (--skip-invalid) and written to the rejects file"
            );
        }
        Ok(())
    }
}

/// Reads one JSON list or JSONL file (optionally gzipped), turning each record into a `T`;
/// malformed records go to `rejects`.
pub(crate) fn read_records<T>(
    path: &Path,
    rejects: &mut Rejects,
    parse: impl Fn(&At, &Value) -> Result<T>,
) -> Result<Vec<T>> {
    let text = to_utf8(path, read_bytes(path)?)?;
    let mut out = Vec::new();
    if text.trim_start().starts_with('[') {
        let v: Value = serde_json::from_str(&text).map_err(|e| DataError::Record {
            path: path.to_path_buf(),
            line: Some(e.line()),
            msg: format!("invalid JSON: {e}"),
        })?;
        for (i, rec) in v.as_array().expect("starts with [").iter().enumerate() {
            let at = At {
                path,
                line: None,
                record: Some(i + 1),
            };
            match parse(&at, rec) {
                Ok(x) => out.push(x),
                Err(e) => rejects.reject(&at, e, &rec.to_string())?,
            }
        }
        return Ok(out);
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = At {
            path,
            line: Some(i + 1),
            record: None,
        };
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(|e| DataError::Record {
                path: path.to_path_buf(),
                line: Some(i + 1),
                msg: format!("invalid JSON: {e}"),
            })
            .and_then(|rec| parse(&at, &rec));
        match parsed {
            Ok(x) => out.push(x),
            Err(e) => rejects.reject(&at, e, line)?,
        }
    }
    Ok(out)
}

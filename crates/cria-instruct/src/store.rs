//! The run's record: append-only JSONL files, one line per finished request or task, written
//! with one `write` and an fsync each time. A run killed mid-write leaves at most one partial
//! last line, which the next run cuts off and redoes: nothing is done twice, nothing finished
//! is lost.

use crate::error::{InstructError, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Log {
    path: PathBuf,
    file: File,
}

impl Log {
    /// Opens `path` for appending (creating it), returning the records already in it.
    pub fn open(path: &Path) -> Result<(Log, Vec<Value>)> {
        let io = |e| InstructError::io(path, e);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(io(e)),
        };
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let mut records = vec![];
        for (i, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let v = serde_json::from_slice(line).map_err(|e| {
                InstructError::Invalid(format!(
                    "{}:{}: not a record this run wrote ({e}); move the file away to start over",
                    path.display(),
                    i + 1
                ))
            })?;
            records.push(v);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if whole < bytes.len() {
            tracing::warn!(
                "{}: the last line was cut off (the run was stopped while writing it); it is done again",
                path.display()
            );
            file.set_len(whole as u64).map_err(io)?;
        }
        Ok((
            Log {
                path: path.to_path_buf(),
                file,
            },
            records,
        ))
    }

    /// Appends records, durably.
    pub fn append(&mut self, records: &[Value]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for r in records {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        let io = |e| InstructError::io(&self.path, e);
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cut_off_last_line_is_dropped_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        let (mut log, old) = Log::open(&p).unwrap();
        assert!(old.is_empty());
        log.append(&[json!({"a": 1}), json!({"a": 2})]).unwrap();
        drop(log);
        // A kill in the middle of the next write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"a\": 3, \"b\"")
            .unwrap();
        let (mut log, old) = Log::open(&p).unwrap();
        assert_eq!(old, vec![json!({"a": 1}), json!({"a": 2})]);
        log.append(&[json!({"a": 3})]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
    }
}

//! Text corpora: `.txt`/`.md` files (one document each) and `.jsonl` files of `{"text": ...}`
//! records, optionally gzip-compressed (`.gz`), given as files or directories.

use crate::error::{DataError, Result};
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Extensions read as corpus files (before an optional `.gz`).
pub const EXTENSIONS: [&str; 4] = ["txt", "md", "jsonl", "json"];

/// One document and where it came from.
pub struct Document {
    pub text: String,
    pub source: PathBuf,
}

fn kind(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let base = name.strip_suffix(".gz").unwrap_or(&name);
    EXTENSIONS
        .into_iter()
        .find(|e| base.ends_with(&format!(".{e}")))
}

/// Expands files and directories (recursively, sorted) into corpus files.
pub fn collect_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| DataError::io(p, e))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| DataError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let files: Vec<PathBuf> = entries
                .into_iter()
                .filter(|e| e.is_dir() || kind(e).is_some())
                .collect();
            out.extend(collect_files(&files)?);
        } else {
            if kind(p).is_none() {
                return Err(DataError::Record {
                    path: p.clone(),
                    line: None,
                    msg: format!(
                        "unknown corpus file type (expected {}, optionally .gz)",
                        EXTENSIONS.join(", ")
                    ),
                });
            }
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reads a whole file, transparently un-gzipping `.gz`.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Decodes UTF-8, naming the line and byte of the first invalid sequence.
pub fn to_utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        DataError::Utf8 {
            path: path.to_path_buf(),
            line,
            offset,
        }
    })
}

/// Reads the documents of one corpus file.
pub fn read_documents(path: &Path) -> Result<Vec<Document>> {
    let text = to_utf8(path, read_bytes(path)?)?;
    let doc = |text: String| Document {
        text,
        source: path.to_path_buf(),
    };
    match kind(path) {
        Some("jsonl") | Some("json") => {
            let mut docs = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let rec = |msg: String| DataError::Record {
                    path: path.to_path_buf(),
                    line: Some(i + 1),
                    msg,
                };
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| rec(format!("invalid JSON: {e}")))?;
                let t = v
                    .get("text")
                    .ok_or_else(|| rec("field `text`: missing".into()))?
                    .as_str()
                    .ok_or_else(|| rec("field `text`: expected a string".into()))?;
                docs.push(doc(t.to_string()));
            }
            Ok(docs)
        }
        _ => Ok(vec![doc(text)]),
    }
}

/// Reads every document of every input; an input with no text at all is an error.
pub fn read_corpus(inputs: &[PathBuf]) -> Result<Vec<Document>> {
    let files = collect_files(inputs)?;
    if files.is_empty() {
        return Err(DataError::Empty(format!(
            "no corpus files found in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut docs = Vec::new();
    for f in &files {
        docs.extend(
            read_documents(f)?
                .into_iter()
                .filter(|d| !d.text.trim().is_empty()),
        );
    }
    if docs.is_empty() {
        return Err(DataError::Empty(format!(
            "the corpus is empty: {} holds no text",
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(docs)
}

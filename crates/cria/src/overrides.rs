//! Defaults < `--config FILE.toml` < `--set key=value`. Overrides are merged into the TOML
//! table before it is deserialised, so misspelt keys hit the same unknown-key error as the file.

use anyhow::{Context, bail};
use std::path::Path;
use toml::{Table, Value};

/// Reads `path` (if any), applies `key.path=value` overrides, and returns the merged table.
pub fn load(path: Option<&Path>, sets: &[String]) -> anyhow::Result<Table> {
    let mut table = match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            text.parse::<Table>()
                .with_context(|| format!("{}: invalid TOML", p.display()))?
        }
        None => Table::new(),
    };
    for s in sets {
        let Some((key, raw)) = s.split_once('=') else {
            bail!("--set {s}: expected KEY=VALUE, e.g. train.lr=1e-3");
        };
        let value = parse_value(raw.trim());
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut cur = &mut table;
        for part in &parts[..parts.len() - 1] {
            let entry = cur
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            cur = match entry {
                Value::Table(t) => t,
                _ => bail!("--set {s}: `{part}` is not a table"),
            };
        }
        cur.insert(parts[parts.len() - 1].to_string(), value);
    }
    Ok(table)
}

/// A TOML literal if it parses as one (numbers, booleans, arrays), else a string.
fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Deserialises a merged table, naming the file in errors.
pub fn parse<T: serde::de::DeserializeOwned>(table: Table, origin: &str) -> anyhow::Result<T> {
    T::deserialize(Value::Table(table)).with_context(|| format!("{origin}: invalid configuration"))
}

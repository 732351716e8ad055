//! Defaults < `--config FILE.toml` < `--set key=value`. Overrides are merged into the TOML
//! table before it is deserialised, so misspelt keys hit the same unknown-key error as the file.

use anyhow::{Context, bail};
use std::path::{Component, Path, PathBuf};
use toml::{Table, Value};

/// Reads `path` (if any) as a TOML table.
fn read(path: Option<&Path>) -> anyhow::Result<Table> {
    Ok(match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            text.parse::<Table>()
                .with_context(|| format!("{}: invalid TOML", p.display()))?
        }
        None => Table::new(),
    })
}

/// Applies `key.path=value` overrides to a table.
fn apply(table: &mut Table, sets: &[String]) -> anyhow::Result<()> {
    for s in sets {
        let Some((key, raw)) = s.split_once('=') else {
            bail!("--set {s}: expected KEY=VALUE, e.g. train.lr=1e-3");
        };
        let value = parse_value(raw.trim());
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut cur = &mut *table;
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
    Ok(())
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

/// Reads `path` (if any), makes the path-valued `keys` (dotted; a string or a list of strings) that
/// came from the file relative to the file's directory. Values given with `--set` stay relative
/// to the working directory. Then applies the `key.path=value` overrides.
pub fn load_with_paths(
    path: Option<&Path>,
    sets: &[String],
    keys: &[&str],
) -> anyhow::Result<Table> {
    let mut table = read(path)?;
    if let Some(base) = path.and_then(Path::parent) {
        for key in keys {
            if let Some(v) = get_mut(&mut table, key) {
                resolve(v, base);
            }
        }
    }
    apply(&mut table, sets)?;
    Ok(table)
}

/// Parses TOML `text` built into the binary (`origin` names it in errors), then applies the
/// `key.path=value` overrides; paths in it stay relative to the working directory.
pub fn load_text(text: &str, origin: &str, sets: &[String]) -> anyhow::Result<Table> {
    let mut table = text
        .parse::<Table>()
        .with_context(|| format!("{origin}: invalid TOML"))?;
    apply(&mut table, sets)?;
    Ok(table)
}

fn get_mut<'a>(table: &'a mut Table, key: &str) -> Option<&'a mut Value> {
    let mut parts = key.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return cur.get_mut(part);
        }
        cur = cur.get_mut(part)?.as_table_mut()?;
    }
    None
}

fn resolve(v: &mut Value, base: &Path) {
    match v {
        Value::String(s) if Path::new(s.as_str()).is_relative() => {
            *s = normalize(&base.join(s.as_str())).display().to_string();
        }
        Value::Array(items) => items.iter_mut().for_each(|i| resolve(i, base)),
        _ => {}
    }
}

/// Removes `.` and folds `dir/..` without touching the file system (the target may not exist
/// yet), so paths read `runs/tiny`, not `examples/tiny/../../runs/tiny`.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

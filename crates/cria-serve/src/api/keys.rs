//! API keys: a file with one key a line, optionally `name:key` (the name shows in logs and
//! per-key limits; a bare key is named by its line). `#` starts a comment line.

use std::path::Path;

#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for ApiKey {
    /// Never prints the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.name)
    }
}

impl ApiKey {
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> ApiKey {
        ApiKey {
            name: name.into(),
            key: key.into().into_bytes(),
        }
    }
}

/// Reads a key file; an error names the file and line.
pub fn read(path: &Path) -> Result<Vec<ApiKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the API key file: {e}", path.display()))?;
    let mut keys: Vec<ApiKey> = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let (name, key) = match line.split_once(':') {
            Some((n, k)) => (n.trim().to_string(), k.trim()),
            None => (format!("key-{}", i + 1), line),
        };
        if key.is_empty() || name.is_empty() {
            return Err(format!("{at}: expected `KEY` or `NAME:KEY`"));
        }
        if key.chars().any(char::is_whitespace) {
            return Err(format!("{at}: the key holds whitespace"));
        }
        if keys.iter().any(|k| k.name == name) {
            return Err(format!("{at}: the name `{name}` is given twice"));
        }
        keys.push(ApiKey::new(name, key));
    }
    if keys.is_empty() {
        return Err(format!(
            "{}: the API key file holds no keys",
            path.display()
        ));
    }
    Ok(keys)
}

/// The key `given` matches, compared in constant time (every key is compared in full).
pub fn find<'a>(keys: &'a [ApiKey], given: &str) -> Option<&'a ApiKey> {
    let mut found = None;
    for k in keys {
        if same(&k.key, given.as_bytes()) {
            found = Some(k);
        }
    }
    found
}

fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_and_bare_keys_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, "# staff\nhelpdesk:sk-one\nsk-two\n\n").unwrap();
        let keys = read(&p).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(find(&keys, "sk-one").unwrap().name, "helpdesk");
        assert_eq!(find(&keys, "sk-two").unwrap().name, "key-3");
        assert!(find(&keys, "sk-on").is_none());
        assert!(find(&keys, "sk-one ").is_none());
        std::fs::write(&p, "a:x\na:y\n").unwrap();
        assert!(
            read(&p)
                .unwrap_err()
                .contains("keys:2: the name `a` is given twice")
        );
        std::fs::write(&p, "ops:\n").unwrap();
        assert!(read(&p).unwrap_err().contains("keys:1: expected"));
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(read(&p).unwrap_err().contains("holds no keys"));
    }
}

//! Crash-safe file writing: write to a temporary name in the same directory, fsync, rename.
//! A crash never leaves a half-written file under the final name.

use crate::error::{CoreError, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(|e| CoreError::io(path, e))
}

/// Fsyncs a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(_) => Ok(()),
    }
}

/// Replaces directory `dst` with the finished directory `staged` (same parent), so readers see
/// either the old checkpoint or the new one, never a mix.
pub fn replace_dir(staged: &Path, dst: &Path) -> Result<()> {
    let old = PathBuf::from(format!("{}.old", tmp_name(dst).display()));
    let had_old = dst.exists();
    if had_old {
        let _ = fs::remove_dir_all(&old);
        fs::rename(dst, &old).map_err(|e| CoreError::io(dst, e))?;
    }
    fs::rename(staged, dst).map_err(|e| CoreError::io(dst, e))?;
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    sync_dir(dst.parent().unwrap_or(Path::new("."))).map_err(|e| CoreError::io(dst, e))
}

/// Repairs what a crash during [`replace_dir`] can leave: if `dst` is missing but the previous
/// version was moved aside, it is moved back; abandoned staging directories are removed.
pub fn recover_dir(dst: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (dst.parent(), dst.file_name()) else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    let mut leftovers: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    leftovers.sort();
    for p in leftovers {
        let is_old = p.extension().is_some_and(|e| e == "old");
        if is_old && !dst.exists() {
            fs::rename(&p, dst).map_err(|e| CoreError::io(dst, e))?;
        } else {
            let _ = fs::remove_dir_all(&p);
        }
    }
    Ok(())
}

/// A sibling name for staging `path`: `.name.tmp-<pid>`.
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| CoreError::io(path, e))
}

/// Reads a JSON file, naming it in the error.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|source| CoreError::Json {
        path: path.to_path_buf(),
        source,
    })
}

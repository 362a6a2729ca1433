//! Report files are written under a temporary name in the same directory and then renamed over
//! the final name, so a reader (a dashboard, a script polling the directory) never sees half a
//! file, and a job that fails midway leaves the previous report whole.

use std::path::{Path, PathBuf};

/// The temporary sibling of `path`: hidden, and unique to this process.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Runs `write` on a temporary path beside `path`, then renames the result to `path`. On
/// failure the temporary file is removed and `path` is untouched.
pub(crate) fn atomically<T>(
    path: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let tmp = temporary(path);
    match write(&tmp) {
        Ok(v) => {
            std::fs::rename(&tmp, path).map_err(|e| {
                anyhow::anyhow!("renaming {} to {}: {e}", tmp.display(), path.display())
            })?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("writing {}", path.display())))
        }
    }
}

/// [`atomically`] for bytes already in memory.
pub(crate) fn write(path: &Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    atomically(path, |tmp| Ok(std::fs::write(tmp, bytes)?))
}

/// [`atomically`] for rows serialised as CSV with a header.
pub(crate) fn write_csv<T: serde::Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    atomically(path, |tmp| {
        let mut w = csv::Writer::from_path(tmp)?;
        for r in rows {
            w.serialize(r)?;
        }
        w.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("review.json");
        write(&path, "old").unwrap();
        let r: anyhow::Result<()> = atomically(&path, |tmp| {
            std::fs::write(tmp, "half")?;
            anyhow::bail!("disk full")
        });
        assert!(r.unwrap_err().to_string().contains("review.json"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("review.json")]);
        write(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }
}

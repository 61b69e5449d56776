//! Crash-safe output: everything is written under a staging path, flushed to disk, and renamed into place
//! at the end, so a failed or killed command — or a power cut — never leaves a partial artifact behind.
//!
//! Every publication follows the same order: write the temporary → fsync it → rename it into place →
//! fsync the directory that holds it (the rename itself is only durable once its directory is). The
//! helpers below are the one place that does this; everything that publishes a file goes through them.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A staging directory inside `out` whose files are moved into `out` by [`Staging::commit`].
/// Dropping it without committing removes the staged files (and `out` itself if this call created it).
pub struct Staging {
    out: PathBuf,
    dir: PathBuf,
    created_out: bool,
    committed: bool,
}

impl Staging {
    pub fn new(out: &Path) -> Result<Self> {
        let created_out = !out.exists();
        fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let dir = out.join(format!(".staging-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging {
            out: out.to_path_buf(),
            dir,
            created_out,
            committed: false,
        })
    }

    /// Path of a file in the staging area; write it there, it reaches `out` on commit.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Moves the staged files into `out` in the order given (put the file that marks completion, such as a
    /// manifest, last) and removes the staging area. Each file is on disk before it is renamed, and each
    /// rename is on disk before the next, so after a crash a present marker implies the files before it.
    pub fn commit(mut self, names_in_order: &[&str]) -> Result<()> {
        if self.created_out {
            sync_dir(&parent_dir(&self.out))?;
        }
        for name in names_in_order {
            let from = self.dir.join(name);
            let to = self.out.join(name);
            sync_tree(&from)?;
            fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
            sync_dir(&self.out)?;
        }
        fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
        if self.created_out {
            let _ = fs::remove_dir(&self.out);
        }
    }
}

/// Writes `bytes` to `path` through a temporary sibling, fsync'd before and after the rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| Error::io(&tmp, e));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(&parent_dir(path))
}

/// Publishes the complete directory `tmp` as `target`, replacing any previous `target` without a moment
/// in which neither exists: the old one is renamed aside ([`aside_path`]), the new one renamed in, and only
/// then is the old one deleted. A crash between the two renames leaves the old copy under its aside name,
/// where readers look for it ([`published_or_aside`]).
pub fn publish_dir(tmp: &Path, target: &Path) -> Result<()> {
    sync_tree(tmp)?;
    let parent = parent_dir(target);
    let aside = aside_path(target);
    if target.exists() {
        if aside.exists() {
            // left by an earlier crash after its rename-in: `target` is the complete copy
            fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
        }
        fs::rename(target, &aside).map_err(|e| Error::io(target, e))?;
    }
    fs::rename(tmp, target).map_err(|e| Error::io(target, e))?;
    sync_dir(&parent)?;
    if aside.exists() {
        fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
        sync_dir(&parent)?;
    }
    Ok(())
}

/// Where [`publish_dir`] keeps the previous `target` while it swaps in the new one: `.old-<name>` beside it.
pub fn aside_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    parent_dir(target).join(format!("{ASIDE_PREFIX}{name}"))
}

/// The prefix of [`aside_path`] names.
pub const ASIDE_PREFIX: &str = ".old-";

/// `target` if it exists, else the copy a crash inside [`publish_dir`] left aside, else `None`.
pub fn published_or_aside(target: &Path) -> Option<PathBuf> {
    if target.exists() {
        return Some(target.to_path_buf());
    }
    let aside = aside_path(target);
    aside.exists().then_some(aside)
}

/// Flushes a file's contents and metadata to disk.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Flushes a directory's entries to disk: a file created, renamed or removed in it survives a crash only
/// after this.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Flushes a file, or a directory with everything inside it, to disk.
pub fn sync_tree(path: &Path) -> Result<()> {
    if path.is_dir() {
        for entry in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            sync_tree(&entry.path())?;
        }
        sync_dir(path)
    } else {
        sync_file(path)
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_file(&path, b"one").unwrap();
        write_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    fn dir_with(root: &Path, name: &str, text: &str) -> PathBuf {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), text).unwrap();
        d
    }

    #[test]
    fn publish_dir_replaces_a_previous_copy_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("step-1");
        publish_dir(&dir_with(root.path(), ".tmp-a", "old"), &target).unwrap();
        publish_dir(&dir_with(root.path(), ".tmp-b", "new"), &target).unwrap();
        assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "new");
        let names: Vec<_> = fs::read_dir(root.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the target is left: {names:?}");
    }

    #[test]
    fn a_crash_between_the_renames_leaves_the_old_copy_findable() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("step-1");
        publish_dir(&dir_with(root.path(), ".tmp-a", "old"), &target).unwrap();
        // the state right after publish_dir's first rename, had the process died there
        fs::rename(&target, aside_path(&target)).unwrap();
        let found = published_or_aside(&target).expect("a complete copy exists");
        assert_eq!(fs::read_to_string(found.join("f")).unwrap(), "old");
        // the next publication completes and removes the stale copy
        publish_dir(&dir_with(root.path(), ".tmp-b", "new"), &target).unwrap();
        assert_eq!(published_or_aside(&target), Some(target.clone()));
        assert!(!aside_path(&target).exists());
        assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "new");
    }

    #[test]
    fn staged_files_reach_out_in_order() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let staging = Staging::new(&out).unwrap();
        fs::write(staging.path("data"), "d").unwrap();
        fs::write(staging.path("manifest"), "m").unwrap();
        staging.commit(&["data", "manifest"]).unwrap();
        assert_eq!(fs::read_to_string(out.join("manifest")).unwrap(), "m");
        let names: Vec<_> = fs::read_dir(&out).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "the staging area is gone: {names:?}");
    }
}

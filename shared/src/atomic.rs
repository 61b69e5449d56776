//! Crash-safe output: everything is written under a staging path and renamed into place at the end, so a
//! failed or killed command never leaves a partial artifact behind.

use std::fs;
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
    /// manifest, last) and removes the staging area.
    pub fn commit(mut self, names_in_order: &[&str]) -> Result<()> {
        for name in names_in_order {
            let from = self.dir.join(name);
            let to = self.out.join(name);
            fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
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

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

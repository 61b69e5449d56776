//! Where a worker may write: a job's directories must lie inside the worker's root (the sweep directory),
//! because a worker creates, truncates and deletes files there. A spec from a peer that names any other
//! place is refused, whatever the peer.

use std::path::{Component, Path, PathBuf};

/// `root` made absolute with symlinks resolved, once, when the worker starts.
pub fn canonical_root(root: &Path) -> Result<PathBuf, String> {
    root.canonicalize()
        .map_err(|e| format!("the worker's job root {}: {e}", root.display()))
}

/// Ok when `path` is absolute, has no `..`, and, with the symlinks of its existing part resolved, lies
/// inside `root` (already canonical).
pub fn check_inside(root: &Path, what: &str, path: &Path) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "refused: the {what} {} {why} (this worker only runs jobs inside {})",
            path.display(),
            root.display()
        ))
    };
    if !path.is_absolute() {
        return refuse("is not absolute");
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return refuse("contains `..`");
    }
    // the part that exists may contain symlinks; what does not exist yet cannot
    let mut existing = path;
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return refuse("has no existing ancestor"),
        }
    }
    let mut resolved = match existing.canonicalize() {
        Ok(p) => p,
        Err(e) => return refuse(&format!("cannot be resolved ({e})")),
    };
    resolved.extend(rest.iter().rev());
    if resolved.starts_with(root) {
        Ok(())
    } else {
        refuse(&format!("resolves to {}", resolved.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_root_pass_and_escapes_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let root_dir = base.path().join("sweep");
        std::fs::create_dir_all(root_dir.join("jobs")).unwrap();
        let root = canonical_root(&root_dir).unwrap();
        assert!(check_inside(&root, "job directory", &root.join("jobs/seed=0")).is_ok());
        assert!(check_inside(&root, "job directory", &root.join("jobs/not/yet/made")).is_ok());
        assert!(check_inside(&root, "data directory", &root).is_ok());

        let outside = base.path().join("elsewhere");
        let err = check_inside(&root, "job directory", &outside).unwrap_err();
        assert!(
            err.contains("refused: the job directory") && err.contains("resolves to"),
            "{err}"
        );
        let err = check_inside(&root, "job directory", &root.join("jobs/../../x")).unwrap_err();
        assert!(err.contains("`..`"), "{err}");
        let err = check_inside(&root, "job directory", Path::new("jobs/seed=0")).unwrap_err();
        assert!(err.contains("not absolute"), "{err}");
        // a symlink inside the root that points out of it
        std::os::unix::fs::symlink(base.path(), root.join("jobs/link")).unwrap();
        let err =
            check_inside(&root, "job directory", &root.join("jobs/link/escaped")).unwrap_err();
        assert!(err.contains("resolves to"), "{err}");
        // a sibling whose name merely starts with the root's
        std::fs::create_dir_all(base.path().join("sweep2")).unwrap();
        assert!(check_inside(&root, "job directory", &base.path().join("sweep2/j")).is_err());
    }
}

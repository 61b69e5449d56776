//! Where the shipped configs live at run time. Nothing here depends on where the binary was built, so a
//! relocated binary (the bundle of `launch/run.sh bundle`) finds its own `configs/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Set by the bundle's `bin/storm` wrapper (and usable by hand): the directory holding `configs/`.
pub const HOME_ENV: &str = "STORM_HOME";

/// The shipped config `name` (e.g. `dj30.toml`), searched in `$STORM_HOME/configs`, then the `configs/` of the
/// directory above the binary's (the bundle layout `<root>/libexec/storm`), then `./configs`.
pub fn shipped_config(name: &str) -> Result<PathBuf> {
    let candidates = config_dirs(
        std::env::var_os(HOME_ENV).map(PathBuf::from),
        std::env::current_exe().ok(),
        std::env::current_dir().ok(),
    );
    find_in(&candidates, name)
}

fn config_dirs(home: Option<PathBuf>, exe: Option<PathBuf>, cwd: Option<PathBuf>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = home {
        dirs.push(home.join("configs"));
    }
    if let Some(root) = exe.as_deref().and_then(Path::parent).and_then(Path::parent) {
        dirs.push(root.join("configs"));
    }
    if let Some(cwd) = cwd {
        dirs.push(cwd.join("configs"));
    }
    dirs
}

fn find_in(dirs: &[PathBuf], name: &str) -> Result<PathBuf> {
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Ok(found);
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "cannot find the shipped config {name}: searched {} (set {HOME_ENV} to the directory holding configs/, \
         or run from the repository root)",
        searched.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_first_then_the_bundle_root_then_the_current_directory() {
        let dirs = config_dirs(
            Some("/h".into()),
            Some("/b/libexec/storm".into()),
            Some("/c".into()),
        );
        let want: Vec<PathBuf> = ["/h/configs", "/b/configs", "/c/configs"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, want);
    }

    #[test]
    fn the_first_directory_holding_the_file_wins_and_a_miss_names_every_place() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("x.toml"), "").unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_in(&dirs, "x.toml").unwrap(), b.path().join("x.toml"));
        let err = find_in(&dirs, "y.toml").unwrap_err().to_string();
        assert!(err.contains(&a.path().display().to_string()), "{err}");
        assert!(err.contains(&b.path().display().to_string()), "{err}");
        assert!(err.contains(HOME_ENV), "{err}");
    }
}

//! Incremental reading of a file another process appends to (the child's stdout): each call returns the
//! complete lines added since the last one. A file that shrinks or is replaced is read again from the start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    pub fn new(path: &Path) -> Self {
        Tail {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    /// Complete lines appended since the last call (none while the file does not exist).
    pub fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_string).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }
}

/// The last `n` non-empty lines of a file (for error messages), joined with newlines.
pub fn last_lines(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn returns_complete_lines_once_and_restarts_after_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.csv");
        let mut tail = Tail::new(&path);
        assert!(tail.new_lines().is_empty(), "missing file");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "a\nb\npart").unwrap();
        f.flush().unwrap();
        assert_eq!(tail.new_lines(), vec!["a", "b"]);
        assert!(tail.new_lines().is_empty());
        write!(f, "ial\nc\n").unwrap();
        f.flush().unwrap();
        assert_eq!(tail.new_lines(), vec!["partial", "c"]);
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(
            tail.new_lines(),
            vec!["x"],
            "a shorter file is read from the start"
        );
    }

    #[test]
    fn last_lines_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("err");
        std::fs::write(&path, "1\n2\n\n3\n4\n\n").unwrap();
        assert_eq!(last_lines(&path, 2), "3\n4");
        assert_eq!(last_lines(&dir.path().join("none"), 2), "");
    }
}

//! The fault-injection test hook read by `storm job`:
//!
//! `STORM_FAULT=<job-id-glob>:<panic|error|exit>:<attempts>[,<more>]`
//!
//! A job whose id matches the glob (`*` any run of characters, `?` one character) faults on its first
//! `<attempts>` attempts (`always` for every attempt): it pretrains for half of its `max_steps` (so a
//! checkpoint exists), then panics, returns an error, or exits with status 86 without writing a result.
//! The retry resumes from that checkpoint. Unset in normal use; documented in docs/ARCHITECTURE.md.

/// Environment variable holding the fault specs.
pub const FAULT_ENV: &str = "STORM_FAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `panic!` in the child (exit status 101).
    Panic,
    /// The job returns an error (exit status 1).
    Error,
    /// The child exits abruptly with status 86 (no unwinding, no result).
    Exit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub pattern: String,
    pub kind: FaultKind,
    /// Fault on attempts 1..=attempts.
    pub attempts: u32,
}

/// Parses a comma-separated list of fault specs.
pub fn parse(spec: &str) -> Result<Vec<Fault>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|one| {
            let mut parts = one.rsplitn(3, ':');
            let (attempts, kind, pattern) = match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(k), Some(p)) if !p.is_empty() => (a, k, p),
                _ => {
                    return Err(format!(
                        "{FAULT_ENV}: `{one}` must look like <job-id-glob>:<panic|error|exit>:<attempts>"
                    ))
                }
            };
            let kind = match kind {
                "panic" => FaultKind::Panic,
                "error" => FaultKind::Error,
                "exit" => FaultKind::Exit,
                other => {
                    return Err(format!(
                        "{FAULT_ENV}: unknown fault `{other}` in `{one}`; expected panic, error or exit"
                    ))
                }
            };
            let attempts = match attempts {
                "always" => u32::MAX,
                n => n.parse::<u32>().map_err(|_| {
                    format!("{FAULT_ENV}: attempts `{n}` in `{one}` must be a number or `always`")
                })?,
            };
            Ok(Fault {
                pattern: pattern.to_string(),
                kind,
                attempts,
            })
        })
        .collect()
}

/// The fault to inject into this attempt of this job, if any (the first matching spec wins).
pub fn active(faults: &[Fault], job: &str, attempt: u32) -> Option<FaultKind> {
    faults
        .iter()
        .find(|f| attempt <= f.attempts && glob_match(&f.pattern, job))
        .map(|f| f.kind)
}

/// Shell-style glob: `*` matches any run of characters (also empty), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*seed=1", "codebook_size=8_seed=1"));
        assert!(!glob_match("*seed=1", "codebook_size=8_seed=11"));
        assert!(glob_match("*seed=1*", "codebook_size=8_seed=11"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
    }

    #[test]
    fn specs_parse_and_select_attempts() {
        let f = parse("*seed=1:panic:1, lr=*:error:always ,x:y:exit:2").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[2].pattern, "x:y", "the glob may contain colons");
        assert_eq!(active(&f, "a_seed=1", 1), Some(FaultKind::Panic));
        assert_eq!(active(&f, "a_seed=1", 2), None);
        assert_eq!(active(&f, "lr=3_seed=0", 7), Some(FaultKind::Error));
        assert_eq!(active(&f, "x:y", 2), Some(FaultKind::Exit));
        assert_eq!(active(&f, "x:y", 3), None);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert!(parse("job:boom:1")
            .unwrap_err()
            .contains("unknown fault `boom`"));
        assert!(parse("job:panic:x").unwrap_err().contains("attempts `x`"));
        assert!(parse("panic:1").unwrap_err().contains("must look like"));
    }
}

//! The result of `storm bench gpu`: one [`Check`] per step, written as gpu-report.md and gpu-report.json.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
        }
    }
}

pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub values: BTreeMap<String, Value>,
    pub seconds: f64,
}

impl Check {
    pub fn passed(
        name: &'static str,
        detail: String,
        values: BTreeMap<String, Value>,
        seconds: f64,
    ) -> Check {
        Check {
            name,
            status: Status::Passed,
            detail,
            values,
            seconds,
        }
    }
    pub fn failed(name: &'static str, why: &str) -> Check {
        Check::without_values(name, Status::Failed, why)
    }
    pub fn skipped(name: &'static str, why: &str) -> Check {
        Check::without_values(name, Status::Skipped, why)
    }
    fn without_values(name: &'static str, status: Status, why: &str) -> Check {
        Check {
            name,
            status,
            detail: why.to_string(),
            values: BTreeMap::new(),
            seconds: 0.0,
        }
    }
    pub fn is_passed(&self) -> bool {
        self.status == Status::Passed
    }
    pub fn status_word(&self) -> &'static str {
        self.status.word()
    }
}

pub struct Report {
    device: String,
    facts: BTreeMap<String, String>,
    checks: Vec<Check>,
    date: String,
}

impl Report {
    pub fn new(device: &str, facts: BTreeMap<String, String>) -> Report {
        Report {
            device: device.to_string(),
            facts,
            checks: Vec::new(),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Failed)
            .count()
    }

    pub fn failed_names(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Failed)
            .map(|c| c.name)
            .collect()
    }

    /// passed, failed, or skipped (nothing failed and at least one check skipped).
    fn verdict(&self) -> &'static str {
        if self.failures() > 0 {
            "failed"
        } else if self.checks.iter().any(|c| c.status == Status::Skipped) {
            "skipped"
        } else {
            "passed"
        }
    }

    pub fn summary_table(&self) -> String {
        let mut out = String::from("| check | status | seconds | detail |\n|---|---|---|---|\n");
        for c in &self.checks {
            let detail = c.detail.lines().next().unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {:.1} | {} |\n",
                c.name,
                c.status.word(),
                c.seconds,
                detail.replace('|', "\\|")
            ));
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "# storm GPU check: {}\n\n{} on `{}`, storm {}\n\n## Device\n\n",
            self.verdict(),
            self.date,
            self.device,
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in &self.facts {
            out.push_str(&format!("- {k}: {v}\n"));
        }
        out.push_str("\n## Checks\n\n");
        out.push_str(&self.summary_table());
        for c in self
            .checks
            .iter()
            .filter(|c| !c.values.is_empty() || c.detail.contains('\n'))
        {
            out.push_str(&format!("\n### {} ({})\n\n", c.name, c.status.word()));
            if c.detail.contains('\n') {
                out.push_str(&format!("```\n{}\n```\n", c.detail));
            }
            for (k, v) in &c.values {
                match v {
                    Value::String(s) if s.contains('\n') => out.push_str(&format!("\n{s}\n\n")),
                    Value::String(s) => out.push_str(&format!("- {k}: {s}\n")),
                    other => out.push_str(&format!("- {k}: {other}\n")),
                }
            }
        }
        out
    }

    fn json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "status": c.status.word().to_lowercase(),
                    "seconds": c.seconds,
                    "detail": c.detail,
                    "values": c.values,
                })
            })
            .collect();
        json!({
            "verdict": self.verdict(),
            "date": self.date,
            "device": self.device,
            "storm_version": env!("CARGO_PKG_VERSION"),
            "facts": self.facts,
            "checks": checks,
        })
    }

    /// Writes gpu-report.md and gpu-report.json into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let md = dir.join("gpu-report.md");
        let json = dir.join("gpu-report.json");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let text = serde_json::to_string_pretty(&self.json())?;
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
        Ok((md, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_failed_if_any_check_failed_else_skipped_if_any_skipped() {
        let mut r = Report::new("cuda", BTreeMap::new());
        r.push(Check::passed("a", "ok".into(), BTreeMap::new(), 1.0));
        assert_eq!(r.verdict(), "passed");
        r.push(Check::skipped("b", "no GPU"));
        assert_eq!(r.verdict(), "skipped");
        r.push(Check::failed("c", "broken | badly\nsecond line"));
        assert_eq!((r.verdict(), r.failures()), ("failed", 1));
        assert_eq!(r.failed_names(), vec!["c"]);
        let table = r.summary_table();
        assert!(
            table.contains("| c | FAILED | 0.0 | broken \\| badly |"),
            "{table}"
        );
        assert!(r.markdown().contains("second line"));
        assert_eq!(r.json()["checks"][2]["status"], "failed");
    }
}

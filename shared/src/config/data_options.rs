//! Data options added after the first round (issue 18): what `data prepare` does with a missing value.
//! Each defaults to the behaviour before the option existed.

use serde::{Deserialize, Serialize};

/// What `storm data prepare` does with an empty price or volume field (config `data.missing`,
/// flag `--missing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingPolicy {
    /// Refuse the file, naming the first offending lines and the total count.
    #[default]
    Error,
    /// Remove every row with a missing field.
    Drop,
    /// Carry the previous day's value of the field forward within the ticker; a missing volume becomes 0.
    /// A ticker's rows before its first row with every price drop out.
    Ffill,
}

impl MissingPolicy {
    pub const ALL: [MissingPolicy; 3] = [
        MissingPolicy::Error,
        MissingPolicy::Drop,
        MissingPolicy::Ffill,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MissingPolicy::Error => "error",
            MissingPolicy::Drop => "drop",
            MissingPolicy::Ffill => "ffill",
        }
    }
}

impl std::fmt::Display for MissingPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MissingPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MissingPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown missing-value policy `{s}`; expected error, drop or ffill")
            })
    }
}

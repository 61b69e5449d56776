//! The process-group env contract: torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
//! MASTER_ADDR, MASTER_PORT), else Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODELIST; the
//! master is the first host of the node list). torchrun's win when both are set. `storm launch` sets
//! torchrun's for its children.

use crate::error::{Error, Result};

/// Port of the rendezvous when MASTER_PORT is unset (torchrun's default).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Where this process sits in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub local_rank: usize,
    pub world_size: usize,
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl DistEnv {
    /// The contract of this process, or `None` when neither torchrun's nor Slurm's variables are set.
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The contract read through `get` (testable without touching the process environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let env = if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
            let rank = num(&get, "RANK")?;
            let world_size = num(&get, "WORLD_SIZE")?;
            let local_rank = opt_num(&get, "LOCAL_RANK")?.unwrap_or(rank);
            let local_world_size = opt_num(&get, "LOCAL_WORLD_SIZE")?.unwrap_or(world_size);
            DistEnv {
                rank,
                local_rank,
                world_size,
                local_world_size,
                master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                master_port: port(&get)?,
            }
        } else if get("SLURM_PROCID").is_some() {
            let rank = num(&get, "SLURM_PROCID")?;
            let world_size = num(&get, "SLURM_NTASKS")?;
            let local_rank = opt_num(&get, "SLURM_LOCALID")?.unwrap_or(0);
            let local_world_size = match get("SLURM_NTASKS_PER_NODE") {
                Some(v) => leading_number(&v).unwrap_or(1),
                None => world_size,
            };
            let master_addr = match get("MASTER_ADDR") {
                Some(a) => a,
                None => {
                    let list = get("SLURM_NODELIST")
                        .or_else(|| get("SLURM_JOB_NODELIST"))
                        .ok_or_else(|| {
                            Error::DistEnv(
                                "SLURM_PROCID is set but SLURM_NODELIST is not (and no MASTER_ADDR)".into(),
                            )
                        })?;
                    first_host(&list)?
                }
            };
            DistEnv {
                rank,
                local_rank,
                world_size,
                local_world_size,
                master_addr,
                master_port: port(&get)?,
            }
        } else {
            return Ok(None);
        };
        env.check()?;
        Ok(Some(env))
    }

    fn check(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::DistEnv("WORLD_SIZE must be at least 1".into()));
        }
        if self.world_size > MAX_WORLD_SIZE {
            return Err(Error::DistEnv(format!(
                "WORLD_SIZE {} is more ranks than storm supports ({MAX_WORLD_SIZE})",
                self.world_size
            )));
        }
        if self.rank >= self.world_size {
            return Err(Error::DistEnv(format!(
                "RANK {} is out of range for WORLD_SIZE {}",
                self.rank, self.world_size
            )));
        }
        if self.local_rank >= self.local_world_size.max(1) && self.local_world_size > 0 {
            return Err(Error::DistEnv(format!(
                "LOCAL_RANK {} is out of range for LOCAL_WORLD_SIZE {}",
                self.local_rank, self.local_world_size
            )));
        }
        Ok(())
    }

    pub fn is_rank0(&self) -> bool {
        self.rank == 0
    }
}

/// Far above any data-parallel job storm runs; it bounds what rank 0 allocates per rank.
pub const MAX_WORLD_SIZE: usize = 1 << 16;

fn num(get: &impl Fn(&str) -> Option<String>, key: &str) -> Result<usize> {
    opt_num(get, key)?.ok_or_else(|| Error::DistEnv(format!("{key} is not set")))
}

fn opt_num(get: &impl Fn(&str) -> Option<String>, key: &str) -> Result<Option<usize>> {
    get(key)
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| Error::DistEnv(format!("{key}={v:?} is not a non-negative integer")))
        })
        .transpose()
}

fn port(get: &impl Fn(&str) -> Option<String>) -> Result<u16> {
    match get("MASTER_PORT") {
        None => Ok(DEFAULT_MASTER_PORT),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::DistEnv(format!("MASTER_PORT={v:?} is not a port number"))),
    }
}

/// `SLURM_NTASKS_PER_NODE` looks like `4` or `4(x2)`.
fn leading_number(v: &str) -> Option<usize> {
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// First host of a Slurm node list: `host`, `a,b`, `node[01-04]`, `node[3,5-7],gpu1`.
pub fn first_host(list: &str) -> Result<String> {
    let list = list.trim();
    let bad = || Error::DistEnv(format!("cannot read the Slurm node list {list:?}"));
    // the first entry ends at the first comma outside brackets
    let mut depth = 0usize;
    let mut end = list.len();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or_else(bad)?,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let entry = &list[..end];
    let Some(open) = entry.find('[') else {
        return if entry.is_empty() {
            Err(bad())
        } else {
            Ok(entry.to_string())
        };
    };
    let close = entry.rfind(']').filter(|c| *c > open).ok_or_else(bad)?;
    let prefix = &entry[..open];
    let suffix = &entry[close + 1..];
    let range = entry[open + 1..close].split(',').next().ok_or_else(bad)?;
    let first = range.split('-').next().ok_or_else(bad)?;
    if prefix.is_empty() || first.is_empty() || !first.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(format!("{prefix}{first}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn no_contract_means_single_process() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("PATH", "/bin")]).unwrap(), None);
    }

    #[test]
    fn a_huge_world_size_is_an_error() {
        let e = read(&[("RANK", "0"), ("WORLD_SIZE", "18446744073709551615")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("more ranks than storm supports"), "{e}");
    }

    #[test]
    fn torchrun_variables_are_read() {
        let env = read(&[
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            env,
            DistEnv {
                rank: 3,
                local_rank: 1,
                world_size: 4,
                local_world_size: 2,
                master_addr: "node7".into(),
                master_port: 1234
            }
        );
        let defaults = read(&[("RANK", "0"), ("WORLD_SIZE", "2")])
            .unwrap()
            .unwrap();
        assert_eq!(defaults.master_addr, "127.0.0.1");
        assert_eq!(defaults.master_port, DEFAULT_MASTER_PORT);
        assert_eq!((defaults.local_rank, defaults.local_world_size), (0, 2));
    }

    #[test]
    fn slurm_variables_are_read_and_torchrun_wins() {
        let slurm = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "4(x2)"),
            ("SLURM_NODELIST", "gpu[03-04]"),
        ];
        let env = read(&slurm).unwrap().unwrap();
        assert_eq!(
            (
                env.rank,
                env.local_rank,
                env.world_size,
                env.local_world_size
            ),
            (5, 1, 8, 4)
        );
        assert_eq!(env.master_addr, "gpu03");
        let mut both = slurm.to_vec();
        both.extend([("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]);
        let env = read(&both).unwrap().unwrap();
        assert_eq!((env.rank, env.world_size), (0, 2));
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let err = read(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert!(err.to_string().contains("RANK"), "{err}");
        let err = read(&[("RANK", "2"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err =
            read(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "99999")]).unwrap_err();
        assert!(err.to_string().contains("MASTER_PORT"), "{err}");
        let err = read(&[("WORLD_SIZE", "2")]).unwrap_err();
        assert!(err.to_string().contains("RANK is not set"), "{err}");
        let err = read(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap_err();
        assert!(err.to_string().contains("SLURM_NODELIST"), "{err}");
    }

    #[test]
    fn first_host_of_slurm_node_lists() {
        assert_eq!(first_host("cn1").unwrap(), "cn1");
        assert_eq!(first_host("a,b").unwrap(), "a");
        assert_eq!(first_host("node[01-04]").unwrap(), "node01");
        assert_eq!(first_host("node[3,5-7],gpu1").unwrap(), "node3");
        assert_eq!(first_host("rack[2-3]-n").unwrap(), "rack2-n");
        assert!(first_host("").is_err());
        assert!(first_host("node[01-04").is_err());
        assert!(first_host("[1-2]").is_err());
    }
}

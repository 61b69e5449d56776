//! [`EpisodeStarts`]: where each training episode begins. Every reset draws a fresh seeded start day, so
//! over training the episodes sweep the whole training period instead of replaying a few fixed windows;
//! it also counts what the episodes covered ([`Coverage`]), which the trading report states.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the training episodes saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Coverage {
    /// Episodes started (the first of each environment included).
    pub episodes: usize,
    /// Distinct start days among them.
    pub distinct_starts: usize,
    /// Days of the series inside at least one episode.
    pub days_seen: usize,
    /// Days of the series.
    pub days: usize,
}

/// A seeded stream of episode windows `start..=start + steps` over a series of `days` days.
#[derive(Debug, Clone)]
pub struct EpisodeStarts {
    rng: ChaCha8Rng,
    steps: usize,
    last_start: usize,
    started: Vec<bool>,
    seen: Vec<bool>,
    episodes: usize,
}

impl EpisodeStarts {
    /// Windows of `window` steps (at most the whole series) over `days` days, drawn from `seed`.
    pub fn new(days: usize, window: usize, seed: u64) -> Result<Self> {
        if days < 2 || window == 0 {
            return Err(Error::Trading(format!(
                "episodes of {window} steps need a window ≥ 1 over at least 2 days (got {days})"
            )));
        }
        let steps = window.min(days - 1);
        Ok(EpisodeStarts {
            rng: ChaCha8Rng::seed_from_u64(seed),
            steps,
            last_start: days - 1 - steps,
            started: vec![false; days],
            seen: vec![false; days],
            episodes: 0,
        })
    }

    /// The next episode's first and last day.
    pub fn next_window(&mut self) -> (usize, usize) {
        let start = self.rng.random_range(0..=self.last_start);
        let end = start + self.steps;
        self.started[start] = true;
        self.seen[start..=end].iter_mut().for_each(|d| *d = true);
        self.episodes += 1;
        (start, end)
    }

    pub fn coverage(&self) -> Coverage {
        let count = |v: &[bool]| v.iter().filter(|&&b| b).count();
        Coverage {
            episodes: self.episodes,
            distinct_starts: count(&self.started),
            days_seen: count(&self.seen),
            days: self.seen.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_stay_inside_the_series_and_cover_it() {
        let mut s = EpisodeStarts::new(50, 10, 3).unwrap();
        let windows: Vec<_> = (0..200).map(|_| s.next_window()).collect();
        assert!(windows.iter().all(|&(a, b)| b == a + 10 && b <= 49));
        let c = s.coverage();
        assert_eq!((c.episodes, c.days), (200, 50));
        // 40 possible starts, 200 draws: the count matches the windows drawn, and nearly every start occurs.
        let mut starts: Vec<usize> = windows.iter().map(|w| w.0).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(c.distinct_starts, starts.len());
        assert!(c.distinct_starts > 30, "{c:?}");
        assert_eq!(c.days_seen, 50, "every day lies in some episode");
        // Seeded.
        let mut again = EpisodeStarts::new(50, 10, 3).unwrap();
        assert_eq!(
            (0..200).map(|_| again.next_window()).collect::<Vec<_>>(),
            windows
        );
    }

    #[test]
    fn a_window_longer_than_the_series_is_the_whole_series() {
        let mut s = EpisodeStarts::new(5, 100, 0).unwrap();
        assert_eq!(s.next_window(), (0, 4));
        assert_eq!(s.coverage().days_seen, 5);
        assert!(EpisodeStarts::new(1, 3, 0).is_err());
        assert!(EpisodeStarts::new(5, 0, 0).is_err());
    }
}

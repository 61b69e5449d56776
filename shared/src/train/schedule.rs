//! Learning-rate schedule: linear warm-up from 0 to the peak, then linear decay to 0 at the last step
//! (paper §5.2: warm-up 100 epochs, decay to 0 by epoch 1000).

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearWarmupDecay {
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LinearWarmupDecay {
    /// Learning rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let s = step as f64 + 1.0;
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return self.peak * s / self.warmup_steps as f64;
        }
        let decay = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let done = (step + 1).saturating_sub(self.warmup_steps) as f64;
        (self.peak * (1.0 - done / decay)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_zero() {
        let s = LinearWarmupDecay {
            peak: 1.0,
            warmup_steps: 4,
            total_steps: 12,
        };
        let lrs: Vec<f64> = (0..12).map(|i| s.lr(i)).collect();
        assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert!((lrs[4] - 0.875).abs() < 1e-12);
        assert_eq!(lrs[11], 0.0);
        assert!(lrs.windows(2).skip(3).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn no_warmup_starts_at_peak_minus_one_step() {
        let s = LinearWarmupDecay {
            peak: 2.0,
            warmup_steps: 0,
            total_steps: 4,
        };
        assert_eq!(s.lr(0), 1.5);
        assert_eq!(s.lr(3), 0.0);
    }
}

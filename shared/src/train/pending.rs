//! Loss-log rows whose loss terms are still on the device. A step's terms are kept as tensors (no host
//! sync); [`PendingRows::take`] copies every buffered term to the host in one transfer, averages them over
//! ranks in one collective, and returns the rows in step order. The trainer takes them once per log
//! interval, before every checkpoint and at the end of the run, so every step still gets its row.

use tch::{Device, Kind, Tensor};

use super::loss_log::LossRow;
use super::replicas::Replicas;
use crate::error::{Error, Result};

struct Pending {
    row: LossRow,
    names: Vec<&'static str>,
    /// One f64 element per term, on the training device.
    values: Vec<Tensor>,
}

#[derive(Default)]
pub struct PendingRows {
    rows: Vec<Pending>,
}

impl PendingRows {
    /// Buffers `row` (its `terms` are ignored) with the step's loss terms as they come from the model.
    pub fn push(&mut self, row: LossRow, terms: &[(&'static str, Tensor)]) {
        let values = terms
            .iter()
            .map(|(_, t)| t.detach().to_kind(Kind::Double).reshape([1]))
            .collect();
        self.rows.push(Pending {
            row,
            names: terms.iter().map(|(n, _)| *n).collect(),
            values,
        });
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The buffered rows in step order with their terms on the host (means over ranks); the buffer is empty
    /// afterwards. Every rank must call it at the same steps (it is a collective when W > 1).
    pub fn take(&mut self, replicas: &Replicas) -> Result<Vec<LossRow>> {
        let pending = std::mem::take(&mut self.rows);
        let all: Vec<&Tensor> = pending.iter().flat_map(|p| &p.values).collect();
        let mut values: Vec<f64> = if all.is_empty() {
            Vec::new()
        } else {
            Vec::<f64>::try_from(&Tensor::cat(&all, 0).to_device(Device::Cpu))?
        };
        if values.len() != all.len() {
            return Err(Error::Training(format!(
                "{} buffered loss terms came back as {} values",
                all.len(),
                values.len()
            )));
        }
        replicas.mean_f64(&mut values)?;
        let mut next = values.into_iter();
        Ok(pending
            .into_iter()
            .map(|p| LossRow {
                terms: p.names.into_iter().zip(next.by_ref()).collect(),
                ..p.row
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::replicas::tests::PeerOfTwo;

    fn head(step: u64) -> LossRow {
        LossRow {
            step,
            epoch: 1,
            lr: 0.5,
            loss: step as f64,
            grad_norm: 1.0,
            skipped: 0,
            terms: Vec::new(),
        }
    }

    fn terms(a: f32, b: f32) -> Vec<(&'static str, Tensor)> {
        vec![("nll", Tensor::from(a)), ("kl", Tensor::from(b))]
    }

    #[test]
    fn rows_come_back_in_step_order_with_their_own_terms() {
        let mut p = PendingRows::default();
        for step in 1..=3 {
            p.push(head(step), &terms(step as f32 * 0.1, -(step as f32)));
        }
        assert_eq!(p.len(), 3);
        let rows = p.take(&Replicas::single()).unwrap();
        assert!(p.is_empty());
        let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
        assert_eq!(steps, [1, 2, 3]);
        // the f32 value widened exactly, as `double_value` reads it
        assert_eq!(rows[1].terms, [("nll", 0.2f32 as f64), ("kl", -2.0)]);
        assert_eq!(rows[2].loss, 3.0);
        assert!(p.take(&Replicas::single()).unwrap().is_empty());
    }

    #[test]
    fn a_model_without_terms_and_non_finite_terms_pass_through() {
        let mut p = PendingRows::default();
        p.push(head(1), &[]);
        p.push(head(2), &terms(f32::NAN, 1.0));
        let rows = p.take(&Replicas::single()).unwrap();
        assert!(rows[0].terms.is_empty());
        assert!(rows[1].terms[0].1.is_nan() && rows[1].terms[1].1 == 1.0);
    }

    #[test]
    fn terms_are_averaged_over_ranks() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let replicas = Replicas::new(
            Box::new(PeerOfTwo {
                peer: 3.0,
                checksums: false,
            }),
            &vs,
        );
        let mut p = PendingRows::default();
        p.push(head(1), &terms(1.0, 0.25));
        p.push(head(2), &terms(0.5, 2.0));
        let rows = p.take(&replicas).unwrap();
        // the other rank holds three times rank 0's values: the mean is twice them
        assert_eq!(rows[0].terms, [("nll", 2.0), ("kl", 0.5)]);
        assert_eq!(rows[1].terms, [("nll", 1.0), ("kl", 4.0)]);
    }
}

//! Per-term gradient norms: how hard each weighted loss term pulls on the part of the model every term
//! trains (STORM's TS and CS encoders). Measured on a logging step before the optimizer's backward pass, one
//! extra backward per term through the retained graph; nothing accumulates into the parameters' gradients,
//! so training is unchanged. Written to `grad_norms.csv` as `grad_norm_<term>` columns and exported as the
//! `storm_train_term_grad_norm{term}` gauge. Under data parallel, rank 0's share of the batch.

use tch::nn::VarStore;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::model::GradientProbe;

/// Prefix of each term's column in `grad_norms.csv` (`grad_norm_<term>`).
pub const COLUMN_PREFIX: &str = "grad_norm_";

/// The (column index, term) of every term column among a `grad_norms.csv` header.
pub fn term_columns(columns: &[String]) -> Vec<(usize, &str)> {
    columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.strip_prefix(COLUMN_PREFIX)?)))
        .collect()
}

/// Each norm's share of the sum of the finite norms; None when that sum is not positive.
pub fn shares(norms: &[f64]) -> Vec<Option<f64>> {
    let total: f64 = norms.iter().filter(|v| v.is_finite()).sum();
    norms
        .iter()
        .map(|v| (total > 0.0).then(|| v / total))
        .collect()
}

pub struct GradProbe {
    /// The probed parameters (every trainable variable whose name starts with one of the probe's prefixes).
    params: Vec<Tensor>,
    /// Weight of each term in the objective; terms with weight 0 are measured as 0 without a backward pass.
    weights: Vec<(&'static str, f64)>,
}

impl GradProbe {
    /// `None` when the model offers no probe or no variable matches its prefixes.
    pub fn new(vs: &VarStore, probe: Option<GradientProbe>) -> Option<GradProbe> {
        let probe = probe?;
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(name, t)| {
                t.requires_grad() && probe.prefixes.iter().any(|p| name.starts_with(p))
            })
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        (!params.is_empty()).then_some(GradProbe {
            params,
            weights: probe.weights,
        })
    }

    /// ‖∇ (weight · term)‖ over the probed parameters for every weighted term of `terms`, in the probe's
    /// order. The graph behind `terms` is kept for the optimizer's backward pass.
    pub fn measure(&self, terms: &[(&'static str, Tensor)]) -> Result<Vec<(&'static str, f64)>> {
        let mut out = Vec::with_capacity(self.weights.len());
        for &(name, weight) in &self.weights {
            let Some((_, term)) = terms.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            let norm = if weight == 0.0 || !term.requires_grad() {
                0.0
            } else {
                weight.abs() * self.norm_of(term, name)?
            };
            out.push((name, norm));
        }
        Ok(out)
    }

    fn norm_of(&self, term: &Tensor, name: &str) -> Result<f64> {
        let grads = Tensor::f_run_backward(&[term], &self.params, true, false)
            .map_err(|e| Error::Training(format!("gradient of loss term {name}: {e}")))?;
        let squares: f64 = grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.square().sum(tch::Kind::Double).double_value(&[]))
            .fold(0.0, |a, b| a + b); // not `sum()`: an empty f64 sum is -0.0
        Ok(squares.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn term_columns_and_shares() {
        let header: Vec<String> = ["step", "grad_norm_nll", "grad_norm_kl"]
            .map(String::from)
            .to_vec();
        assert_eq!(term_columns(&header), vec![(1, "nll"), (2, "kl")]);
        assert_eq!(shares(&[3.0, 1.0]), vec![Some(0.75), Some(0.25)]);
        assert_eq!(shares(&[0.0, 0.0]), vec![None, None]);
        // a non-finite norm is left out of the sum
        assert_eq!(shares(&[1.0, f64::INFINITY])[0], Some(1.0));
    }

    #[test]
    fn norms_are_weighted_per_term_and_leave_gradients_untouched() {
        let vs = VarStore::new(Device::Cpu);
        let enc = vs.root().sub("enc").zeros("w", &[2]);
        let head = vs.root().sub("head").zeros("v", &[1]);
        tch::no_grad(|| {
            enc.shallow_clone()
                .copy_(&Tensor::from_slice(&[3.0f32, 4.0]))
        });
        // a = Σ w², so ∇_w a = 2w = (6, 8), norm 10; b depends only on the head; c is a constant
        let a = enc.square().sum(Kind::Float);
        let b = head.sum(Kind::Float);
        let c = Tensor::from(1.0f32);
        let probe = GradProbe::new(
            &vs,
            Some(GradientProbe {
                prefixes: vec!["enc."],
                weights: vec![("a", 0.5), ("b", 1.0), ("c", 2.0), ("zero", 0.0)],
            }),
        )
        .expect("enc.w matches");
        let terms = vec![
            ("a", a.shallow_clone()),
            ("b", b),
            ("c", c),
            ("zero", a.shallow_clone()),
        ];
        let norms = probe.measure(&terms).unwrap();
        assert_eq!(
            norms,
            vec![("a", 5.0), ("b", 0.0), ("c", 0.0), ("zero", 0.0)]
        );
        assert!(!enc.grad().defined(), "the probe accumulates no gradient");
        a.backward(); // the graph survived the probe
        assert_eq!(Vec::<f32>::try_from(enc.grad()).unwrap(), vec![6.0, 8.0]);
        assert!(GradProbe::new(&vs, None).is_none());
    }
}

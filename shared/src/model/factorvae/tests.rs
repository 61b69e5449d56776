use super::*;
use crate::config::TrainConfig;
use std::f64::consts::PI;
use tch::Device;

fn model(gamma: f64) -> (nn::VarStore, FactorVae) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = FactorVaeConfig {
        hidden: 6,
        factors: 3,
        portfolios: 4,
        gamma,
        leaky_slope: 0.1,
    };
    let m = FactorVae::new(&vs.root(), &cfg, 5, 7, 4).expect("valid dims");
    (vs, m)
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))
        .expect("float tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

#[test]
fn shapes_and_variable_names() {
    let (vs, m) = model(0.01);
    let x = Tensor::randn([2, 4, 5, 7], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
    assert_eq!(m.features(&x).size(), vec![2, 5, 6]);
    let out = m.forward_loss(&x, &y, &TrainConfig::default());
    assert_eq!(out.prediction.size(), vec![2, 5]);
    assert_eq!(out.loss.size(), Vec::<i64>::new());
    let names: Vec<&str> = out.terms.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["nll", "kl"]);
    let (mu, sigma) = m.predict_with_risk(&x);
    assert!(mu.equal(&m.predict(&x)));
    assert!(
        sigma
            .expect("FactorVAE has a risk estimate")
            .min()
            .double_value(&[])
            > 0.0
    );
    let vars = vs.variables();
    for name in [
        "extractor.proj.weight",
        "extractor.gru.weight_ih_l0",
        "factor.portfolio.weight",
        "factor.prior.query",
        "factor.alpha.mu.weight",
        "factor.beta.weight",
    ] {
        assert!(vars.contains_key(name), "{name} missing: {:?}", vars.keys());
    }
}

/// The loss terms against the paper's formulas evaluated by hand (f64 loops) from the model's own
/// intermediate distributions.
#[test]
fn nll_and_kl_match_hand_computation() {
    let gamma = 0.25;
    let (_vs, m) = model(gamma);
    let x = Tensor::randn([2, 4, 5, 7], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([2, 5], (Kind::Float, Device::Cpu));
    let out = m.forward_loss(&x, &y, &TrainConfig::default());

    let e = m.features(&x);
    let (mu_a, sig_a, beta) = m.head().alpha_beta(&e);
    let (mu_q, sig_q) = m.head().posterior(&e, &y);
    let (mu_p, sig_p) = m.head().prior(&e);
    let [mu_a, sig_a, beta, mu_q, sig_q, mu_p, sig_p, yv] =
        [&mu_a, &sig_a, &beta, &mu_q, &sig_q, &mu_p, &sig_p, &y].map(values);
    let (b, n, k) = (2, 5, 3);

    let mut nll = 0.0;
    for bi in 0..b {
        for i in 0..n {
            let s = bi * n + i;
            let (mut mean, mut var) = (mu_a[s], sig_a[s] * sig_a[s]);
            for f in 0..k {
                let bk = beta[s * k + f];
                mean += bk * mu_q[bi * k + f];
                var += bk * bk * sig_q[bi * k + f] * sig_q[bi * k + f];
            }
            nll += 0.5 * (2.0 * PI * var).ln() + (yv[s] - mean).powi(2) / (2.0 * var);
        }
    }
    nll /= (b * n) as f64;

    let mut kl = 0.0;
    for j in 0..b * k {
        let (sq, sp) = (sig_q[j], sig_p[j]);
        kl += (sp / sq).ln() + (sq * sq + (mu_q[j] - mu_p[j]).powi(2)) / (2.0 * sp * sp) - 0.5;
    }
    kl /= b as f64;

    let term = |name: &str| {
        out.terms
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.double_value(&[]))
            .expect("term present")
    };
    assert!((term("nll") - nll).abs() < 1e-5, "{} vs {nll}", term("nll"));
    assert!((term("kl") - kl).abs() < 1e-5, "{} vs {kl}", term("kl"));
    assert!((out.loss.double_value(&[]) - (nll + gamma * kl)).abs() < 1e-5);
}

#[test]
fn prediction_ignores_labels_and_features_are_per_stock() {
    let (_vs, m) = model(0.01);
    let x = Tensor::randn([3, 4, 5, 7], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
    let a = m.forward_loss(&x, &y, &TrainConfig::default()).prediction;
    let b = m
        .forward_loss(&x, &(&y * 5.0), &TrainConfig::default())
        .prediction;
    assert!(a.equal(&b));
    // Changing stock 2's history changes only stock 2's latent features.
    let x2 = x.copy();
    let _ = x2.narrow(2, 2, 1).fill_(3.0);
    let (e, e2) = (m.features(&x), m.features(&x2));
    for stock in [0, 1, 3, 4] {
        assert!(e.select(1, stock).equal(&e2.select(1, stock)));
    }
    assert!(!e.select(1, 2).equal(&e2.select(1, 2)));
}

use super::*;
use crate::config::TrainConfig;
use std::f64::consts::PI;
use tch::{nn, Device};

fn model(gamma: f64, seed: i64) -> (nn::VarStore, HireVae) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let stock = FactorVaeConfig {
        hidden: 6,
        factors: 3,
        portfolios: 4,
        gamma,
        leaky_slope: 0.1,
    };
    let market = HireVaeConfig {
        market_latent: 2,
        market_portfolios: 3,
    };
    let m = HireVae::new(&vs.root(), &stock, &market, 5, 7, 4).expect("valid dims");
    (vs, m)
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))
        .expect("float tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

fn term(out: &ModelOutput, name: &str) -> f64 {
    out.terms
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t.double_value(&[]))
        .expect("term present")
}

fn batch(b: i64) -> (Tensor, Tensor) {
    (
        Tensor::randn([b, 4, 5, 7], (Kind::Float, Device::Cpu)),
        Tensor::randn([b, 5], (Kind::Float, Device::Cpu)),
    )
}

#[test]
fn shapes_terms_and_variable_names() {
    let (vs, m) = model(0.01, 3);
    let (x, y) = batch(2);
    let out = m.forward_loss(&x, &y, &TrainConfig::default());
    assert_eq!(out.prediction.size(), vec![2, 5]);
    assert_eq!(out.loss.size(), Vec::<i64>::new());
    let names: Vec<&str> = out.terms.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["nll", "kl", "kl_market"]);
    let (prior, post) = m.market_means(&x, &y);
    assert_eq!((prior.size(), post.size()), (vec![2, 2], vec![2, 2]));
    assert_eq!(m.embeddings(&x).factors.size(), vec![2, 5, 6]);
    let (mu, sigma) = m.predict_with_risk(&x);
    assert!(mu.equal(&m.predict(&x)));
    assert!(mu.equal(&out.prediction));
    let sigma = sigma.expect("HireVAE has a risk estimate");
    assert!(sigma.min().double_value(&[]) > 0.0);
    let vars = vs.variables();
    for name in [
        "extractor.proj.weight",
        "extractor.gru.weight_ih_l0",
        "factor.prior.query",
        "factor.beta.weight",
        "market.score.weight",
        "market.prior_mu.weight",
        "market.portfolio.weight",
        "market.post_mu.weight",
        "market.scale.weight",
        "market.shift.weight",
    ] {
        assert!(vars.contains_key(name), "{name} missing: {:?}", vars.keys());
    }
}

/// Both KL terms and the NLL against the closed forms evaluated by hand (f64 loops) from the model's own
/// intermediate distributions: the stock level on posterior-conditioned features, the market level
/// KL(N(μ_q, I) ‖ N(μ_p, I)) = ½ Σ (μ_q − μ_p)².
#[test]
fn nll_and_both_kls_match_hand_computation() {
    let gamma = 0.25;
    let (_vs, m) = model(gamma, 4);
    let (x, y) = batch(2);
    let out = m.forward_loss(&x, &y, &TrainConfig::default());

    let (prior, post) = m.market_means(&x, &y);
    let (prior, post) = (values(&prior), values(&post));
    let kl_market: f64 = prior
        .iter()
        .zip(&post)
        .map(|(p, q)| 0.5 * (q - p).powi(2))
        .sum::<f64>()
        / 2.0;

    let e = m.posterior_features(&x, &y);
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

    assert!(kl_market > 0.0);
    assert!((term(&out, "kl_market") - kl_market).abs() < 1e-5);
    assert!(
        (term(&out, "nll") - nll).abs() < 1e-5,
        "{} vs {nll}",
        term(&out, "nll")
    );
    assert!(
        (term(&out, "kl") - kl).abs() < 1e-5,
        "{} vs {kl}",
        term(&out, "kl")
    );
    let total = nll + gamma * (kl + kl_market);
    assert!((out.loss.double_value(&[]) - total).abs() < 1e-5);
}

#[test]
fn unit_gaussian_kl_closed_form() {
    let q = Tensor::from_slice(&[1.0f32, 2.0, 0.0, -1.0]).view([2, 2]);
    let p = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
    // Row 1: ½(1 + 4) = 2.5; row 2: ½(0 + 4) = 2; mean 2.25.
    assert!((kl_unit_gaussian(&q, &p).double_value(&[]) - 2.25).abs() < 1e-6);
}

#[test]
fn prediction_ignores_labels_but_the_market_posterior_reads_them() {
    let (_vs, m) = model(0.01, 5);
    let (x, y) = batch(3);
    let train = TrainConfig::default();
    let a = m.forward_loss(&x, &y, &train);
    let b = m.forward_loss(&x, &(&y * 5.0), &train);
    assert!(a.prediction.equal(&b.prediction));
    let (prior_a, post_a) = m.market_means(&x, &y);
    let (prior_b, post_b) = m.market_means(&x, &(&y * 5.0));
    assert!(prior_a.equal(&prior_b));
    assert!(!post_a.equal(&post_b));
    assert_ne!(term(&a, "nll"), term(&b, "nll"));
    // The market latent summarises the cross-section: one stock's history moves every stock's
    // conditioned features (FactorVAE's own features are per stock).
    let x2 = x.copy();
    let _ = x2.narrow(2, 2, 1).fill_(3.0);
    let (e, e2) = (m.prior_features(&x), m.prior_features(&x2));
    for stock in [0, 1, 3, 4] {
        assert!(!e.select(1, stock).equal(&e2.select(1, stock)));
    }
}

#[test]
fn seeded_models_repeat_bit_for_bit() {
    let (_vs1, m1) = model(0.1, 9);
    let (_vs2, m2) = model(0.1, 9);
    tch::manual_seed(11);
    let (x, y) = batch(2);
    let train = TrainConfig::default();
    let (a, b) = (
        m1.forward_loss(&x, &y, &train),
        m2.forward_loss(&x, &y, &train),
    );
    assert!(a.loss.equal(&b.loss));
    assert!(a.prediction.equal(&b.prediction));
    // No sampling noise: the same model gives the same loss twice.
    assert!(a.loss.equal(&m1.forward_loss(&x, &y, &train).loss));
}

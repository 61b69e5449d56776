use super::*;
use tch::{Device, Kind, Tensor};

fn t(data: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(data).view(shape)
}

fn scalar(x: &Tensor) -> f64 {
    x.double_value(&[])
}

/// Σ|grad| of a leaf; 0 when no gradient reached it.
fn grad_mass(x: &Tensor) -> f64 {
    let g = x.grad();
    if g.defined() {
        scalar(&g.abs().sum(Kind::Float))
    } else {
        0.0
    }
}

fn quantizer_with(codes: &[f32], k: i64, e: i64, dead: i64) -> (nn::VarStore, Quantizer) {
    let vs = nn::VarStore::new(Device::Cpu);
    let q = Quantizer::new(&(vs.root() / "q"), k, e, dead, 1.0);
    tch::no_grad(|| q.codebook().shallow_clone().copy_(&t(codes, &[k, e])));
    (vs, q)
}

#[test]
fn orthogonality_is_zero_for_orthonormal_codes() {
    let eye = Tensor::eye(4, (Kind::Float, Device::Cpu)) * 3.0;
    assert!(scalar(&orthogonality_loss(&eye)).abs() < 1e-7);
}

#[test]
fn orthogonality_matches_hand_computed_2x2() {
    // ê = [1, 0], [1/√2, 1/√2]: Gram − I has off-diagonals 1/√2, so ‖·‖²_F = 1 and the loss is 1/4.
    let codes = t(&[2.0, 0.0, 1.0, 1.0], &[2, 2]);
    assert!((scalar(&orthogonality_loss(&codes)) - 0.25).abs() < 1e-6);
}

#[test]
fn diversity_is_minimal_for_uniform_usage() {
    let k = 8;
    let uniform = Tensor::full([5, k], 1.0 / k as f64, (Kind::Float, Device::Cpu));
    let expect = -(k as f64).ln() / k as f64;
    assert!((scalar(&diversity_loss_from_probs(&uniform)) - expect).abs() < 1e-6);
    // Uniform on average but one-hot per vector: the mean assignment is still uniform.
    let one_hot = Tensor::eye(k, (Kind::Float, Device::Cpu));
    assert!((scalar(&diversity_loss_from_probs(&one_hot)) - expect).abs() < 1e-6);
    // Collapsed usage (every vector on code 0) is larger, exactly 0.
    let collapsed = Tensor::zeros([5, k], (Kind::Float, Device::Cpu));
    let _ = collapsed.select(1, 0).fill_(1.0);
    let c = scalar(&diversity_loss_from_probs(&collapsed));
    assert!(c.abs() < 1e-7 && c > expect);
    // Partial collapse lies in between.
    let half = Tensor::zeros([2, k], (Kind::Float, Device::Cpu));
    let _ = half.narrow(1, 0, 2).fill_(0.5);
    let h = scalar(&diversity_loss_from_probs(&half));
    assert!(expect < h && h < c);
}

#[test]
fn diversity_softmax_prefers_near_codes() {
    // One vector at the first of two codes: the soft assignment must put more mass on the near code, so
    // the loss is that of a skewed distribution; with the reference's sign bug the far code would win.
    let codes = t(&[0.0, 0.0, 3.0, 0.0], &[2, 2]);
    let z = t(&[0.0, 0.0], &[1, 1, 2]);
    let p_near = 1.0 / (1.0 + (-9.0f64).exp());
    let p_far = 1.0 - p_near;
    let expect = (p_near * p_near.ln() + p_far * p_far.ln()) / 2.0;
    assert!((scalar(&diversity_loss(&z, &codes, 1.0)) - expect).abs() < 1e-6);
}

#[test]
fn nearest_code_and_straight_through_gradient() {
    let (_vs, q) = quantizer_with(&[1.0, 0.0, 3.0, 3.0, -2.0, 0.0], 3, 2, 0);
    let z = t(&[0.9, 0.2, 2.0, 2.5, -1.5, -0.5, 0.0, 0.0], &[1, 4, 2]).set_requires_grad(true);
    let out = q.forward(&z, false);
    let idx: Vec<i64> = Vec::try_from(out.indices.reshape([-1])).unwrap();
    assert_eq!(idx, vec![0, 1, 2, 0]);
    let expect = t(&[1.0, 0.0, 3.0, 3.0, -2.0, 0.0, 1.0, 0.0], &[1, 4, 2]);
    assert!(out.quantized.allclose(&expect, 1e-6, 1e-6, false));
    // d/dz Σ w·quantized = w exactly: the gradient passes the quantiser unchanged.
    let w = Tensor::randn([1, 4, 2], (Kind::Float, Device::Cpu));
    (&out.quantized * &w).sum(Kind::Float).backward();
    assert!(z.grad().allclose(&w, 1e-6, 1e-6, false));
    let (assigned, idx2) = q.assign(&z);
    assert!(assigned.allclose(&expect, 1e-6, 1e-6, false));
    assert!(idx2.equal(&out.indices));
}

#[test]
fn codebook_and_commitment_losses_on_hand_example() {
    let (_vs, q) = quantizer_with(&[1.0, 0.0, 3.0, 3.0], 2, 2, 0);
    let z = t(&[0.0, 0.0, 3.0, 2.0], &[1, 2, 2]).set_requires_grad(true);
    let out = q.forward(&z, false);
    // Errors: (1, 0) and (0, 1) → mean of squares over 4 entries = 0.5.
    assert!((scalar(&out.codebook) - 0.5).abs() < 1e-6);
    assert!((scalar(&out.commit) - 0.5).abs() < 1e-6);
    // The codebook term moves only the codes, the commitment term only the encoder output.
    out.codebook.backward();
    assert_eq!(grad_mass(&z), 0.0);
    assert!(grad_mass(q.codebook()) > 0.0);
    let z2 = z.detach().set_requires_grad(true);
    let _ = q.codebook().grad().zero_();
    q.forward(&z2, false).commit.backward();
    assert_eq!(grad_mass(q.codebook()), 0.0);
    // d/dz mean((z − z_q)²) = 2 (z − z_q) / 4.
    let expect = t(&[-0.5, 0.0, 0.0, -0.5], &[1, 2, 2]);
    assert!(z2.grad().allclose(&expect, 1e-6, 1e-6, false));
}

#[test]
fn dead_codes_are_counted_and_reset_to_batch_vectors() {
    tch::manual_seed(3);
    let (_vs, q) = quantizer_with(&[0.0, 0.0, 100.0, 100.0, -100.0, 100.0], 3, 2, 2);
    let z = t(&[0.1, 0.0, -0.1, 0.2], &[1, 2, 2]);
    let _ = q.forward(&z, true);
    let counts: Vec<f32> = Vec::try_from(q.steps_unused()).unwrap();
    assert_eq!(counts, vec![0.0, 1.0, 1.0]);
    let _ = q.forward(&z, true);
    // Third step: codes 1 and 2 have been unused for 2 steps and are reset to rows of z.
    let _ = q.forward(&z, true);
    let cb = q.codebook().detach();
    for k in 1..3 {
        let code = cb.get(k);
        let is_row = (0..2).any(|r| code.allclose(&z.get(0).get(r), 0.0, 0.0, false));
        assert!(is_row, "code {k} = {code:?}");
    }
    assert!(cb
        .get(0)
        .equal(&Tensor::zeros([2], (Kind::Float, Device::Cpu))));
    // Eval forwards neither count nor reset.
    let before = q.steps_unused().copy();
    let _ = q.forward(&z, false);
    assert!(q.steps_unused().equal(&before));
}

#[test]
fn usage_and_perplexity() {
    let idx = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 3]).view([2, 4]);
    let usage: Vec<f32> = Vec::try_from(code_usage(&idx, 6)).unwrap();
    assert_eq!(usage, vec![2.0, 2.0, 2.0, 2.0, 0.0, 0.0]);
    assert!((perplexity(&idx, 6) - 4.0).abs() < 1e-5);
    let one = Tensor::from_slice(&[5i64, 5, 5]);
    assert!((perplexity(&one, 6) - 1.0).abs() < 1e-6);
}

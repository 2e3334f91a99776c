//! Every custom op against candle's reference ops: forward values and the
//! gradients (through `Var` + `backward`) on seeded random inputs with odd
//! sizes, strides 1 and 2, paddings 0 and 1, batch 1, non-square images,
//! kernels 1 and 3.

use super::*;
use candle_core::{DType, Device, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOL: f32 = 1e-4;

fn rand_vec(rng: &mut StdRng, n: usize, scale: f32, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
        .collect()
}

fn randt(rng: &mut StdRng, shape: &[usize], scale: f32, offset: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(rand_vec(rng, n, scale, offset), shape, &Device::Cpu).unwrap()
}

fn var(t: &Tensor) -> Var {
    Var::from_tensor(t).unwrap()
}

/// `max |a - b| / max |b|`.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max).max(1e-12);
    diff / scale
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    let e = rel_err(a, b);
    assert!(e < TOL, "{what}: relative error {e:e}");
}

/// Convolution through candle's ops whose backward is right for every
/// size: candle's own conv2d backward derives the conv_transpose output
/// padding from the height alone, so non-square inputs with stride 2 fail.
/// Padding explicitly and cropping to the rows and columns the kernel
/// reaches leaves no output padding to derive.
fn ref_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, s: usize, p: usize) -> Tensor {
    let (h, wd, k) = (x.dim(2).unwrap(), x.dim(3).unwrap(), w.dim(2).unwrap());
    let (ho, wo) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
    let xp = x
        .pad_with_zeros(2, p, p)
        .unwrap()
        .pad_with_zeros(3, p, p)
        .unwrap();
    let xp = xp
        .narrow(2, 0, (ho - 1) * s + k)
        .unwrap()
        .narrow(3, 0, (wo - 1) * s + k)
        .unwrap();
    reference::conv2d(&xp, w, b, s, 0).unwrap()
}

/// Max pooling whose candle backward is right (candle's own max_pool2d
/// backward scales the gradient by 1 / k^2).
fn ref_pool(x: &Tensor, k: usize) -> Tensor {
    reference::max_pool2d_by_reduction(x, k).unwrap()
}

/// Sum of `y * r` for a fixed random `r`: a loss whose gradient is `r`.
fn weighted_sum(y: &Tensor, r: &Tensor) -> Tensor {
    (y * r).unwrap().sum_all().unwrap()
}

/// Backpropagates one random weighting of `y` and of `y_ref` and compares
/// the gradients of every `(input, name)` pair.
fn assert_grads_close(
    rng: &mut StdRng,
    y: &Tensor,
    y_ref: &Tensor,
    wrt: &[(&Var, &str)],
    tag: &str,
) {
    let r = randt(rng, y.dims(), 1.0, 0.0);
    let g = weighted_sum(y, &r).backward().unwrap();
    let g_ref = weighted_sum(y_ref, &r).backward().unwrap();
    for (v, name) in wrt {
        let (a, b) = (g.get(v).unwrap(), g_ref.get(v).unwrap());
        assert_close(a, b, &format!("{tag}: {name}"));
    }
}

#[test]
fn conv2d_matches_reference_forward_and_gradients() {
    let mut rng = StdRng::seed_from_u64(1);
    // (n, c, h, w, c_out, k, stride, padding, bias)
    let cases = [
        (1, 3, 7, 5, 4, 3, 1, 1, true),
        (2, 2, 9, 6, 3, 3, 2, 0, false),
        (3, 5, 8, 11, 7, 3, 2, 1, true),
        (2, 4, 6, 5, 6, 1, 1, 0, true),
        (2, 4, 7, 7, 6, 1, 2, 0, false),
        (9, 2, 5, 6, 3, 3, 1, 1, true),
        (2, 3, 4, 4, 2, 3, 1, 0, false),
        (2, 2, 6, 7, 3, 5, 1, 2, true),
        (1, 2, 5, 4, 2, 3, 1, 2, false),
        // Stride 2: widths 1 and 2, a 5x5 kernel whose column offsets run
        // from -2 to 2, even sizes.
        (2, 3, 5, 1, 2, 3, 2, 1, true),
        (2, 2, 4, 2, 3, 3, 2, 1, false),
        (1, 2, 9, 10, 3, 5, 2, 2, true),
        (2, 3, 8, 8, 4, 3, 2, 1, false),
        // A "same" 5x5 kernel on a 2-row image: whole rows of taps fall off.
        (1, 2, 2, 7, 3, 5, 1, 2, true),
        // Multiples of 8 output channels: the direct kernel's forward
        // (stride 1 "same", stride 2, 1x1 stride 2, the short image).
        (2, 3, 7, 9, 8, 3, 1, 1, true),
        (2, 4, 9, 8, 16, 3, 2, 1, false),
        (2, 5, 6, 7, 8, 1, 2, 0, true),
        (1, 2, 2, 7, 8, 5, 1, 2, false),
    ];
    for (n, c, h, w, co, k, s, p, with_bias) in cases {
        let tag = format!("n{n} c{c} {h}x{w} co{co} k{k} s{s} p{p} bias {with_bias}");
        let x = var(&randt(&mut rng, &[n, c, h, w], 1.0, 0.0));
        let wt = var(&randt(&mut rng, &[co, c, k, k], 0.5, 0.0));
        let b = var(&randt(&mut rng, &[co], 0.5, 0.0));
        let bias = with_bias.then_some(b.as_tensor());
        let y = conv2d(&x, &wt, bias, s, p).unwrap();
        let y_ref = ref_conv(&x, &wt, bias, s, p);
        assert_close(&y, &y_ref, &format!("{tag}: forward"));
        let mut wrt = vec![(&x, "d input"), (&wt, "d weight")];
        if with_bias {
            wrt.push((&b, "d bias"));
        }
        assert_grads_close(&mut rng, &y, &y_ref, &wrt, &tag);
    }
}

#[test]
fn conv2d_skips_the_gradient_of_an_input_outside_autograd() {
    let mut rng = StdRng::seed_from_u64(2);
    let x = randt(&mut rng, &[5, 1, 10, 9], 1.0, 0.0);
    let w = var(&randt(&mut rng, &[4, 1, 3, 3], 0.5, 0.0));
    let b = var(&randt(&mut rng, &[4], 0.5, 0.0));
    let y = conv2d(&x, &w, Some(&b), 1, 1).unwrap();
    let y_ref = reference::conv2d(&x, &w, Some(&b), 1, 1).unwrap();
    let r = randt(&mut rng, y.dims(), 1.0, 0.0);
    let g = weighted_sum(&y, &r).backward().unwrap();
    let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
    assert!(g.get(&x).is_none());
    assert_close(g.get(&w).unwrap(), g_ref.get(&w).unwrap(), "d weight");
    assert_close(g.get(&b).unwrap(), g_ref.get(&b).unwrap(), "d bias");
}

#[test]
fn conv2d_refuses_mismatched_channels() {
    let x = Tensor::zeros((1, 3, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let err = conv2d(&x, &w, None, 1, 1).unwrap_err().to_string();
    assert!(
        err.contains("3 channels") && err.contains("expects 4"),
        "{err}"
    );
}

#[test]
fn batch_norm_train_matches_reference_forward_and_gradients() {
    let mut rng = StdRng::seed_from_u64(3);
    for (n, c, h, w) in [(4, 3, 5, 7), (1, 2, 3, 3), (7, 5, 1, 1), (3, 2, 6, 5)] {
        for relu in [false, true] {
            let tag = format!("[{n}, {c}, {h}, {w}] relu {relu}");
            // A large mean checks that the variance does not cancel away.
            let x = var(&randt(&mut rng, &[n, c, h, w], 2.0, 30.0));
            let gamma = var(&randt(&mut rng, &[c], 0.5, 1.0));
            let beta = var(&randt(&mut rng, &[c], 0.5, 0.0));
            let (y, mean, v) = if relu {
                batch_norm_relu_train(&x, &gamma, &beta, 1e-5).unwrap()
            } else {
                batch_norm_train(&x, &gamma, &beta, 1e-5).unwrap()
            };
            let (y_ref, mean_ref, v_ref) =
                reference::batch_norm_train(&x, &gamma, &beta, 1e-5).unwrap();
            let y_ref = if relu { y_ref.relu().unwrap() } else { y_ref };
            assert_close(&y, &y_ref, &format!("{tag}: forward"));
            assert_close(&mean, &mean_ref, &format!("{tag}: mean"));
            assert_close(&v, &v_ref, &format!("{tag}: var"));
            let r = randt(&mut rng, y.dims(), 1.0, 0.0);
            let g = weighted_sum(&y, &r).backward().unwrap();
            let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
            assert_close(
                g.get(&x).unwrap(),
                g_ref.get(&x).unwrap(),
                &format!("{tag}: d input"),
            );
            assert_close(
                g.get(&gamma).unwrap(),
                g_ref.get(&gamma).unwrap(),
                &format!("{tag}: d gamma"),
            );
            assert_close(
                g.get(&beta).unwrap(),
                g_ref.get(&beta).unwrap(),
                &format!("{tag}: d beta"),
            );
        }
    }
}

#[test]
fn batch_norm_eval_matches_reference_forward_and_gradients() {
    let mut rng = StdRng::seed_from_u64(4);
    for (n, c, h, w) in [(3, 4, 5, 6), (1, 3, 2, 7)] {
        for relu in [false, true] {
            let tag = format!("[{n}, {c}, {h}, {w}] relu {relu}");
            let x = var(&randt(&mut rng, &[n, c, h, w], 1.0, 0.2));
            let gamma = var(&randt(&mut rng, &[c], 0.5, 1.0));
            let beta = var(&randt(&mut rng, &[c], 0.5, 0.0));
            let mean = randt(&mut rng, &[c], 0.3, 0.0);
            let v = randt(&mut rng, &[c], 0.4, 1.0);
            let f = if relu {
                batch_norm_relu_eval
            } else {
                batch_norm_eval
            };
            let y = f(&x, &gamma, &beta, &mean, &v, 1e-3).unwrap();
            let y_ref = reference::batch_norm_eval(&x, &gamma, &beta, &mean, &v, 1e-3).unwrap();
            let y_ref = if relu { y_ref.relu().unwrap() } else { y_ref };
            assert_close(&y, &y_ref, &format!("{tag}: forward"));
            let r = randt(&mut rng, y.dims(), 1.0, 0.0);
            let g = weighted_sum(&y, &r).backward().unwrap();
            let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
            assert_close(
                g.get(&x).unwrap(),
                g_ref.get(&x).unwrap(),
                &format!("{tag}: d input"),
            );
            assert_close(
                g.get(&gamma).unwrap(),
                g_ref.get(&gamma).unwrap(),
                &format!("{tag}: d gamma"),
            );
            assert_close(
                g.get(&beta).unwrap(),
                g_ref.get(&beta).unwrap(),
                &format!("{tag}: d beta"),
            );
        }
    }
}

#[test]
fn batch_norm_refuses_wrong_parameter_shapes() {
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let ok = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    let bad = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
    let err = batch_norm_train(&x, &bad, &ok, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gamma has shape [4], expected [3]"), "{err}");
}

#[test]
fn max_pool2d_matches_reference_forward_and_gradient() {
    let mut rng = StdRng::seed_from_u64(5);
    for (n, c, h, w, k) in [
        (2, 3, 6, 8, 2),
        (1, 2, 7, 9, 3),
        (3, 4, 5, 5, 2),
        (2, 1, 4, 4, 1),
    ] {
        let tag = format!("[{n}, {c}, {h}, {w}] k{k}");
        let x = var(&randt(&mut rng, &[n, c, h, w], 1.0, 0.0));
        let y = max_pool2d(&x, k).unwrap();
        let y_ref = ref_pool(&x, k);
        assert_close(&y, &y_ref, &format!("{tag}: forward"));
        let r = randt(&mut rng, y.dims(), 1.0, 0.0);
        let g = weighted_sum(&y, &r).backward().unwrap();
        let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
        assert_close(
            g.get(&x).unwrap(),
            g_ref.get(&x).unwrap(),
            &format!("{tag}: d input"),
        );
    }
}

#[test]
fn relu_and_add_relu_match_reference() {
    let mut rng = StdRng::seed_from_u64(6);
    let a = var(&randt(&mut rng, &[3, 5, 7, 9], 1.0, 0.0));
    let b = var(&randt(&mut rng, &[3, 5, 7, 9], 1.0, 0.0));
    let r = randt(&mut rng, &[3, 5, 7, 9], 1.0, 0.0);

    let y = relu(&a).unwrap();
    let y_ref = a.relu().unwrap();
    assert_close(&y, &y_ref, "relu forward");
    let g = weighted_sum(&y, &r).backward().unwrap();
    let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
    assert_close(g.get(&a).unwrap(), g_ref.get(&a).unwrap(), "relu d input");

    let y = add_relu(&a, &b).unwrap();
    let y_ref = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
    assert_close(&y, &y_ref, "add_relu forward");
    let g = weighted_sum(&y, &r).backward().unwrap();
    let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
    assert_close(g.get(&a).unwrap(), g_ref.get(&a).unwrap(), "add_relu d lhs");
    assert_close(g.get(&b).unwrap(), g_ref.get(&b).unwrap(), "add_relu d rhs");
}

#[test]
fn subsample_pad_matches_reference() {
    // Odd and even sizes, strides 1 to 3, padding on one side, both or none.
    let mut rng = StdRng::seed_from_u64(11);
    for (shape, s, l, r) in [
        ([3, 5, 7, 9], 2, 2, 3),
        ([2, 4, 8, 8], 2, 2, 2),
        ([1, 3, 5, 6], 1, 0, 1),
        ([2, 2, 7, 7], 3, 1, 0),
        ([1, 6, 1, 4], 2, 0, 0),
    ] {
        let x = var(&randt(&mut rng, &shape, 1.0, 0.0));
        let y = subsample_pad(&x, s, l, r).unwrap();
        let y_ref = reference::subsample_pad(&x, s, l, r).unwrap();
        let what = format!("{shape:?} stride {s} pad ({l}, {r})");
        assert_eq!(
            y.dims(),
            [
                shape[0],
                l + shape[1] + r,
                shape[2].div_ceil(s),
                shape[3].div_ceil(s)
            ],
            "{what}"
        );
        assert_close(&y, &y_ref, &format!("subsample_pad forward, {what}"));
        let rw = randt(&mut rng, y.dims(), 1.0, 0.0);
        let g = weighted_sum(&y, &rw).backward().unwrap();
        let g_ref = weighted_sum(&y_ref, &rw).backward().unwrap();
        assert_close(
            g.get(&x).unwrap(),
            g_ref.get(&x).unwrap(),
            &format!("subsample_pad d input, {what}"),
        );
    }
}

#[test]
fn a_small_network_trains_the_same_through_both_paths() {
    // conv -> bn+relu -> pool -> conv(stride 2) -> add_relu with a 1x1
    // projection: the gradients of every parameter agree.
    let mut rng = StdRng::seed_from_u64(7);
    let x = randt(&mut rng, &[3, 2, 8, 10], 1.0, 0.0);
    let w1 = var(&randt(&mut rng, &[4, 2, 3, 3], 0.4, 0.0));
    let gamma = var(&randt(&mut rng, &[4], 0.2, 1.0));
    let beta = var(&randt(&mut rng, &[4], 0.2, 0.0));
    let w2 = var(&randt(&mut rng, &[6, 4, 3, 3], 0.3, 0.0));
    let wp = var(&randt(&mut rng, &[6, 4, 1, 1], 0.3, 0.0));
    let run = |fast: bool| {
        let h = if fast {
            conv2d(&x, &w1, None, 1, 1)
        } else {
            reference::conv2d(&x, &w1, None, 1, 1)
        }
        .unwrap();
        let h = if fast {
            batch_norm_relu_train(&h, &gamma, &beta, 1e-5).unwrap().0
        } else {
            reference::batch_norm_train(&h, &gamma, &beta, 1e-5)
                .unwrap()
                .0
                .relu()
                .unwrap()
        };
        let h = if fast {
            max_pool2d(&h, 2)
        } else {
            Ok(ref_pool(&h, 2))
        }
        .unwrap();
        let (a, b) = if fast {
            (
                conv2d(&h, &w2, None, 2, 1).unwrap(),
                conv2d(&h, &wp, None, 2, 0).unwrap(),
            )
        } else {
            (ref_conv(&h, &w2, None, 2, 1), ref_conv(&h, &wp, None, 2, 0))
        };
        let y = if fast {
            add_relu(&a, &b).unwrap()
        } else {
            (a + b).unwrap().relu().unwrap()
        };
        let loss = y.sqr().unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let grads: Vec<Tensor> = [&w1, &gamma, &beta, &w2, &wp]
            .iter()
            .map(|v| g.get(v).unwrap().clone())
            .collect();
        (loss, grads)
    };
    let (loss, grads) = run(true);
    let (loss_ref, grads_ref) = run(false);
    assert_close(&loss, &loss_ref, "loss");
    for (i, (a, b)) in grads.iter().zip(&grads_ref).enumerate() {
        assert_close(a, b, &format!("parameter {i}"));
    }
}

#[test]
fn fold_bn_into_conv_equals_conv_then_batch_norm() {
    let mut rng = StdRng::seed_from_u64(8);
    let x = randt(&mut rng, &[2, 3, 6, 5], 1.0, 0.0);
    let w = randt(&mut rng, &[4, 3, 3, 3], 0.5, 0.0);
    let gamma = randt(&mut rng, &[4], 0.3, 1.0);
    let beta = randt(&mut rng, &[4], 0.3, 0.0);
    let mean = randt(&mut rng, &[4], 0.3, 0.0);
    let v = randt(&mut rng, &[4], 0.3, 1.0);
    for b in [None, Some(randt(&mut rng, &[4], 0.3, 0.0))] {
        let y = conv2d(&x, &w, b.as_ref(), 1, 1).unwrap();
        let y = batch_norm_eval(&y, &gamma, &beta, &mean, &v, 1e-5).unwrap();
        let (w2, b2) = fold_bn_into_conv(&w, b.as_ref(), &gamma, &beta, &mean, &v, 1e-5).unwrap();
        let y2 = conv2d(&x, &w2, Some(&b2), 1, 1).unwrap();
        assert_close(&y2, &y, "folded conv");
    }
}

#[test]
fn other_dtypes_fall_back_to_the_reference_ops() {
    let mut rng = StdRng::seed_from_u64(9);
    let x = randt(&mut rng, &[2, 3, 6, 6], 1.0, 0.0);
    let w = randt(&mut rng, &[4, 3, 3, 3], 0.5, 0.0);
    let y = conv2d(&x, &w, None, 1, 1).unwrap();
    let x64 = x.to_dtype(DType::F64).unwrap();
    let w64 = w.to_dtype(DType::F64).unwrap();
    let y64 = conv2d(&x64, &w64, None, 1, 1).unwrap();
    assert_eq!(y64.dtype(), DType::F64);
    assert_close(&y64.to_dtype(DType::F32).unwrap(), &y, "f64 conv");
    let p64 = max_pool2d(&x64, 2).unwrap();
    assert_close(
        &p64.to_dtype(DType::F32).unwrap(),
        &max_pool2d(&x, 2).unwrap(),
        "f64 pool",
    );
}

/// (n, c, h, w, c_out, k, stride, padding) for the fused conv tests.
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);
const FUSED_CASES: [ConvCase; 5] = [
    (2, 3, 9, 7, 4, 3, 1, 1),
    (1, 2, 8, 11, 3, 3, 2, 1),
    (3, 4, 6, 6, 5, 1, 1, 0),
    (2, 3, 9, 8, 4, 1, 2, 0),
    (9, 2, 7, 5, 3, 3, 1, 0),
];

#[test]
fn conv2d_relu_and_relu_pool_match_reference() {
    let mut rng = StdRng::seed_from_u64(10);
    for (n, c, h, w, co, k, s, p) in FUSED_CASES {
        for pool in [1, 2, 3] {
            let tag = format!("n{n} c{c} {h}x{w} co{co} k{k} s{s} p{p} pool{pool}");
            let x = var(&randt(&mut rng, &[n, c, h, w], 1.0, 0.0));
            let wt = var(&randt(&mut rng, &[co, c, k, k], 0.5, 0.0));
            let b = var(&randt(&mut rng, &[co], 0.3, 0.0));
            let z = ref_conv(&x, &wt, Some(&b), s, p);
            if z.dim(2).unwrap() < pool || z.dim(3).unwrap() < pool {
                continue;
            }
            let (y, y_ref) = if pool == 1 {
                (
                    conv2d_relu(&x, &wt, Some(&b), s, p).unwrap(),
                    z.relu().unwrap(),
                )
            } else {
                (
                    conv2d_relu_pool(&x, &wt, Some(&b), s, p, pool).unwrap(),
                    ref_pool(&z.relu().unwrap(), pool),
                )
            };
            assert_close(&y, &y_ref, &format!("{tag}: forward"));
            let r = randt(&mut rng, y.dims(), 1.0, 0.0);
            let g = weighted_sum(&y, &r).backward().unwrap();
            let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
            for (v, name) in [(&x, "input"), (&wt, "weight"), (&b, "bias")] {
                assert_close(
                    g.get(v).unwrap(),
                    g_ref.get(v).unwrap(),
                    &format!("{tag}: d {name}"),
                );
            }
        }
    }
}

#[test]
fn conv2d_bn_train_matches_reference() {
    let mut rng = StdRng::seed_from_u64(11);
    for (n, c, h, w, co, k, s, p) in FUSED_CASES {
        for relu in [false, true] {
            let tag = format!("n{n} c{c} {h}x{w} co{co} k{k} s{s} p{p} relu {relu}");
            // An input offset gives the conv output a mean far from zero.
            let x = var(&randt(&mut rng, &[n, c, h, w], 1.0, 3.0));
            let wt = var(&randt(&mut rng, &[co, c, k, k], 0.5, 0.0));
            let gamma = var(&randt(&mut rng, &[co], 0.3, 1.0));
            let beta = var(&randt(&mut rng, &[co], 0.3, 0.0));
            let bn = BatchNormParams {
                gamma: &gamma,
                beta: &beta,
                eps: 1e-5,
            };
            let (y, mean, v) = if relu {
                conv2d_bn_relu_train(&x, &wt, s, p, &bn).unwrap()
            } else {
                conv2d_bn_train(&x, &wt, s, p, &bn).unwrap()
            };
            let z = ref_conv(&x, &wt, None, s, p);
            let (y_ref, mean_ref, v_ref) =
                reference::batch_norm_train(&z, &gamma, &beta, 1e-5).unwrap();
            let y_ref = if relu { y_ref.relu().unwrap() } else { y_ref };
            assert_close(&y, &y_ref, &format!("{tag}: forward"));
            assert_close(&mean, &mean_ref, &format!("{tag}: mean"));
            assert_close(&v, &v_ref, &format!("{tag}: var"));
            let r = randt(&mut rng, y.dims(), 1.0, 0.0);
            let g = weighted_sum(&y, &r).backward().unwrap();
            let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
            for (t, name) in [
                (&x, "input"),
                (&wt, "weight"),
                (&gamma, "gamma"),
                (&beta, "beta"),
            ] {
                assert_close(
                    g.get(t).unwrap(),
                    g_ref.get(t).unwrap(),
                    &format!("{tag}: d {name}"),
                );
            }
        }
    }
}

#[test]
fn conv2d_bn_eval_matches_reference() {
    let mut rng = StdRng::seed_from_u64(12);
    for (n, c, h, w, co, k, s, p) in FUSED_CASES {
        for relu in [false, true] {
            let tag = format!("n{n} c{c} {h}x{w} co{co} k{k} s{s} p{p} relu {relu}");
            let x = var(&randt(&mut rng, &[n, c, h, w], 1.0, 0.0));
            let wt = var(&randt(&mut rng, &[co, c, k, k], 0.5, 0.0));
            let gamma = var(&randt(&mut rng, &[co], 0.3, 1.0));
            let beta = var(&randt(&mut rng, &[co], 0.3, 0.0));
            let mean = randt(&mut rng, &[co], 0.3, 0.0);
            let v = randt(&mut rng, &[co], 0.3, 1.0);
            let bn = BatchNormParams {
                gamma: &gamma,
                beta: &beta,
                eps: 1e-3,
            };
            let f = if relu {
                conv2d_bn_relu_eval
            } else {
                conv2d_bn_eval
            };
            let y = f(&x, &wt, s, p, &bn, &mean, &v).unwrap();
            let z = ref_conv(&x, &wt, None, s, p);
            let y_ref = reference::batch_norm_eval(&z, &gamma, &beta, &mean, &v, 1e-3).unwrap();
            let y_ref = if relu { y_ref.relu().unwrap() } else { y_ref };
            assert_close(&y, &y_ref, &format!("{tag}: forward"));
            let r = randt(&mut rng, y.dims(), 1.0, 0.0);
            let g = weighted_sum(&y, &r).backward().unwrap();
            let g_ref = weighted_sum(&y_ref, &r).backward().unwrap();
            for (t, name) in [
                (&x, "input"),
                (&wt, "weight"),
                (&gamma, "gamma"),
                (&beta, "beta"),
            ] {
                assert_close(
                    g.get(t).unwrap(),
                    g_ref.get(t).unwrap(),
                    &format!("{tag}: d {name}"),
                );
            }
        }
    }
}

#[test]
fn fused_convs_skip_the_gradient_of_an_input_outside_autograd() {
    let mut rng = StdRng::seed_from_u64(13);
    let x = randt(&mut rng, &[4, 1, 8, 8], 1.0, 0.0);
    let wt = var(&randt(&mut rng, &[3, 1, 3, 3], 0.5, 0.0));
    let gamma = var(&randt(&mut rng, &[3], 0.3, 1.0));
    let beta = var(&randt(&mut rng, &[3], 0.3, 0.0));
    let bn = BatchNormParams {
        gamma: &gamma,
        beta: &beta,
        eps: 1e-5,
    };
    let y = conv2d_bn_relu_train(&x, &wt, 1, 1, &bn).unwrap().0;
    let y = (y + conv2d_relu_pool(&x, &wt, None, 1, 1, 1).unwrap()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none());
    assert!(g.get(&wt).is_some() && g.get(&gamma).is_some() && g.get(&beta).is_some());
}

#[test]
fn linear_matches_reference() {
    let mut rng = StdRng::seed_from_u64(14);
    for (lead, k, o, with_bias) in [
        (vec![5], 7, 3, true),
        (vec![1], 4, 6, false),
        (vec![2, 3], 5, 4, true),
    ] {
        let tag = format!("x {lead:?} in {k} out {o} bias {with_bias}");
        let mut xs = lead.clone();
        xs.push(k);
        let x = var(&randt(&mut rng, &xs, 1.0, 0.0));
        let w = var(&randt(&mut rng, &[o, k], 0.5, 0.0));
        let b = var(&randt(&mut rng, &[o], 0.5, 0.0));
        let bias = with_bias.then_some(b.as_tensor());
        let y = linear(&x, &w, bias).unwrap();
        let y_ref = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        let y_ref = if with_bias {
            y_ref.broadcast_add(&b).unwrap()
        } else {
            y_ref
        };
        assert_close(&y, &y_ref, &format!("{tag}: forward"));
        let mut wrt = vec![(&x, "d input"), (&w, "d weight")];
        if with_bias {
            wrt.push((&b, "d bias"));
        }
        assert_grads_close(&mut rng, &y, &y_ref, &wrt, &tag);
    }
}

#[test]
fn fused_adamw_follows_candle_nn_adamw() {
    use candle_nn::Optimizer;
    let mut rng = StdRng::seed_from_u64(15);
    let init = [
        randt(&mut rng, &[37, 5], 1.0, 0.0),
        randt(&mut rng, &[3], 1.0, 0.0),
    ];
    let ours: Vec<Var> = init.iter().map(var).collect();
    let theirs: Vec<Var> = init.iter().map(var).collect();
    let params = candle_nn::ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = AdamW::new(ours.clone(), params.clone()).unwrap();
    let mut opt_ref = candle_nn::AdamW::new(theirs.clone(), params).unwrap();
    for step in 0..4 {
        let r = randt(&mut rng, &[37, 5], 1.0, 0.0);
        let loss = |v: &[Var]| {
            let a = (v[0].as_tensor() * &r)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            (a + v[1].as_tensor().sum_all().unwrap()).unwrap()
        };
        opt.backward_step(&loss(&ours)).unwrap();
        opt_ref.backward_step(&loss(&theirs)).unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert_close(a.as_tensor(), b.as_tensor(), &format!("step {step}"));
        }
    }
    // The parameters moved: the comparison is not between two frozen copies.
    assert!(rel_err(ours[0].as_tensor(), &init[0]) > 1e-3);
}

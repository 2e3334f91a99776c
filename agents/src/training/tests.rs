use super::*;
use crate::expected::expected_objective;
use crate::policy::StopPolicy;
use crate::reinforce::estimator::*;
use candle_core::Device;
use cascade_env::RewardModel;

fn sig(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Three trajectories over two stages: row 0 stops at stage 0, rows 1
/// and 2 go forward and stop at the last stage.
fn rollout_fixture(dev: &Device) -> (Rollout, Var, Var) {
    let z = Var::from_slice(&[0.5f32, -1.0, 2.0], 3, dev).unwrap();
    let l0 = Var::from_slice(&[1.0f32, 0.0, 0.5, -0.5, 0.2, 0.1], (3, 2), dev).unwrap();
    let l1 = Var::from_slice(&[0.3f32, -0.2, -1.0, 1.0], (2, 2), dev).unwrap();
    let lp0 = candle_nn::ops::log_softmax(l0.as_tensor(), 1).unwrap();
    let lp1 = candle_nn::ops::log_softmax(l1.as_tensor(), 1).unwrap();
    let roll = Rollout {
        stages: vec![
            StageRollout {
                rows: vec![0, 1, 2],
                input: None,
                logits: Some(z.as_tensor().clone()),
                actions: vec![0, 1, 1],
                yhat: vec![0, 0, 0],
                class_logp: Some(lp0),
            },
            StageRollout {
                rows: vec![1, 2],
                input: None,
                logits: None,
                actions: vec![0, 0],
                yhat: vec![1, 0],
                class_logp: Some(lp1),
            },
        ],
        returns: vec![-0.2, -1.1, -0.5],
        costs: vec![0.1, 1.0, 1.0],
        wrong: vec![false, true, false],
    };
    (roll, z, l1)
}

#[test]
fn surrogate_values_and_gradients_match_the_estimator() {
    let dev = Device::Cpu;
    let (roll, z, l1) = rollout_fixture(&dev);
    let baseline = BaselineState {
        momentum: 0.9,
        mean: Some(-0.6),
        values: None,
    };
    let s = surrogate(&roll, &baseline, 0.0, &dev).unwrap();
    let adv = [0.4, -0.5, 0.1];
    let zs = [0.5f64, -1.0, 2.0];
    // log pi(stop) for row 0, log (1 - pi) = log sig(-z) for rows 1, 2.
    let want =
        -(adv[0] * sig(zs[0]).ln() + adv[1] * sig(-zs[1]).ln() + adv[2] * sig(-zs[2]).ln()) / 3.0;
    let got = s.policy.to_scalar::<f32>().unwrap() as f64;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    let grads = s.total().unwrap().backward().unwrap();
    let gz = grads.get(z.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    let want_gz = [
        -adv[0] * (1.0 - sig(zs[0])) / 3.0,
        adv[1] * sig(zs[1]) / 3.0,
        adv[2] * sig(zs[2]) / 3.0,
    ];
    for (g, w) in gz.iter().zip(want_gz) {
        assert!((*g as f64 - w).abs() < 1e-6, "{gz:?} vs {want_gz:?}");
    }
    // log C_k(yhat|x): at the last stage rows 1 (yhat 1) and 2 (yhat 0);
    // gradient -(1/B) A (onehot - softmax).
    let gl = grads.get(l1.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    for (j, (row, (y, a))) in [[0.3f64, -0.2], [-1.0, 1.0]]
        .iter()
        .zip([(1usize, adv[1]), (0, adv[2])])
        .enumerate()
    {
        let e: Vec<f64> = row.iter().map(|v| v.exp()).collect();
        let tot: f64 = e.iter().sum();
        for c in 0..2 {
            let want = -a * ((c == y) as u8 as f64 - e[c] / tot) / 3.0;
            assert!((gl[j][c] as f64 - want).abs() < 1e-6, "{gl:?}");
        }
    }
    // The classifier term: log C_k(yhat|x) of the stage each row stopped
    // at (row 0 at stage 0, yhat 0; rows 1, 2 at stage 1).
    let cls = s.classifier.unwrap().to_scalar::<f32>().unwrap() as f64;
    let lse = |r: [f64; 2]| (r[0].exp() + r[1].exp()).ln();
    let direct = -(adv[0] * (1.0 - lse([1.0, 0.0]))
        + adv[1] * (-0.2 - lse([0.3, -0.2]))
        + adv[2] * (-1.0 - lse([-1.0, 1.0])))
        / 3.0;
    assert!((cls - direct).abs() < 1e-6, "{cls} vs {direct}");
}

/// Three linear classifiers on 3-dimensional inputs (3 classes), each
/// with 2 tanh features, as a differentiable stage source.
struct LinearSource {
    x: Tensor,
    w: Vec<Var>,
    f: Vec<Var>,
}

impl LinearSource {
    fn new(x: Tensor, dev: &Device) -> (Self, Vec<Var>) {
        let mut w = Vec::new();
        let mut f = Vec::new();
        for t in 0..3 {
            let s = 0.7 + 0.4 * t as f32;
            let wv: Vec<f32> = (0..9)
                .map(|i| s * ((i * 7 + t * 3) as f32 * 0.91).sin())
                .collect();
            let fv: Vec<f32> = (0..6).map(|i| ((i * 5 + t) as f32 * 1.37).cos()).collect();
            w.push(Var::from_vec(wv, (3, 3), dev).unwrap());
            f.push(Var::from_vec(fv, (3, 2), dev).unwrap());
        }
        let vars = w.iter().chain(&f).cloned().collect();
        (LinearSource { x, w, f }, vars)
    }

    fn with_x(&self, x: Tensor) -> Self {
        LinearSource {
            x,
            w: self.w.clone(),
            f: self.f.clone(),
        }
    }
}

impl StageSource for LinearSource {
    fn stage(&mut self, t: usize, rows: &[usize]) -> Result<StageOut> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), self.x.device())?;
        let x = self.x.index_select(&idx, 0)?;
        let logp = candle_nn::ops::log_softmax(&x.matmul(self.w[t].as_tensor())?, 1)?;
        let probs = logp.exp()?;
        let probs_cpu = probs.detach().flatten_all()?.to_vec1::<f32>()?;
        Ok(StageOut {
            features: x.matmul(self.f[t].as_tensor())?.tanh()?,
            probs,
            probs_cpu,
            class_logp: Some(logp),
        })
    }
}

const XS: [[f32; 3]; 4] = [
    [0.5, -1.0, 0.3],
    [-0.8, 0.4, 1.1],
    [1.2, 0.9, -0.6],
    [0.1, -0.3, -1.4],
];
const YS: [u32; 4] = [0, 2, 1, 1];

fn small_policy(dev: &Device) -> StopPolicy {
    let spec = crate::policy::PolicySpec {
        feature_dims: vec![2, 2, 2],
        num_classes: 3,
        hidden: 4,
        inputs: crate::policy::PolicyInputs::FeaturesAndProbs,
    };
    let norm = crate::policy::FeatureNorm::identity(&[2, 2, 2]);
    StopPolicy::new(spec, norm, 5, dev).unwrap()
}

fn small_model(prediction: cascade_env::Prediction) -> RewardModel {
    cascade_env::RewardSpec {
        alpha: 0.3,
        prediction,
        ..Default::default()
    }
    .compile(&[1.0, 2.0, 4.0])
    .unwrap()
}

fn flat_grads(grads: &candle_core::backprop::GradStore, vars: &[Var]) -> Vec<f64> {
    vars.iter()
        .flat_map(|v| {
            grads
                .get(v.as_tensor())
                .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .unwrap_or_else(|| vec![0.0; v.as_tensor().elem_count()])
        })
        .map(f64::from)
        .collect()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    d / n
}

#[test]
fn expected_objective_matches_the_brute_force_sum() {
    use cascade_env::{Loss, Prediction};
    let dev = Device::Cpu;
    let x = Tensor::new(&XS, &dev).unwrap();
    let (mut src, _) = LinearSource::new(x, &dev);
    let policy = small_policy(&dev);
    let rows: Vec<usize> = (0..4).collect();
    let stages: Vec<StageOut> = (0..3).map(|t| src.stage(t, &rows).unwrap()).collect();
    for (loss, prediction) in [
        (Loss::ZeroOne, Prediction::Sample),
        (Loss::ZeroOne, Prediction::Argmax),
        (Loss::CrossEntropy, Prediction::Sample),
    ] {
        let model = cascade_env::RewardSpec {
            alpha: 0.3,
            loss,
            prediction,
            ..Default::default()
        }
        .compile(&[1.0, 2.0, 4.0])
        .unwrap();
        let got = expected_objective(&policy, &stages, &YS, &model)
            .unwrap()
            .objective
            .to_scalar::<f32>()
            .unwrap() as f64;
        // sum over k and yhat, in f64, from the stop probabilities.
        let mut want = 0.0;
        for (b, &y) in YS.iter().enumerate() {
            let mut reach = 1.0f64;
            for (t, s) in stages.iter().enumerate() {
                let p = &s.probs_cpu[b * 3..(b + 1) * 3];
                let pi = if t == 2 {
                    1.0
                } else {
                    policy
                        .stop_probs_rows(t, &s.features.to_vec2::<f32>().unwrap()[b], p)
                        .unwrap()[0] as f64
                };
                let q = reach * pi;
                reach *= 1.0 - pi;
                let inner: f64 = match prediction {
                    Prediction::Sample => (0..3u32)
                        .map(|yh| p[yh as usize] as f64 * model.stop_reward(t, p, yh, y))
                        .sum(),
                    Prediction::Argmax => {
                        model.stop_reward(t, p, cascade_env::reward::argmax(p), y)
                    }
                };
                want += q * inner;
            }
        }
        want /= 4.0;
        assert!(
            (got - want).abs() < 1e-5,
            "{loss:?} {prediction:?}: {got} vs {want}"
        );
    }
}

/// The slides' estimator with `yhat ~ C_k`, averaged over many sampled
/// trajectories, is the gradient of the exact expected reward, for the
/// policy and for the classifiers (through `log C_k` and through the
/// features and probabilities the policy reads). With the argmax
/// prediction the classifier part is not.
#[test]
fn sampled_reinforce_gradient_matches_the_exact_gradient() {
    use cascade_env::Prediction;
    let dev = Device::Cpu;
    let (mut exact_src, cls_vars) = LinearSource::new(Tensor::new(&XS, &dev).unwrap(), &dev);
    let policy = small_policy(&dev);
    let pol_vars = policy.vars();
    let model = small_model(Prediction::Sample);
    // Exact: d(-J), the direction the surrogate loss descends.
    let rows: Vec<usize> = (0..4).collect();
    let stages: Vec<StageOut> = (0..3).map(|t| exact_src.stage(t, &rows).unwrap()).collect();
    let j = expected_objective(&policy, &stages, &YS, &model)
        .unwrap()
        .objective;
    let g = j.neg().unwrap().backward().unwrap();
    let (ex_cls, ex_pol) = (flat_grads(&g, &cls_vars), flat_grads(&g, &pol_vars));
    // Sampled: 4 x 40000 trajectories, the constant baseline b = J.
    let reps = 40_000;
    let mut xs = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..reps {
        for (x, &y) in XS.iter().zip(&YS) {
            xs.extend_from_slice(x);
            labels.push(y);
        }
    }
    let big = Tensor::from_vec(xs, (4 * reps, 3), &dev).unwrap();
    let baseline = BaselineState {
        momentum: 0.0,
        mean: Some(j.to_scalar::<f32>().unwrap() as f64),
        values: None,
    };
    let estimate = |prediction| {
        let mut src = exact_src.with_x(big.clone());
        let mut rng = EnvRng::new(11);
        let roll = rollout(
            &policy,
            &mut src,
            &labels,
            &small_model(prediction),
            &mut rng,
        )
        .unwrap();
        let s = surrogate(&roll, &baseline, 0.0, &dev).unwrap();
        let g = s.total().unwrap().backward().unwrap();
        (flat_grads(&g, &cls_vars), flat_grads(&g, &pol_vars))
    };
    let (mc_cls, mc_pol) = estimate(Prediction::Sample);
    let (e_cls, e_pol) = (rel_err(&mc_cls, &ex_cls), rel_err(&mc_pol, &ex_pol));
    // Monte Carlo error with 160000 trajectories is a few percent.
    assert!(e_cls < 0.05, "classifier gradient off by {e_cls}");
    assert!(e_pol < 0.05, "policy gradient off by {e_pol}");
    let (am_cls, _) = estimate(Prediction::Argmax);
    let e_am = rel_err(&am_cls, &ex_cls);
    assert!(
        e_am > 0.3,
        "argmax classifier gradient unexpectedly close: {e_am}"
    );
    eprintln!("relative error: classifiers {e_cls:.4}, policy {e_pol:.4}, argmax {e_am:.4}");
}

#[test]
fn entropy_bonus_lowers_the_loss_and_running_mean_moves() {
    let dev = Device::Cpu;
    let (roll, _, _) = rollout_fixture(&dev);
    let mut baseline = BaselineState {
        momentum: 0.5,
        mean: None,
        values: None,
    };
    let plain = surrogate(&roll, &baseline, 0.0, &dev).unwrap().policy;
    let bonus = surrogate(&roll, &baseline, 0.1, &dev).unwrap().policy;
    let ent: f64 = [0.5f64, -1.0, 2.0]
        .iter()
        .map(|&z| -(sig(z) * sig(z).ln() + sig(-z) * sig(-z).ln()))
        .sum();
    let d = plain.to_scalar::<f32>().unwrap() - bonus.to_scalar::<f32>().unwrap();
    assert!((d as f64 - 0.1 * ent / 3.0).abs() < 1e-6);
    // First update sets the mean, later ones move it by the momentum.
    baseline.update(&[-1.0, 0.0]);
    assert_eq!(baseline.mean, Some(-0.5));
    baseline.update(&[1.0]);
    assert_eq!(baseline.mean, Some(0.25));
}

#[test]
fn selection_and_dual_ascent() {
    let p = |r, e, c| ValScore {
        mean_reward: r,
        error: e,
        cost: c,
    };
    assert!(better(&p(-0.1, 0.2, 0.9), &p(-0.2, 0.1, 0.1), None));
    // Budget 0.5: feasible beats infeasible, then error, then cost.
    let b = Some(0.5);
    assert!(better(&p(-9.0, 0.3, 0.5), &p(0.0, 0.1, 0.6), b));
    assert!(better(&p(-9.0, 0.1, 0.4), &p(0.0, 0.2, 0.1), b));
    assert!(better(&p(-9.0, 0.1, 0.3), &p(0.0, 0.1, 0.4), b));
    assert!(better(&p(-9.0, 0.9, 0.7), &p(0.0, 0.1, 0.8), b));
    assert!(!better(&p(0.0, 0.1, 0.4), &p(0.0, 0.1, 0.4), b));
    assert_eq!(dual_ascent(0.1, 2.0, 0.75, 0.5), 0.6);
    assert_eq!(dual_ascent(0.1, 2.0, 0.25, 0.5), 0.0);
}

#[test]
fn bad_baselines_are_refused() {
    assert!(Baseline::RunningMean { momentum: 1.0 }.validate().is_err());
    assert!(Baseline::Value { lr: 0.0 }.validate().is_err());
    assert!(Baseline::default().validate().is_ok());
}

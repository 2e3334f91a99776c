//! Training-step and inference benchmark of `cascade_rl::ops` against
//! candle's reference ops, on the models of the Fashion-MNIST zoo shape
//! (1x28x28 inputs, batch 128, AdamW).
//!
//! ```text
//! cargo run --release --example ops_bench -- [steps] [rounds] [models] [--json]
//! cargo run --release --example ops_bench -- --gemm
//! cargo run --release --example ops_bench -- --profile
//! cargo run --release --example ops_bench -- --infer-only=200
//! ```
//!
//! - default: for each model (`mlp,cnn,resnet8`) and each path (`ops`, the
//!   custom ops, the project's linear layer and in-place AdamW;
//!   `ops-unfused`, the same without the fused bn+relu / add+relu;
//!   `reference`, candle's own ops, `Linear` and `AdamW`), the median time of a
//!   training step (forward + backward + AdamW) and inference images/s.
//!   Paths alternate in rounds so background load hits them alike.
//! - `--path=NAME`: run only that path (`ops`, `ops-unfused`, `reference`).
//! - `--infer-batch=N`: time inference on batches of N random images
//!   (training steps stay at 128).
//! - `--gemm`: the machine's f32 GEMM ceiling through the `gemm` crate.
//! - `--profile`: per-op times, forward and forward + backward, both paths.
//! - `--infer-only=N`: N batches of ResNet-8 inference on the ops path alone
//!   (for a profiler).
//!
//! Threads: rayon's pool (`RAYON_NUM_THREADS`, default all cores). Like the
//! project's programs, it sets the allocator to keep freed memory
//! (`cascade_rl::alloc`) and candle's elementwise ops to the calling thread
//! (`cascade_rl::threads`).

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use cascade_rl::ops;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const BATCH: usize = 128;
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Ops,
    OpsUnfused,
    Reference,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Ops => "ops",
            Path::OpsUnfused => "ops-unfused",
            Path::Reference => "reference",
        }
    }
    fn conv(
        self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        s: usize,
        p: usize,
    ) -> Result<Tensor> {
        match self {
            Path::Reference => ops::reference::conv2d(x, w, b, s, p),
            _ => ops::conv2d(x, w, b, s, p),
        }
    }
    /// The ReLU a model written against the plain ops would use.
    /// A fully connected layer: `ops::linear` (the project's models' layer)
    /// on the ops paths, candle_nn's `Linear` on the reference path.
    fn linear(self, x: &Tensor, fc: &Linear) -> Result<Tensor> {
        match self {
            Path::Reference => fc.forward(x),
            _ => ops::linear(x, fc.weight(), fc.bias()),
        }
    }

    fn relu(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Path::Ops => ops::relu(x),
            _ => x.relu(),
        }
    }
    /// conv (with bias) -> ReLU -> 2x2 max pool.
    fn conv_relu_pool(self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            Path::Ops => ops::conv2d_relu_pool(x, w, Some(b), 1, 1, 2),
            Path::OpsUnfused => ops::max_pool2d(&ops::conv2d(x, w, Some(b), 1, 1)?.relu()?, 2),
            Path::Reference => {
                ops::reference::max_pool2d(&self.conv(x, w, Some(b), 1, 1)?.relu()?, 2)
            }
        }
    }
    fn add_relu(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            Path::Ops => ops::add_relu(a, b),
            _ => (a + b)?.relu(),
        }
    }
}

/// Batch norm parameters and running statistics.
struct Bn {
    gamma: Tensor,
    beta: Tensor,
    mean: Var,
    var: Var,
}

impl Bn {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get_with_hints(c, "weight", candle_nn::Init::Const(1.0))?;
        let beta = vb.get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?;
        let dev = vb.device();
        Ok(Bn {
            gamma,
            beta,
            mean: Var::zeros(c, DType::F32, dev)?,
            var: Var::ones(c, DType::F32, dev)?,
        })
    }

    /// Convolution (no bias, `k = w.dim(2)`, padding `k / 2`), batch norm,
    /// then ReLU when `relu`; updates the running statistics in training
    /// mode.
    fn conv_bn(
        &self,
        x: &Tensor,
        w: &Tensor,
        stride: usize,
        train: bool,
        relu: bool,
        path: Path,
    ) -> Result<Tensor> {
        let pad = w.dim(2)? / 2;
        let (m, v) = (self.mean.as_tensor(), self.var.as_tensor());
        let bn = ops::BatchNormParams {
            gamma: &self.gamma,
            beta: &self.beta,
            eps: EPS,
        };
        let (y, stats) = match (path, train) {
            (Path::Ops, true) => {
                let f = if relu {
                    ops::conv2d_bn_relu_train
                } else {
                    ops::conv2d_bn_train
                };
                let (y, mean, var) = f(x, w, stride, pad, &bn)?;
                (y, Some((mean, var)))
            }
            (Path::Ops, false) => {
                let f = if relu {
                    ops::conv2d_bn_relu_eval
                } else {
                    ops::conv2d_bn_eval
                };
                (f(x, w, stride, pad, &bn, m, v)?, None)
            }
            (_, true) => {
                let z = path.conv(x, w, None, stride, pad)?;
                let (y, mean, var) = if path == Path::Reference {
                    ops::reference::batch_norm_train(&z, &self.gamma, &self.beta, EPS)?
                } else {
                    ops::batch_norm_train(&z, &self.gamma, &self.beta, EPS)?
                };
                (if relu { y.relu()? } else { y }, Some((mean, var)))
            }
            (_, false) => {
                let z = path.conv(x, w, None, stride, pad)?;
                let y = if path == Path::Reference {
                    ops::reference::batch_norm_eval(&z, &self.gamma, &self.beta, m, v, EPS)?
                } else {
                    ops::batch_norm_eval(&z, &self.gamma, &self.beta, m, v, EPS)?
                };
                (if relu { y.relu()? } else { y }, None)
            }
        };
        if let Some((mean, var)) = stats {
            let upd = |run: &Var, batch: &Tensor| -> Result<()> {
                run.set(&((run.as_tensor() * (1.0 - MOMENTUM))? + (batch.detach() * MOMENTUM)?)?)
            };
            upd(&self.mean, &mean)?;
            upd(&self.var, &var)?;
        }
        Ok(y)
    }
}

fn conv_w(vb: &VarBuilder, name: &str, co: usize, ci: usize, k: usize) -> Result<Tensor> {
    let bound = 1.0 / ((ci * k * k) as f64).sqrt();
    vb.get_with_hints(
        (co, ci, k, k),
        name,
        candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )
}

struct Block {
    w1: Tensor,
    bn1: Bn,
    w2: Tensor,
    bn2: Bn,
    proj: Option<(Tensor, Bn)>,
    stride: usize,
}

impl Block {
    fn new(ci: usize, co: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let proj = if stride != 1 || ci != co {
            Some((
                conv_w(&vb, "proj.weight", co, ci, 1)?,
                Bn::new(co, vb.pp("proj.bn"))?,
            ))
        } else {
            None
        };
        Ok(Block {
            w1: conv_w(&vb, "conv1.weight", co, ci, 3)?,
            bn1: Bn::new(co, vb.pp("bn1"))?,
            w2: conv_w(&vb, "conv2.weight", co, co, 3)?,
            bn2: Bn::new(co, vb.pp("bn2"))?,
            proj,
            stride,
        })
    }

    fn forward(&self, x: &Tensor, train: bool, p: Path) -> Result<Tensor> {
        let h = self.bn1.conv_bn(x, &self.w1, self.stride, train, true, p)?;
        let h = self.bn2.conv_bn(&h, &self.w2, 1, train, false, p)?;
        let short = match &self.proj {
            Some((w, bn)) => bn.conv_bn(x, w, self.stride, train, false, p)?,
            None => x.clone(),
        };
        p.add_relu(&h, &short)
    }
}

enum Model {
    Mlp {
        fc1: Linear,
        fc2: Linear,
    },
    Cnn {
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
        fc: Linear,
    },
    ResNet8 {
        stem: Tensor,
        bn: Bn,
        blocks: Vec<Block>,
        fc: Linear,
    },
}

impl Model {
    fn new(name: &str, vb: VarBuilder) -> Result<Self> {
        Ok(match name {
            "mlp" => Model::Mlp {
                fc1: candle_nn::linear(784, 256, vb.pp("fc1"))?,
                fc2: candle_nn::linear(256, 10, vb.pp("fc2"))?,
            },
            "cnn" => Model::Cnn {
                w1: conv_w(&vb, "conv1.weight", 16, 1, 3)?,
                b1: vb.get_with_hints(16, "conv1.bias", candle_nn::Init::Const(0.0))?,
                w2: conv_w(&vb, "conv2.weight", 32, 16, 3)?,
                b2: vb.get_with_hints(32, "conv2.bias", candle_nn::Init::Const(0.0))?,
                fc: candle_nn::linear(32 * 7 * 7, 10, vb.pp("fc"))?,
            },
            "resnet8" => Model::ResNet8 {
                stem: conv_w(&vb, "stem.weight", 16, 1, 3)?,
                bn: Bn::new(16, vb.pp("bn"))?,
                blocks: vec![
                    Block::new(16, 16, 1, vb.pp("block1"))?,
                    Block::new(16, 32, 2, vb.pp("block2"))?,
                    Block::new(32, 64, 2, vb.pp("block3"))?,
                ],
                fc: candle_nn::linear(64, 10, vb.pp("fc"))?,
            },
            other => candle_core::bail!("unknown model {other:?} (expected mlp, cnn or resnet8)"),
        })
    }

    /// # Shapes
    /// `x: [b, 1, 28, 28]` -> logits `[b, 10]`
    fn forward(&self, x: &Tensor, train: bool, p: Path) -> Result<Tensor> {
        match self {
            Model::Mlp { fc1, fc2 } => {
                p.linear(&p.relu(&p.linear(&x.flatten_from(1)?, fc1)?)?, fc2)
            }
            Model::Cnn { w1, b1, w2, b2, fc } => {
                let h = p.conv_relu_pool(x, w1, b1)?;
                let h = p.conv_relu_pool(&h, w2, b2)?;
                p.linear(&h.flatten_from(1)?, fc)
            }
            Model::ResNet8 {
                stem,
                bn,
                blocks,
                fc,
            } => {
                let mut h = bn.conv_bn(x, stem, 1, train, true, p)?;
                for b in blocks {
                    h = b.forward(&h, train, p)?;
                }
                p.linear(&h.mean((2, 3))?, fc)
            }
        }
    }
}

/// The optimiser of a path: the in-place `ops::AdamW` the project trains
/// with on the ops paths, candle_nn's `AdamW` on the reference path.
enum Opt {
    Ops(ops::AdamW),
    Reference(candle_nn::AdamW),
}

impl Opt {
    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        match self {
            Opt::Ops(o) => o.step(grads),
            Opt::Reference(o) => o.step(grads),
        }
    }
}

struct Bench {
    model: Model,
    opt: Opt,
    path: Path,
    train_ms: Vec<f64>,
    /// forward, backward and optimizer times of each step
    parts_ms: Vec<[f64; 3]>,
    infer_ms: Vec<f64>,
    /// CPU time of each step, all threads
    cpu_ms: Vec<f64>,
}

impl Bench {
    fn new(name: &str, path: Path) -> Result<Self> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let model = Model::new(name, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let params = ParamsAdamW {
            lr: 1e-3,
            ..Default::default()
        };
        let opt = match path {
            Path::Reference => Opt::Reference(candle_nn::AdamW::new(vm.all_vars(), params)?),
            _ => Opt::Ops(ops::AdamW::new(vm.all_vars(), params)?),
        };
        Ok(Bench {
            model,
            opt,
            path,
            train_ms: vec![],
            parts_ms: vec![],
            infer_ms: vec![],
            cpu_ms: vec![],
        })
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) -> Result<f64> {
        let c = cpu_ms();
        let t = Instant::now();
        let logits = self.model.forward(x, true, self.path)?;
        let loss = candle_nn::loss::cross_entropy(&logits, y)?;
        let t_fwd = t.elapsed();
        let grads = loss.backward()?;
        let t_bwd = t.elapsed();
        self.opt.step(&grads)?;
        let total = t.elapsed();
        self.cpu_ms.push(cpu_ms() - c);
        let ms = |d: std::time::Duration| 1e3 * d.as_secs_f64();
        self.parts_ms
            .push([ms(t_fwd), ms(t_bwd - t_fwd), ms(total - t_bwd)]);
        Ok(ms(total))
    }

    fn infer(&self, x: &Tensor) -> Result<f64> {
        let t = Instant::now();
        let logits = self.model.forward(x, false, self.path)?;
        let _ = logits.argmax(D::Minus1)?;
        Ok(1e3 * t.elapsed().as_secs_f64())
    }
}

/// CPU time used so far by all threads of this process, in ms (from
/// `/proc/self/task/*/schedstat`; 0 where that is unavailable). On a shared
/// machine it measures the work of a step without the time spent waiting
/// for a core.
fn cpu_ms() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ns = 0u64;
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e6
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

fn random_batch(rng: &mut StdRng, n: usize) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..n * 784).map(|_| rng.random::<f32>()).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
    Ok((
        Tensor::from_vec(x, (n, 1, 28, 28), &Device::Cpu)?,
        Tensor::from_vec(y, n, &Device::Cpu)?,
    ))
}

fn train_bench(
    steps: usize,
    rounds: usize,
    models: &[&str],
    only: Option<&str>,
    infer_batch: usize,
    json: bool,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let (x, y) = random_batch(&mut rng, BATCH)?;
    let xi = random_batch(&mut rng, infer_batch)?.0;
    println!("threads: {}", rayon::current_num_threads());
    for &name in models {
        let paths: &[Path] = if name != "mlp" {
            &[Path::Ops, Path::OpsUnfused, Path::Reference]
        } else {
            &[Path::Ops, Path::Reference]
        };
        let mut benches = paths
            .iter()
            .filter(|p| only.is_none_or(|o| o == p.name()))
            .map(|&p| Bench::new(name, p))
            .collect::<Result<Vec<_>>>()?;
        for b in benches.iter_mut() {
            for _ in 0..2 {
                b.step(&x, &y)?;
            }
        }
        for _ in 0..rounds {
            for b in benches.iter_mut() {
                // The reference path is slow: fewer steps keep rounds short.
                let n = if b.path == Path::Reference {
                    steps.div_ceil(4).max(2)
                } else {
                    steps
                };
                for _ in 0..n {
                    let ms = b.step(&x, &y)?;
                    b.train_ms.push(ms);
                }
                for _ in 0..n {
                    let ms = b.infer(&xi)?;
                    b.infer_ms.push(ms);
                }
            }
        }
        let base = median(&benches[benches.len() - 1].train_ms);
        for b in &benches {
            let (tm, im) = (median(&b.train_ms), median(&b.infer_ms));
            let img_s = infer_batch as f64 / (im / 1e3);
            let part = |i: usize| median(&b.parts_ms.iter().map(|p| p[i]).collect::<Vec<_>>());
            let (fw, bw, op) = (part(0), part(1), part(2));
            let cpu = median(&b.cpu_ms);
            if json {
                println!(
                    "{{\"lib\": \"candle-{}\", \"model\": \"{name}\", \"train_ms\": {tm:.3}, \"train_cpu_ms\": {cpu:.3}, \"fwd_ms\": {fw:.3}, \"bwd_ms\": {bw:.3}, \"opt_ms\": {op:.3}, \"infer_batch\": {infer_batch}, \"infer_img_s\": {img_s:.1}}}",
                    b.path.name()
                );
            } else {
                println!(
                    "{name:<8} {:<12} train {tm:8.2} ms/step, cpu {cpu:8.2} ms (fwd {fw:.1} + bwd {bw:.1} + AdamW {op:.1}; {:5.2}x faster than reference)  inference {img_s:9.0} img/s",
                    b.path.name(),
                    base / tm
                );
            }
        }
    }
    Ok(())
}

fn gemm_ceiling() -> Result<()> {
    let threads = rayon::current_num_threads();
    let mut rng = StdRng::seed_from_u64(0);
    for n in [512usize, 1024, 2048] {
        let a: Vec<f32> = (0..n * n).map(|_| rng.random::<f32>()).collect();
        let b: Vec<f32> = (0..n * n).map(|_| rng.random::<f32>()).collect();
        let mut c = vec![0f32; n * n];
        let mut run = || {
            // SAFETY: three n x n row-major matrices, `c` exclusively borrowed.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                )
            }
        };
        run();
        let reps = (4096 / n).pow(2).clamp(3, 32);
        let mut times = vec![];
        for _ in 0..reps {
            let t = Instant::now();
            run();
            times.push(t.elapsed().as_secs_f64());
        }
        let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let med = median(&times);
        let gf = |s: f64| 2.0 * (n as f64).powi(3) / s / 1e9;
        println!(
            "gemm f32 {n}x{n}x{n}, {threads} threads: {:.1} GFLOP/s median, {:.1} best",
            gf(med),
            gf(best)
        );
    }
    Ok(())
}

/// Times `f` (after one warm-up call): median over `reps` calls, in ms.
fn time<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<f64> {
    f()?;
    let mut v = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(1e3 * t.elapsed().as_secs_f64());
    }
    Ok(median(&v))
}

fn profile() -> Result<()> {
    let dev = Device::Cpu;
    let reps = 5;
    println!("| op (batch {BATCH}) | reference fwd | ops fwd | reference fwd+bwd | ops fwd+bwd | speed-up fwd+bwd |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, r: [f64; 4]| {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}x |",
            r[0],
            r[1],
            r[2],
            r[3],
            r[2] / r[3]
        );
    };
    // (c_in, c_out, hw, stride, k, input needs grad)
    let convs = [
        (1, 16, 28, 1, 3, false),
        (16, 16, 28, 1, 3, true),
        (16, 32, 14, 1, 3, true),
        (16, 32, 28, 2, 3, true),
        (32, 32, 14, 1, 3, true),
        (32, 64, 14, 2, 3, true),
        (64, 64, 7, 1, 3, true),
        (16, 32, 28, 2, 1, true),
    ];
    for (ci, co, hw, s, k, xgrad) in convs {
        let xt = Tensor::randn(0f32, 1., (BATCH, ci, hw, hw), &dev)?;
        let x = if xgrad {
            Var::from_tensor(&xt)?.as_tensor().clone()
        } else {
            xt
        };
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (co, ci, k, k), &dev)?)?;
        let p = k / 2;
        let mut r = [0.0; 4];
        for (j, reference) in [true, false].into_iter().enumerate() {
            let f = |x: &Tensor| {
                if reference {
                    ops::reference::conv2d(x, &w, None, s, p)
                } else {
                    ops::conv2d(x, &w, None, s, p)
                }
            };
            r[j] = time(reps, || f(&x).map(|_| ()))?;
            r[2 + j] = time(reps, || f(&x)?.sum_all()?.backward().map(|_| ()))?;
        }
        let tag = if xgrad { "" } else { " (input without grad)" };
        row(&format!("conv {ci}->{co} {k}x{k} s{s} @{hw}{tag}"), r);
    }
    for (c, hw) in [(16usize, 28usize), (32, 14), (64, 7)] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (BATCH, c, hw, hw), &dev)?)?;
        let g = Var::ones(c, DType::F32, &dev)?;
        let b = Var::zeros(c, DType::F32, &dev)?;
        let mut r = [0.0; 4];
        for (j, reference) in [true, false].into_iter().enumerate() {
            let f = || {
                if reference {
                    ops::reference::batch_norm_train(&x, &g, &b, EPS)
                } else {
                    ops::batch_norm_train(&x, &g, &b, EPS)
                }
            };
            r[j] = time(reps, || f().map(|_| ()))?;
            r[2 + j] = time(reps, || f()?.0.sum_all()?.backward().map(|_| ()))?;
        }
        row(&format!("batch norm (train) {c} ch @{hw}"), r);
        let mut r = [0.0; 4];
        for (j, reference) in [true, false].into_iter().enumerate() {
            let f = || if reference { x.relu() } else { ops::relu(&x) };
            r[j] = time(reps, || f().map(|_| ()))?;
            r[2 + j] = time(reps, || f()?.sum_all()?.backward().map(|_| ()))?;
        }
        row(&format!("relu {c} ch @{hw}"), r);
        let mut r = [0.0; 4];
        for (j, reference) in [true, false].into_iter().enumerate() {
            let f = || {
                if reference {
                    ops::reference::max_pool2d(&x, 2)
                } else {
                    ops::max_pool2d(&x, 2)
                }
            };
            r[j] = time(reps, || f().map(|_| ()))?;
            r[2 + j] = time(reps, || f()?.sum_all()?.backward().map(|_| ()))?;
        }
        row(&format!("max_pool2d(2) {c} ch @{hw}"), r);
    }
    Ok(())
}

/// ResNet-8 inference alone on the ops path, `n` batches after two training
/// steps, for a profiler to look at; prints the median ms per batch.
fn infer_only(n: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(0);
    let (x, y) = random_batch(&mut rng, BATCH)?;
    let mut b = Bench::new("resnet8", Path::Ops)?;
    for _ in 0..2 {
        b.step(&x, &y)?;
    }
    let ms = (0..n).map(|_| b.infer(&x)).collect::<Result<Vec<_>>>()?;
    println!(
        "resnet8 inference: {:.3} ms per batch of {BATCH}",
        median(&ms)
    );
    Ok(())
}

/// Errors print as one `error: ...` line (their `Display`), exit status 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // As the project's programs do: keep freed buffers instead of mapping
    // and zeroing fresh pages every step.
    cascade_rl::alloc::keep_freed_memory();
    cascade_rl::threads::single_candle_thread();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--gemm") {
        return Ok(gemm_ceiling()?);
    }
    if args.iter().any(|a| a == "--profile") {
        return Ok(profile()?);
    }
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("--infer-only=")) {
        let n = n
            .parse()
            .map_err(|_| format!("--infer-only: expected a number, got {n:?}"))?;
        return Ok(infer_only(n)?);
    }
    let json = args.iter().any(|a| a == "--json");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let steps = match pos.first() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("steps: expected a number, got {s:?}"))?,
        None => 20,
    };
    let rounds = match pos.get(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("rounds: expected a number, got {s:?}"))?,
        None => 3,
    };
    let models: Vec<&str> = pos
        .get(2)
        .map_or("mlp,cnn,resnet8", |s| s.as_str())
        .split(',')
        .collect();
    let only = args.iter().find_map(|a| a.strip_prefix("--path="));
    let infer_batch = match args.iter().find_map(|a| a.strip_prefix("--infer-batch=")) {
        Some(s) => s
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| format!("--infer-batch: expected a positive number, got {s:?}"))?,
        None => BATCH,
    };
    train_bench(steps, rounds, &models, only, infer_batch, json)?;
    Ok(())
}

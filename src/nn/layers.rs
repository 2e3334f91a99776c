//! The layers of the classifier zoo (convolution, batch norm, linear, a
//! convolution with its batch norm) and the pooling functions. Each layer
//! is a struct of tensors built from a [`VarBuilder`] (see [`crate::nn`]).

use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::flops::Walker;
use crate::ops;

/// Batch-norm epsilon, PyTorch's default.
pub const BN_EPS: f64 = 1e-5;
/// Batch-norm running-statistics momentum, PyTorch's default.
pub const BN_MOMENTUM: f64 = 0.1;

/// Options of a [`Conv2d`]: square stride and zero padding, optional bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Whether the layer has a bias (off when a batch norm follows).
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            bias: true,
        }
    }
}

/// A 2-D convolution with square kernels, OIHW weights.
#[derive(Debug)]
pub struct Conv2d {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

impl Conv2d {
    /// `in_channels -> out_channels` with a `kernel x kernel` window. Weights
    /// are `weight: [out, in, k, k]` (He normal, fan-in), `bias: [out]`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        cfg: Conv2dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel == 0 || cfg.stride == 0 {
            candle_core::bail!(
                "conv2d {in_channels}->{out_channels} kernel {kernel} stride {}: sizes must be positive",
                cfg.stride
            )
        }
        let weight = vb.get_with_hints(
            (out_channels, in_channels, kernel, kernel),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = if cfg.bias {
            let bound = 1.0 / ((in_channels * kernel * kernel) as f64).sqrt();
            Some(vb.get_with_hints(
                out_channels,
                "bias",
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Ok(Self {
            name: vb.prefix(),
            weight,
            bias,
            cfg,
        })
    }

    /// A convolution from given tensors (used by batch-norm folding), named
    /// `name`.
    pub fn from_tensors(
        name: &str,
        weight: Tensor,
        bias: Option<Tensor>,
        cfg: Conv2dConfig,
    ) -> Self {
        Self {
            name: name.into(),
            weight,
            bias,
            cfg,
        }
    }

    /// An independent copy of the weights and bias, as plain tensors (not
    /// variables): for inference, e.g. in a folded network. Not `Clone`,
    /// since a clone would share the weights with the original.
    pub fn fork(&self) -> Result<Self> {
        Ok(Self {
            name: self.name.clone(),
            weight: self.weight.detach().copy()?,
            bias: self.bias.as_ref().map(|b| b.detach().copy()).transpose()?,
            cfg: self.cfg,
        })
    }

    /// The parameter prefix (`layer2.0.conv1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weights, `[out, in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride and padding.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// Applies the convolution.
    ///
    /// # Shapes
    /// `x: [b, in, h, w] -> [b, out, (h + 2p - k) / s + 1, (w + 2p - k) / s + 1]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.cfg.stride,
            self.cfg.padding,
        )
    }
}

/// Batch normalisation over the channels of an NCHW tensor, with running
/// statistics (momentum 0.1, unbiased running variance as in PyTorch) kept
/// as variables of the [`VarMap`](candle_nn::VarMap) so they are saved with
/// the weights. They get no gradient; optimisers skip them.
#[derive(Debug)]
pub struct BatchNorm2d {
    name: String,
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// A batch norm over `num_features` channels: `weight, bias, running_mean,
    /// running_var: [num_features]`.
    pub fn new(num_features: usize, vb: VarBuilder) -> Result<Self> {
        if num_features == 0 {
            candle_core::bail!("batch norm over 0 features")
        }
        let weight = vb.get_with_hints(num_features, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.0))?;
        let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.0))?;
        Ok(Self {
            name: vb.prefix(),
            weight,
            bias,
            // Shares storage with the VarMap's variable when built from one;
            // when loaded from a plain tensor store it is a private copy.
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
        })
    }

    /// The parameter prefix (`layer2.0.bn1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Scale `gamma`, `[c]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Shift `beta`, `[c]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Running mean, `[c]`.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// Running (unbiased) variance, `[c]`.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// Epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalises with batch statistics (and updates the running ones) when
    /// `train`, with the running statistics otherwise.
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> [b, c, h, w]`
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, false)
    }

    /// [`BatchNorm2d::forward_t`] followed by a ReLU, fused.
    ///
    /// # Shapes
    /// `x: [b, c, h, w] -> [b, c, h, w]`
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, true)
    }

    fn forward_impl(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if !train {
            let f = if relu {
                ops::batch_norm_relu_eval
            } else {
                ops::batch_norm_eval
            };
            return f(
                x,
                &self.weight,
                &self.bias,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                self.eps,
            );
        }
        let f = if relu {
            ops::batch_norm_relu_train
        } else {
            ops::batch_norm_train
        };
        let (y, mean, var) = f(x, &self.weight, &self.bias, self.eps)?;
        self.update_running(&y, &mean, &var)?;
        Ok(y)
    }

    /// The parameters the fused conv + batch-norm ops take.
    fn params(&self) -> ops::BatchNormParams<'_> {
        ops::BatchNormParams {
            gamma: &self.weight,
            beta: &self.bias,
            eps: self.eps,
        }
    }

    /// Moves the running statistics towards a training batch's `mean` and
    /// (biased) `var`, both `[c]`, taken over the `[b, c, h, w]` tensor `y`.
    fn update_running(&self, y: &Tensor, mean: &Tensor, var: &Tensor) -> Result<()> {
        let (b, _, h, w) = y.dims4()?;
        let n = (b * h * w) as f64;
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let m = self.momentum;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (var.detach() * (m * unbiased))?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }
}

/// A fully connected layer `y = x W^T + b`, PyTorch layout.
#[derive(Debug)]
pub struct Linear {
    name: String,
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `in_features -> out_features`: `weight: [out, in]`, `bias: [out]`,
    /// both `U(-1/sqrt(in), 1/sqrt(in))` as in PyTorch.
    pub fn new(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            candle_core::bail!("linear {in_features}->{out_features}: sizes must be positive")
        }
        let bound = 1.0 / (in_features as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((out_features, in_features), "weight", init)?;
        let bias = vb.get_with_hints(out_features, "bias", init)?;
        Ok(Self {
            name: vb.prefix(),
            weight,
            bias,
        })
    }

    /// An independent copy of the weights and bias, as plain tensors (not
    /// variables): for inference, e.g. in a folded network. Not `Clone`,
    /// since a clone would share the weights with the original.
    pub fn fork(&self) -> Result<Self> {
        Ok(Self {
            name: self.name.clone(),
            weight: self.weight.detach().copy()?,
            bias: self.bias.detach().copy()?,
        })
    }

    /// The parameter prefix (`fc`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weights, `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// `x: [b, in] -> [b, out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, Some(&self.bias))
    }
}

/// A convolution followed by an optional batch norm. After
/// [`ConvBn::fold_batch_norm`] the batch norm is merged into the
/// convolution's weights and bias (inference only).
#[derive(Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: Option<BatchNorm2d>,
}

impl ConvBn {
    /// A `k x k` convolution at `vb_conv` and, when `vb_bn` is given, a batch
    /// norm at `vb_bn`; the convolution has a bias only without batch norm.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb_conv: VarBuilder,
        vb_bn: Option<VarBuilder>,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            stride,
            padding,
            bias: vb_bn.is_none(),
        };
        let conv = Conv2d::new(in_channels, out_channels, kernel, cfg, vb_conv)?;
        let bn = match vb_bn {
            Some(vb) => Some(BatchNorm2d::new(out_channels, vb)?),
            None => None,
        };
        Ok(Self { conv, bn })
    }

    /// Convolution then batch norm.
    ///
    /// # Shapes
    /// `x: [b, in, h, w] -> [b, out, h', w']` (see [`Conv2d::forward`])
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, false)
    }

    /// Convolution, batch norm and ReLU, fused into one op.
    ///
    /// # Shapes
    /// `x: [b, in, h, w] -> [b, out, h', w']` (see [`Conv2d::forward`])
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, true)
    }

    /// Convolution, batch norm, ReLU and a `k x k` max-pool (stride `k`);
    /// without batch norm all four run as one fused op.
    ///
    /// # Shapes
    /// `x: [b, in, h, w] -> [b, out, h' / k, w' / k]` (`h', w'` as in
    /// [`Conv2d::forward`])
    pub fn forward_relu_pool_t(&self, x: &Tensor, train: bool, k: usize) -> Result<Tensor> {
        if self.bn.is_some() {
            return ops::max_pool2d(&self.forward_relu_t(x, train)?, k);
        }
        let Conv2dConfig {
            stride, padding, ..
        } = self.conv.config();
        ops::conv2d_relu_pool(x, self.conv.weight(), self.conv.bias(), stride, padding, k)
    }

    fn forward_impl(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let Some(bn) = &self.bn else {
            let y = self.conv.forward(x)?;
            return if relu { ops::relu(&y) } else { Ok(y) };
        };
        let w = self.conv.weight();
        let Conv2dConfig {
            stride, padding, ..
        } = self.conv.config();
        if train {
            let f = if relu {
                ops::conv2d_bn_relu_train
            } else {
                ops::conv2d_bn_train
            };
            let (y, mean, var) = f(x, w, stride, padding, &bn.params())?;
            bn.update_running(&y, &mean, &var)?;
            Ok(y)
        } else {
            let f = if relu {
                ops::conv2d_bn_relu_eval
            } else {
                ops::conv2d_bn_eval
            };
            f(
                x,
                w,
                stride,
                padding,
                &bn.params(),
                bn.running_mean(),
                bn.running_var(),
            )
        }
    }

    /// Adds the convolution and its batch norm to `wk` for an input of
    /// shape `[c, h, w]`; returns the output shape.
    pub(crate) fn cost(&self, input: [usize; 3], wk: &mut Walker) -> Result<[usize; 3]> {
        let out = wk.conv(&self.conv, input)?;
        if let Some(bn) = &self.bn {
            wk.batch_norm(bn, out);
        }
        Ok(out)
    }

    /// True while a batch norm follows the convolution (not yet folded).
    pub fn has_batch_norm(&self) -> bool {
        self.bn.is_some()
    }

    /// The layer with its batch norm folded into the convolution using the
    /// running statistics ([`ops::fold_bn_into_conv`]). Outputs equal
    /// `forward_t(x, false)` up to rounding; without a batch norm, an
    /// independent copy ([`Conv2d::fork`]). The new tensors are plain
    /// tensors, not variables: the result is for inference only.
    pub fn fold_batch_norm(&self) -> Result<ConvBn> {
        let Some(bn) = &self.bn else {
            return Ok(ConvBn {
                conv: self.conv.fork()?,
                bn: None,
            });
        };
        let (w, b) = ops::fold_bn_into_conv(
            self.conv.weight(),
            self.conv.bias(),
            bn.weight(),
            bn.bias(),
            bn.running_mean(),
            bn.running_var(),
            bn.eps(),
        )?;
        let cfg = Conv2dConfig {
            bias: true,
            ..self.conv.config()
        };
        Ok(ConvBn {
            conv: Conv2d::from_tensors(self.conv.name(), w, Some(b), cfg),
            bn: None,
        })
    }
}

// ---------------------------------------------------------------------------
// Functional helpers
// ---------------------------------------------------------------------------

/// Global average pooling.
///
/// # Shapes
/// `x: [b, c, h, w] -> [b, c]`
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean(3)?.mean(2)
}

/// Non-overlapping `k x k` average pooling; trailing rows/columns that do not
/// fill a window are dropped (like PyTorch's `avg_pool2d(k)`).
///
/// # Shapes
/// `x: [b, c, h, w] -> [b, c, h / k, w / k]`
pub fn avg_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if k == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / k, w / k);
    if ho == 0 || wo == 0 {
        candle_core::bail!("avg_pool2d: window {k} larger than the {h}x{w} input")
    }
    let x = x.narrow(2, 0, ho * k)?.narrow(3, 0, wo * k)?.contiguous()?;
    x.reshape((b, c, ho, k, wo, k))?.mean(5)?.mean(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{is_buffer, seeded_var_builder, trainable_vars};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn batch_norm_updates_running_stats_like_pytorch() {
        // torch: bn = nn.BatchNorm2d(1); x = torch.tensor([1.,2.,3.,4.]).view(2,1,1,2)
        // bn(x); bn.running_mean -> 0.25, bn.running_var -> 0.9*1 + 0.1*(5/3) = 1.0666667
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(1, vb.pp("bn")).unwrap();
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)
            .unwrap()
            .reshape((2, 1, 1, 2))
            .unwrap();
        let y = bn.forward_t(&x, true).unwrap();
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        // (x - 2.5) / sqrt(1.25 + 1e-5)
        let expect = [-1.3416355f32, -0.4472118, 0.4472118, 1.3416355];
        for (a, b) in y.iter().zip(expect) {
            assert!((a - b).abs() < 1e-5, "{y:?}");
        }
        let rm: Vec<f32> = vm.data().lock().unwrap()["bn.running_mean"]
            .as_tensor()
            .to_vec1()
            .unwrap();
        let rv: Vec<f32> = vm.data().lock().unwrap()["bn.running_var"]
            .as_tensor()
            .to_vec1()
            .unwrap();
        assert!((rm[0] - 0.25).abs() < 1e-6, "{rm:?}");
        assert!((rv[0] - 1.0666667).abs() < 1e-6, "{rv:?}");
        assert!(is_buffer("bn.running_var") && !is_buffer("bn.weight"));
        assert_eq!(trainable_vars(&vm).unwrap().len(), 2);
    }

    #[test]
    fn folded_conv_bn_matches_eval_forward() {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 3, DType::F32, &Device::Cpu);
        let cb = ConvBn::new(2, 3, 3, 1, 1, vb.pp("conv"), Some(vb.pp("bn"))).unwrap();
        let x = Tensor::randn(0f32, 1., (4, 2, 5, 5), &Device::Cpu).unwrap();
        // Two training passes move the running statistics away from 0 / 1.
        cb.forward_t(&x, true).unwrap();
        cb.forward_t(&(&x * 2.0).unwrap(), true).unwrap();
        let a = cb.forward_t(&x, false).unwrap();
        let folded = cb.fold_batch_norm().unwrap();
        assert!(!folded.has_batch_norm());
        let b = folded.forward_t(&x, false).unwrap();
        let diff: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn pooling_and_subsampling_shapes_and_values() {
        let x = Tensor::arange(0f32, 2. * 5. * 5., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 5, 5))
            .unwrap();
        // Rows and columns 0, 2, 4 (PyTorch's `x[:, :, ::2, ::2]`), one zero
        // channel before.
        let s = crate::ops::subsample_pad(&x, 2, 1, 0).unwrap();
        assert_eq!(s.dims(), &[1, 3, 3, 3]);
        let v: Vec<f32> = s.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v[..9].iter().all(|&z| z == 0.0));
        assert_eq!(&v[9..12], &[0., 2., 4.]);
        assert_eq!(v[12], 10.);
        assert_eq!(v[18], 25.);
        let p = avg_pool2d(&x, 2).unwrap();
        assert_eq!(p.dims(), &[1, 2, 2, 2]);
        let v: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v[0], (0. + 1. + 5. + 6.) / 4.);
        let g = global_avg_pool(&x).unwrap();
        assert_eq!(g.dims(), &[1, 2]);
        assert_eq!(g.to_vec2::<f32>().unwrap()[0][0], 12.0);
    }
}

//! Thin layer types for the classifier zoo, built on [`crate::ops`] so that
//! every convolution, batch norm and max-pool takes the fast CPU path.
//!
//! Each layer is a struct of tensors plus a constructor taking a
//! [`VarBuilder`]; the same code initialises fresh weights (from a
//! [`VarMap`], see [`seeded_var_builder`]) and loads a checkpoint. Parameter
//! names follow PyTorch (`weight`, `bias`, `running_mean`, `running_var`), so
//! a checkpoint is a plain safetensors file a PyTorch user can read with
//! `safetensors.torch.load_file` and `load_state_dict(strict=False)`
//! (PyTorch's `num_batches_tracked` counters are not stored).
//!
//! Initialisation follows PyTorch: convolutions that feed a ReLU use He
//! (Kaiming) normal initialisation with fan-in; linear layers and conv biases
//! use `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; batch norm starts at
//! `gamma = 1, beta = 0, running_mean = 0, running_var = 1`.
//!
//! [`layers`] holds the layers and pooling functions, [`varmap`] the
//! [`VarMap`] utilities (seeded initialisation, the variables by name,
//! snapshots); both are re-exported here.
//!
//! [`VarMap`]: candle_nn::VarMap
//! [`VarBuilder`]: candle_nn::VarBuilder

pub mod layers;
pub mod varmap;

pub use layers::{
    avg_pool2d, global_avg_pool, BatchNorm2d, Conv2d, Conv2dConfig, ConvBn, Linear, BN_EPS,
    BN_MOMENTUM,
};
pub use varmap::{
    is_buffer, named_vars, restore_snapshot, seeded_var_builder, snapshot, trainable_vars,
};

//! Cascade presets: a data set, the stage models in order of increasing
//! cost, and the training recipe of each stage.
//!
//! | preset | data | stages | MACs, first to last |
//! |---|---|---|---|
//! | `fmnist-4` | Fashion-MNIST | linear, mlp-256, cnn-8-16-fc64, resnet-20 | 7.8 K .. 27 M |
//! | `mnist-4` | MNIST | the same | the same |
//! | `synthetic-3` | built-in synthetic | linear, mlp-64, cnn-8-16-fc32 | trains in seconds; for tests |
//! | `cifar10-resnet` | CIFAR-10 | resnet-8, 20, 32, 56, 110 (He et al. 2016) | 12.2 M .. 253 M |
//!
//! The recipes are defaults; `epochs` can be overridden per run. The
//! `fmnist-4` recipe is sized for a CPU run of about half an hour on two
//! cores with the crate's ops (the ResNet-20's 25 epochs of SGD with
//! Nesterov momentum, crops and flips take most of it); `cifar10-resnet`
//! carries the paper's full schedule (SGD,
//! momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 50% and 75% of
//! training, flips and 4-pixel crops), which is a GPU job.

use serde::{Deserialize, Serialize};

use crate::data::{SplitConfig, SyntheticConfig};
use crate::error::{Error, Result};
use crate::models::ModelConfig;
use crate::train::{Augment, LrSchedule, OptimizerConfig, TrainConfig};

/// One stage of a preset: the model and how to train it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePreset {
    /// The classifier.
    pub model: ModelConfig,
    /// Its supervised training recipe.
    pub train: TrainConfig,
}

/// A named cascade recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    /// Preset name (`fmnist-4`, ...).
    pub name: String,
    /// Data set name, as [`crate::data::Splits::load`] takes it.
    pub dataset: String,
    /// One line on what it is for.
    pub description: String,
    /// Share of the training set held out for validation.
    pub val_fraction: f64,
    /// The stages, cheapest first.
    pub stages: Vec<StagePreset>,
}

/// Names of the built-in presets.
pub const PRESET_NAMES: [&str; 4] = ["fmnist-4", "mnist-4", "synthetic-3", "cifar10-resnet"];

fn stage(model: &str, train: TrainConfig) -> StagePreset {
    StagePreset {
        model: model.parse().expect("built-in model names parse"),
        train,
    }
}

fn adamw(lr: f64, weight_decay: f64, epochs: usize, batch_size: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size,
        optimizer: OptimizerConfig::adamw(lr, weight_decay),
        schedule: LrSchedule::Cosine,
        ..Default::default()
    }
}

/// The last stage's recipe in the 28x28 ladders: SGD with Nesterov
/// momentum, one epoch of linear warm-up then cosine decay, random crops
/// with 2-pixel padding and horizontal flips.
fn sgd_nesterov(lr: f64, weight_decay: f64, epochs: usize, batch_size: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size,
        optimizer: OptimizerConfig::Sgd {
            lr,
            momentum: 0.9,
            weight_decay,
            nesterov: true,
        },
        schedule: LrSchedule::Cosine,
        warmup_epochs: 1.0,
        augment: Augment {
            hflip: true,
            crop_padding: 2,
        },
        ..Default::default()
    }
}

/// The four-stage image-classifier ladder for 28x28 grey-scale sets.
///
/// The last stage is a ResNet-20: on Fashion-MNIST a ResNet-8 (8.4 to 8.8%
/// validation error after 8 epochs) was no better than the CNN that costs
/// 3.6% as much, which leaves a policy nothing to gain by forwarding.
fn ladder_28(name: &str, dataset: &str, description: &str) -> Preset {
    Preset {
        name: name.into(),
        dataset: dataset.into(),
        description: description.into(),
        val_fraction: 0.1,
        stages: vec![
            stage("linear", adamw(1e-3, 0.0, 4, 128)),
            stage("mlp-256", adamw(1e-3, 1e-4, 8, 128)),
            stage("cnn-8-16-fc64", adamw(2e-3, 1e-4, 8, 128)),
            stage("resnet-20", sgd_nesterov(0.1, 5e-4, 25, 128)),
        ],
    }
}

impl Preset {
    /// The built-in preset called `name`.
    pub fn by_name(name: &str) -> Result<Preset> {
        let p = match name {
            "fmnist-4" => ladder_28(
                "fmnist-4",
                "fashion-mnist",
                "Fashion-MNIST: softmax regression, MLP, small CNN, ResNet-20",
            ),
            "mnist-4" => ladder_28(
                "mnist-4",
                "mnist",
                "MNIST: softmax regression, MLP, small CNN, ResNet-20",
            ),
            "synthetic-3" => Preset {
                name: "synthetic-3".into(),
                dataset: "synthetic".into(),
                description:
                    "built-in synthetic data (NOT real data): linear, MLP, CNN; trains in seconds"
                        .into(),
                val_fraction: 0.1,
                stages: vec![
                    stage("linear", adamw(1e-2, 0.0, 6, 64)),
                    stage("mlp-64", adamw(3e-3, 0.0, 10, 64)),
                    stage("cnn-8-16-fc32", adamw(3e-3, 0.0, 8, 64)),
                ],
            },
            "cifar10-resnet" => {
                let sgd = TrainConfig {
                    epochs: 164,
                    batch_size: 128,
                    optimizer: OptimizerConfig::Sgd {
                        lr: 0.1,
                        momentum: 0.9,
                        weight_decay: 1e-4,
                        nesterov: false,
                    },
                    schedule: LrSchedule::Step {
                        at: vec![0.5, 0.75],
                        gamma: 0.1,
                    },
                    warmup_epochs: 1.0,
                    augment: Augment {
                        hflip: true,
                        crop_padding: 4,
                    },
                    ..Default::default()
                };
                Preset {
                    name: "cifar10-resnet".into(),
                    dataset: "cifar10".into(),
                    description:
                        "CIFAR-10: ResNet-8/20/32/56/110 of He et al. 2016, as in the paper".into(),
                    val_fraction: 0.1,
                    stages: [8, 20, 32, 56, 110]
                        .iter()
                        .map(|d| stage(&format!("resnet-{d}"), sgd.clone()))
                        .collect(),
                }
            }
            _ => {
                return Err(Error::Config(format!(
                    "unknown preset '{name}' (known: {})",
                    PRESET_NAMES.join(", ")
                )))
            }
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks every stage's model and recipe.
    pub fn validate(&self) -> Result<()> {
        if self.stages.len() < 2 {
            return Err(Error::Config(format!(
                "preset '{}': a cascade needs at least 2 stages, got {}",
                self.name,
                self.stages.len()
            )));
        }
        for (i, s) in self.stages.iter().enumerate() {
            let at = || format!("preset '{}' stage {}", self.name, i + 1);
            s.model.validate().map_err(|e| e.in_config(at()))?;
            s.train.validate().map_err(|e| e.in_config(at()))?;
        }
        Ok(())
    }

    /// The same preset with every stage trained for `epochs` epochs.
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        for s in &mut self.stages {
            s.train.epochs = epochs;
        }
        self
    }

    /// True for the built-in synthetic data set.
    pub fn is_synthetic(&self) -> bool {
        self.dataset == "synthetic"
    }

    /// The split settings for a run with `seed`.
    pub fn split_config(&self, seed: u64) -> SplitConfig {
        SplitConfig {
            val_fraction: self.val_fraction,
            seed,
            ..Default::default()
        }
    }

    /// Input shape `(c, h, w)` and class count of the preset's data set,
    /// without reading the data (the synthetic set is generated, tiny).
    pub fn input_spec(&self) -> Result<([usize; 3], usize)> {
        dataset_spec(&self.dataset)
    }
}

/// Input shape and class count of a data set by name.
pub fn dataset_spec(dataset: &str) -> Result<([usize; 3], usize)> {
    match dataset {
        "fashion-mnist" | "mnist" | "kmnist" => Ok(([1, 28, 28], 10)),
        "cifar10" => Ok(([3, 32, 32], 10)),
        "cifar100" => Ok(([3, 32, 32], 100)),
        "synthetic" => {
            // Read the shape from the generator itself.
            let cfg = SplitConfig {
                synthetic: SyntheticConfig {
                    n_train: 16,
                    n_test: 4,
                    ..Default::default()
                },
                val_fraction: 0.25,
                ..Default::default()
            };
            let s = crate::data::Splits::load("synthetic", None, &cfg)?;
            Ok((s.train.shape, s.train.num_classes()))
        }
        other => Err(Error::Config(format!("unknown data set '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flops;

    #[test]
    fn presets_validate_and_costs_increase() {
        for name in PRESET_NAMES {
            let p = Preset::by_name(name).unwrap();
            assert_eq!(p.name, name);
            let (shape, classes) = p.input_spec().unwrap();
            let macs: Vec<u64> = p
                .stages
                .iter()
                .map(|s| flops::count(&s.model, shape, classes).unwrap().macs)
                .collect();
            assert!(macs.windows(2).all(|w| w[0] < w[1]), "{name}: {macs:?}");
        }
        let err = Preset::by_name("imagenet-9").unwrap_err().to_string();
        assert!(err.contains("fmnist-4"), "{err}");
    }

    #[test]
    fn fmnist_ladder_spans_two_orders_of_magnitude() {
        let p = Preset::by_name("fmnist-4").unwrap();
        let (shape, classes) = p.input_spec().unwrap();
        assert_eq!((shape, classes), ([1, 28, 28], 10));
        let first = flops::count(&p.stages[0].model, shape, classes)
            .unwrap()
            .macs;
        let last = flops::count(&p.stages[3].model, shape, classes)
            .unwrap()
            .macs;
        assert!(last >= 100 * first, "{first} .. {last}");
        assert_eq!(p.with_epochs(1).stages[3].train.epochs, 1);
    }
}

//! The data of a study: the classifiers' training split, the agents'
//! held-out training images, validation and test.
//!
//! Classifiers fit their own training images far better than new ones (on
//! the synthetic set a linear stage is right on 96% of its training images
//! and 56% of new ones). A stopping policy trained on those outputs learns
//! that early stages are right and stops too early everywhere else. So a
//! share of the training split ([`super::PretrainConfig::agent_fraction`])
//! is held out from pretraining: the cascade trains on the first part (the
//! split's first `n_cls` images, as `max_train` takes them), the learned
//! agents on the rest, and thresholds, early stopping and every choice on
//! the validation split. With `agent_fraction = 0` the agents train on the
//! classifiers' own training images.

use cascade_rl::data::{renormalize, same_images, Dataset, SplitConfig, Splits};
use cascade_rl::presets::Preset;
use cascade_rl::train::derive_seed;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::config::StudyConfig;
use crate::error::{Error, Result};

/// The splits of a study.
#[derive(Debug, Clone)]
pub struct StudyData {
    /// The classifiers' training split (what pretraining sees), validation
    /// and test, normalised with the classifiers' training statistics.
    pub splits: Splits,
    /// The agents' training images, normalised like `splits`.
    pub agent_train: Dataset,
    /// The split configuration pretraining uses.
    pub pretrain_split: SplitConfig,
}

/// Loads the study's data (see the module docs).
pub fn load_study_data(
    cfg: &StudyConfig,
    preset: &Preset,
    data_dir: Option<&std::path::Path>,
) -> Result<StudyData> {
    let all_cfg = cfg.split_config(preset);
    let all = Splits::load(&preset.dataset, data_dir, &all_cfg)?;
    let n_total = all.train.len();
    let n_agent = (n_total as f64 * cfg.pretrain.agent_fraction).round() as usize;
    let n_cls = n_total - n_agent;
    if n_cls == 0 || (cfg.pretrain.agent_fraction > 0.0 && n_agent == 0) {
        return Err(Error::Config(format!(
            "agent_fraction {} of {n_total} training images leaves {n_cls} for the classifiers and {n_agent} for the agents",
            cfg.pretrain.agent_fraction
        )));
    }
    let (splits, pretrain_split, mut agent_train) = if n_agent == 0 {
        let train = all.train.clone();
        (all, all_cfg, train)
    } else {
        let cls_cfg = SplitConfig {
            max_train: Some(n_cls),
            ..all_cfg
        };
        let cls = Splits::load(&preset.dataset, data_dir, &cls_cfg)?;
        // The classifiers' split must be the prefix of the full one: check
        // a few images (a changed split procedure must not leak training
        // images into the agents' set).
        let check: Vec<usize> = (0..n_cls.min(32)).collect();
        let mut head = all.train.subset(&check);
        renormalize(&mut head, &all.normalization, &cls.normalization);
        let reference = cls.train.subset(&check);
        if !same_images(&head, &reference) {
            return Err(Error::Config(format!(
                "data set '{}': the classifiers' training split is not the first {n_cls} images of \
                 the full training split, so no held-out images can be carved for the agents; set \
                 agent_fraction to 0",
                preset.dataset
            )));
        }
        let rest: Vec<usize> = (n_cls..n_total).collect();
        let mut agents = all.train.subset(&rest);
        renormalize(&mut agents, &all.normalization, &cls.normalization);
        (cls, cls_cfg, agents)
    };
    if let Some(m) = cfg.agent_train_samples {
        let n = agent_train.len();
        if m < n {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut StdRng::seed_from_u64(derive_seed(
                cfg.pretrain.seed,
                0xA6E7,
            )));
            idx.truncate(m);
            idx.sort_unstable();
            agent_train = agent_train.subset(&idx);
        }
    }
    Ok(StudyData {
        splits,
        agent_train,
        pretrain_split,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_get_held_out_images_normalised_like_the_classifiers() {
        let mut cfg = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
        cfg.pretrain.synthetic_train = 400;
        cfg.pretrain.synthetic_test = 50;
        cfg.pretrain.agent_fraction = 0.25;
        let preset = cfg.cascade_preset().unwrap();
        let d = load_study_data(&cfg, &preset, None).unwrap();
        // 400 images, 40 for validation, 360 left: 90 for the agents.
        assert_eq!((d.splits.train.len(), d.agent_train.len()), (270, 90));
        assert_eq!(d.pretrain_split.max_train, Some(270));
        let full = Splits::load("synthetic", None, &cfg.split_config(&preset)).unwrap();
        assert_eq!(&full.train.labels[270..], d.agent_train.labels.as_slice());
        // The classifiers' statistics, not the full split's.
        let mean: f64 = d.splits.train.images.iter().map(|&v| v as f64).sum::<f64>()
            / d.splits.train.images.len() as f64;
        assert!(mean.abs() < 1e-4, "{mean}");
        cfg.agent_train_samples = Some(10);
        let d = load_study_data(&cfg, &preset, None).unwrap();
        assert_eq!(d.agent_train.len(), 10);
    }
}

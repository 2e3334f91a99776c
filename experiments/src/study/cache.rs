//! What a run folder caches between runs: the pretrained cascade (made
//! once under a lock, verified against the study on reuse) and the
//! recorded stage outputs of every split (stamped with the cascade's
//! hash and their own, see [`crate::provenance`]).

use std::path::Path;
use std::time::Instant;

use cascade_env::{ReplayBackend, StageBackend};
use cascade_rl::backend::CandleBackend;
use cascade_rl::cascade::Cascade;
use cascade_rl::checkpoint::{SplitRoles, MANIFEST_FILE};
use cascade_rl::data::{Dataset, Splits};
use cascade_rl::presets::Preset;
use cascade_rl::train::{pretrain, PretrainOptions, Progress};

use super::config::StudyConfig;
use super::data::StudyData;
use super::progress::Reporter;
use super::record::{RunOptions, TRACES_DIR};
use crate::error::{Error, Result};
use crate::lock::{lock_waiting, CASCADE_LOCK};
use crate::provenance::{cascade_hash, file_hash, TraceStamp};

/// Pretrains the cascade into `dir` unless a complete one is there.
/// Concurrent runs on one folder (shards started together) serialise on
/// the lock file `dir/../cascade.lock`, an operating-system lock released
/// when its holder ends however it ends: one pretrains, the others wait
/// and then find `cascade.json`. Returns whether this call pretrained.
pub(super) fn ensure_cascade(
    cfg: &StudyConfig,
    preset: &Preset,
    dir: &Path,
    data: &StudyData,
    opts: &RunOptions,
    device: &candle_core::Device,
    rep: &Reporter,
) -> Result<bool> {
    if dir.join(MANIFEST_FILE).exists() {
        return Ok(false);
    }
    let lock = dir.with_file_name(CASCADE_LOCK);
    let _held = lock_waiting(&lock, || {
        rep.say(format!(
            "waiting for another process to pretrain the cascade (it holds {})",
            lock.display()
        ))
    })?;
    if dir.join(MANIFEST_FILE).exists() {
        return Ok(false);
    }
    rep.say(format!(
        "pretraining cascade {} on {} ({} training images) into {}",
        cfg.cascade,
        preset.dataset,
        data.splits.train.len(),
        dir.display()
    ));
    let popts = PretrainOptions {
        out_dir: dir.to_path_buf(),
        overwrite: false,
        seed: cfg.pretrain.seed,
        // The preset passed in carries the study's epochs.
        epochs: None,
        data_dir: opts.data_dir.clone(),
        device: device.clone(),
        split: data.pretrain_split,
        progress: if opts.progress {
            Progress::Bar
        } else {
            Progress::Quiet
        },
    };
    let s = rep.quietly(|| pretrain(preset, &popts))?;
    rep.say(format!("pretrained in {:.1} s", s.seconds));
    Ok(true)
}

/// Records the study's data roles in `cascade.json` and, once, fits the
/// stage temperatures on the policy images (D_P: held out from the
/// classifiers, and not the selection split). With no policy images
/// (`agent_fraction` 0) the temperatures stay 1: every other split is
/// spoken for.
pub(super) fn prepare_cascade(
    cascade: &mut Cascade,
    cfg: &StudyConfig,
    data: &StudyData,
    rep: &Reporter,
) -> Result<()> {
    let held_out = cfg.pretrain.agent_fraction > 0.0;
    let roles = SplitRoles {
        classifier_train: data.splits.train.len(),
        policy_train: data.agent_train.len(),
        validation: data.splits.val.len(),
        test: data.splits.test.len(),
        rule: if held_out {
            format!(
                "the seeded training split's first {} images train the classifiers, the next {} \
                 the policies; validation carved from the training set before that, test the \
                 data set's own",
                data.splits.train.len(),
                data.agent_train.len()
            )
        } else {
            "the policies train on the classifiers' own training images".into()
        },
    };
    if cascade.manifest().roles.as_ref() != Some(&roles) {
        cascade.record_roles(roles)?;
    }
    if held_out && cascade.manifest().calibration.is_none() {
        let t0 = Instant::now();
        cascade.calibrate(&data.agent_train, "policy_train", cfg.eval_batch)?;
        let temps: Vec<String> = cascade
            .temperatures()
            .iter()
            .map(|t| format!("{t:.3}"))
            .collect();
        rep.say(format!(
            "fitted stage temperatures [{}] on the {} policy images in {:.1} s",
            temps.join(", "),
            data.agent_train.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// Checks that the cascade in `dir` is the one the study asks for: preset,
/// data set (checked on load), seed, every stage's model and recipe, and
/// the split (sizes and normalisation statistics).
pub(super) fn verify_cascade(
    cascade: &Cascade,
    cfg: &StudyConfig,
    preset: &Preset,
    splits: &Splits,
    dir: &Path,
) -> Result<()> {
    let m = cascade.manifest();
    let path = dir.join(MANIFEST_FILE);
    let mut differ = Vec::new();
    if m.seed != cfg.pretrain.seed {
        differ.push(format!("seed {} (study: {})", m.seed, cfg.pretrain.seed));
    }
    if m.stages.len() != preset.stages.len() {
        differ.push(format!(
            "{} stages (preset: {})",
            m.stages.len(),
            preset.stages.len()
        ));
    }
    for (r, p) in m.stages.iter().zip(&preset.stages) {
        if r.model != p.model {
            differ.push(format!(
                "stage {} model {} (preset: {})",
                r.stage,
                r.model.name(),
                p.model.name()
            ));
        }
        if r.train != p.train {
            differ.push(format!(
                "stage {} training recipe ({} epochs; preset: {} epochs)",
                r.stage, r.train.epochs, p.train.epochs
            ));
        }
    }
    let sizes = [splits.train.len(), splits.val.len(), splits.test.len()];
    let have = [m.split.n_train, m.split.n_val, m.split.n_test];
    if sizes != have {
        differ.push(format!(
            "split sizes train/val/test {have:?} (study: {sizes:?})"
        ));
    } else if m.normalization != splits.normalization {
        differ.push("normalisation statistics (another split of the data)".into());
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::Mismatch {
            path,
            msg: format!(
                "the pretrained cascade does not match the study: {}; delete {} to pretrain again, or use another --out",
                differ.join("; "),
                dir.display()
            ),
        })
    }
}

/// The three recorded splits.
pub(super) struct Traces {
    pub(super) train: ReplayBackend,
    pub(super) val: ReplayBackend,
    pub(super) test: ReplayBackend,
}

/// Loads the recorded traces of the cascade or records them (once: later
/// runs and shards reuse them). A trace is reused only when the stamp
/// (`traces/fingerprint.txt`) names this cascade and the file's bytes
/// match the hash recorded when it was written; a changed file is said
/// and recorded again.
pub(super) fn ensure_traces(
    run: &Path,
    cascade: &Cascade,
    data: &StudyData,
    cfg: &StudyConfig,
    rep: &Reporter,
) -> Result<Traces> {
    let dir = run.join(TRACES_DIR);
    let fp = cascade_hash(cascade.dir())?;
    let old = TraceStamp::read(&dir).filter(|s| s.cascade == fp);
    let mut stamp = TraceStamp {
        cascade: fp,
        ..Default::default()
    };
    let mut get = |split: &str, ds: &Dataset| -> Result<ReplayBackend> {
        let name = format!("{split}.trace");
        let path = dir.join(&name);
        if let (Some(old), true) = (&old, path.exists()) {
            match old.verify(&dir, &name) {
                Ok(()) => {
                    if let Ok(t) = ReplayBackend::load(&path) {
                        if t.labels() == ds.labels.as_slice() && t.num_stages() == cascade.len() {
                            let hash = old.files[&name].clone();
                            stamp.files.insert(name, hash);
                            return Ok(t);
                        }
                    }
                }
                // A file that changed after it was written is said; one
                // that an older build wrote without a hash is not news.
                Err(e) if old.files.contains_key(&name) => {
                    eprintln!("warning: {e}; recording it again")
                }
                Err(_) => {}
            }
        }
        let t0 = Instant::now();
        let mut b = CandleBackend::new(cascade, ds, cfg.eval_batch)?;
        let t = rep.quietly(|| b.record_trace(split))?;
        t.save(&path)?;
        stamp.files.insert(name, file_hash(&path)?);
        // Stamped at once, so a run stopped after this trace reuses it.
        stamp.write(&dir)?;
        rep.say(format!(
            "recorded the cascade's outputs on {split} ({} images) in {:.1} s",
            ds.len(),
            t0.elapsed().as_secs_f64()
        ));
        Ok(t)
    };
    let traces = Traces {
        train: get("train", &data.agent_train)?,
        val: get("val", &data.splits.val)?,
        test: get("test", &data.splits.test)?,
    };
    stamp.write(&dir)?;
    Ok(traces)
}

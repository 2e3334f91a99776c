//! `cascade data info|preview`: look at a data set before training on it.

use std::path::PathBuf;

use anyhow::Context;
use cascade_rl::data::{self, SplitConfig, Splits, SYNTHETIC_NOTICE};
use clap::{Args, Subcommand};

/// Data subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Source, split sizes, classes, per-class counts and image shape.
    Info(InfoArgs),
    /// A PNG grid of sample images per class.
    Preview(PreviewArgs),
}

/// Which data set and how to split it; shared by every command that loads data.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Data set: fashion-mnist, mnist, kmnist, cifar10, cifar100 or synthetic.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Folder holding the data set (overrides discovery).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Share of the training set held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Seed of the train/validation split.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
}

impl DataArgs {
    /// The split configuration these flags describe.
    pub fn split_config(&self) -> SplitConfig {
        SplitConfig {
            val_fraction: self.val_fraction,
            seed: self.split_seed,
            ..Default::default()
        }
    }

    /// Loads and splits the data set.
    pub fn load(&self) -> anyhow::Result<Splits> {
        Splits::load(
            &self.dataset,
            self.data_dir.as_deref(),
            &self.split_config(),
        )
        .with_context(|| format!("loading data set '{}'", self.dataset))
    }
}

/// `cascade data info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// When the data set is not found, fall back to the synthetic set (with a notice).
    #[arg(long)]
    pub fallback_synthetic: bool,
}

/// `cascade data preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output PNG file (an SVG is written beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Images per class.
    #[arg(long, default_value_t = 8)]
    pub per_class: usize,
}

/// Runs a data subcommand.
pub fn run(cmd: &DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Info(a) => info(a),
        DataCommand::Preview(a) => preview(a),
    }
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let splits = match args.data.load() {
        Ok(s) => s,
        Err(e) if args.fallback_synthetic => {
            eprintln!("{e:#}");
            eprintln!("falling back to the built-in synthetic data set");
            let fallback = DataArgs {
                dataset: "synthetic".into(),
                ..args.data.clone()
            };
            fallback.load()?
        }
        Err(e) => return Err(e),
    };
    print!("{}", describe(&splits));
    Ok(())
}

/// The text `cascade data info` prints.
pub fn describe(s: &Splits) -> String {
    let mut out = String::new();
    let t = &s.train;
    if s.is_synthetic() {
        out.push_str(&format!("{SYNTHETIC_NOTICE}\n"));
    }
    out.push_str(&format!("data set:     {}\n", t.name));
    out.push_str(&format!("source:       {}\n", t.source));
    let [c, h, w] = t.shape;
    out.push_str(&format!(
        "image shape:  {c} x {h} x {w} (channels x height x width)\n"
    ));
    out.push_str(&format!(
        "splits:       train {}, validation {}, test {}\n",
        s.train.len(),
        s.val.len(),
        s.test.len()
    ));
    out.push_str(&format!(
        "normalisation (train statistics): mean {:?}, std {:?}\n",
        s.normalization.mean, s.normalization.std
    ));
    out.push_str(&format!("classes:      {}\n\n", t.num_classes()));
    out.push_str("| class | name | train | validation | test |\n|---:|---|---:|---:|---:|\n");
    let (a, b, c) = (
        s.train.class_counts(),
        s.val.class_counts(),
        s.test.class_counts(),
    );
    for (i, name) in t.class_names.iter().enumerate() {
        out.push_str(&format!(
            "| {i} | {name} | {} | {} | {} |\n",
            a[i], b[i], c[i]
        ));
    }
    out
}

fn preview(args: &PreviewArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.per_class > 0, "--per-class must be positive");
    // Raw pixels, not normalised ones, are what a person wants to see.
    let (train, _) = data::load_raw(
        &args.data.dataset,
        args.data.data_dir.as_deref(),
        &args.data.split_config(),
    )
    .with_context(|| format!("loading data set '{}'", args.data.dataset))?;
    let mut picked: Vec<Vec<usize>> = vec![Vec::new(); train.num_classes()];
    for (i, &l) in train.labels.iter().enumerate() {
        let slot = &mut picked[l as usize];
        if slot.len() < args.per_class {
            slot.push(i);
        }
    }
    let idx: Vec<usize> = picked.concat();
    let mut subset = train.subset(&idx);
    // Real data loads in [0, 1]; the synthetic set does not: stretch it.
    let (lo, hi) = subset
        .images
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if lo < 0.0 || hi > 1.0 {
        let span = (hi - lo).max(1e-6);
        subset.images.iter_mut().for_each(|v| *v = (*v - lo) / span);
    }
    let mut title = format!(
        "{}: {} images per class (training set)",
        train.name, args.per_class
    );
    if train.source.is_synthetic() {
        title.push_str(" - SYNTHETIC DATA");
    }
    let stem = args.out.with_extension("");
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let labels: Vec<usize> = subset.labels.iter().map(|&l| l as usize).collect();
    let [c, h, w] = subset.shape;
    // Small images are upscaled more, so a grid stays legible.
    let scale = (96 / h.max(w).max(1)).clamp(1, 8) as u32;
    let grid = cascade_plots::ImageGridPlot {
        title: &title,
        images: &subset.images,
        shape: [subset.len(), c, h, w],
        labels: &labels,
        class_names: &subset.class_names,
        per_class: args.per_class,
        scale,
        captions: &[],
        flagged: &[],
    };
    grid.write(&stem).context("drawing the preview")?;
    println!("wrote {}.png and {}.svg", stem.display(), stem.display());
    Ok(())
}

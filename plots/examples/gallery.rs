//! Draws every figure from made-up but realistic numbers, for checking the look.
//!
//! ```text
//! cargo run -p cascade-plots --example gallery -- OUT_DIR [IDX_DIR]
//! ```
//!
//! `IDX_DIR`, if given, holds uncompressed Fashion-MNIST IDX files
//! (`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`) for the image grid;
//! otherwise only the synthetic RGB grid is drawn.

use std::path::{Path, PathBuf};

use cascade_plots::{
    AccuracyDistributionPlot, ExitAccuracies, ExitFractions, ExitsPerClassPlot, ImageGridPlot,
    MetricPanel, MetricSeries, ParetoCurve, ParetoPlot, ParetoPoint, SampleDistributionPlot,
    StagePoint, TrainingCurvesPlot,
};

const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Errors print as one `error: ...` line (their `Display`), exit status 1.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "gallery".into()));
    let idx = args.next().map(PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let stages: Vec<String> = ["stage 1 linear", "stage 2 CNN-s", "stage 3 CNN-l"]
        .map(String::from)
        .to_vec();
    let cascade = "Fashion-MNIST, cascade linear → CNN-s → CNN-l";

    let p = |c: f64, e: f64, sc: f64, se: f64| ParetoPoint::new(c, e).with_spread(sc, se);
    let mut pareto = ParetoPlot::new(format!(
        "{cascade}: threshold vs REINFORCE (frozen, joint) vs oracle"
    ));
    pareto.stages = vec![
        StagePoint {
            label: stages[0].clone(),
            cost: 0.35,
            error: 15.9,
        },
        StagePoint {
            label: stages[1].clone(),
            cost: 7.8,
            error: 10.4,
        },
        StagePoint {
            label: stages[2].clone(),
            cost: 100.0,
            error: 7.6,
        },
    ];
    pareto.curves = vec![
        ParetoCurve::new(
            "threshold",
            vec![
                p(0.9, 14.6, 0.1, 0.3),
                p(3.1, 12.2, 0.3, 0.3),
                p(8.4, 10.3, 0.6, 0.2),
                p(19.0, 8.9, 1.5, 0.2),
                p(41.0, 8.0, 2.5, 0.2),
                p(77.0, 7.7, 3.0, 0.1),
            ],
        ),
        ParetoCurve::new(
            "REINFORCE (frozen)",
            vec![
                p(0.7, 14.1, 0.2, 0.5),
                p(2.6, 11.5, 0.4, 0.4),
                p(7.2, 9.9, 0.8, 0.3),
                p(16.0, 8.6, 1.9, 0.3),
                p(35.0, 7.9, 3.1, 0.2),
            ],
        ),
        ParetoCurve::new(
            "REINFORCE (joint)",
            vec![
                p(0.6, 13.2, 0.2, 0.6),
                p(2.2, 10.8, 0.5, 0.4),
                p(6.5, 9.2, 0.9, 0.3),
                p(14.0, 8.1, 2.0, 0.3),
                p(31.0, 7.5, 3.3, 0.2),
            ],
        ),
        ParetoCurve::reference(
            "oracle",
            vec![
                ParetoPoint::new(0.42, 6.9),
                ParetoPoint::new(1.2, 5.1),
                ParetoPoint::new(4.0, 4.2),
                ParetoPoint::new(12.0, 3.9),
            ],
        ),
    ];
    report(pareto.write(out.join("pareto"))?);
    let mut linear = pareto.clone();
    linear.log_cost = false;
    linear.title = format!("{cascade}: linear cost axis");
    report(linear.write(out.join("pareto_linear"))?);

    let agents = [
        "threshold",
        "REINFORCE (frozen)",
        "REINFORCE (joint)",
        "oracle",
    ];
    let fr = [
        [0.52, 0.31, 0.17],
        [0.58, 0.27, 0.15],
        [0.61, 0.27, 0.12],
        [0.84, 0.11, 0.05],
    ];
    let samples = SampleDistributionPlot {
        title: format!("{cascade}: where test samples stop (alpha = 0.05)"),
        stages: stages.clone(),
        agents: agents
            .iter()
            .zip(fr)
            .map(|(a, f)| ExitFractions {
                agent: a.to_string(),
                fractions: f.to_vec(),
            })
            .collect(),
    };
    report(samples.write(out.join("sample_distribution"))?);
    // Five stages with long names: labels shrink or wrap instead of overlapping.
    let five = SampleDistributionPlot {
        title: "CIFAR-10, five-stage cascade (linear → ResNet-20): where test samples stop".into(),
        stages: [
            "stage 1 linear",
            "stage 2 CNN-s (2 conv)",
            "stage 3 CNN-m (4 conv)",
            "stage 4 ResNet-8",
            "stage 5 ResNet-20 (full)",
        ]
        .map(String::from)
        .to_vec(),
        agents: vec![
            ExitFractions {
                agent: "threshold".into(),
                fractions: vec![0.31, 0.22, 0.18, 0.17, 0.12],
            },
            ExitFractions {
                agent: "REINFORCE (joint)".into(),
                fractions: vec![0.38, 0.21, 0.19, 0.13, 0.09],
            },
        ],
    };
    report(five.write(out.join("sample_distribution_5stages"))?);

    let acc = [
        [Some(0.962), Some(0.851), Some(0.744)],
        [Some(0.955), Some(0.872), Some(0.701)],
        [Some(0.948), Some(0.889), Some(0.733)],
        [Some(1.0), Some(1.0), None],
    ];
    let accuracy = AccuracyDistributionPlot {
        title: format!("{cascade}: accuracy of the samples stopping at each stage"),
        stages: stages.clone(),
        agents: agents
            .iter()
            .zip(acc)
            .map(|(a, v)| ExitAccuracies {
                agent: a.to_string(),
                accuracies: v.to_vec(),
            })
            .collect(),
    };
    report(accuracy.write(out.join("accuracy_distribution"))?);

    let rows = [
        [0.48, 0.33, 0.19],
        [0.91, 0.07, 0.02],
        [0.35, 0.38, 0.27],
        [0.62, 0.26, 0.12],
        [0.30, 0.41, 0.29],
        [0.83, 0.13, 0.04],
        [0.12, 0.39, 0.49],
        [0.88, 0.09, 0.03],
        [0.86, 0.11, 0.03],
        [0.90, 0.08, 0.02],
    ];
    let heat = ExitsPerClassPlot {
        title: format!("{cascade}, REINFORCE (joint): exits per class"),
        classes: CLASSES.map(String::from).to_vec(),
        stages: stages.clone(),
        fractions: rows.iter().map(|r| r.to_vec()).collect(),
    };
    report(heat.write(out.join("exits_per_class"))?);

    // Reward curves of three seeds, plus loss and mean cost.
    let curve = |f: &dyn Fn(f64, usize) -> f64, seed: usize| -> Vec<(f64, f64)> {
        (1..=40).map(|e| (e as f64, f(e as f64, seed))).collect()
    };
    let noise = |e: f64, s: usize| {
        ((e * 1.7 + s as f64 * 2.3).sin() * 0.5 + (e * 0.37 + s as f64).cos() * 0.5) * 0.01
    };
    let runs = ["joint, seed 0", "joint, seed 1", "frozen, seed 0"];
    let reward =
        |e: f64, s: usize| -0.30 + 0.19 * (1.0 - (-e / (8.0 + s as f64)).exp()) + noise(e, s);
    let loss = |e: f64, s: usize| 0.9 * (-e / 10.0).exp() + 0.12 + noise(e, s) * 3.0;
    let cost = |e: f64, s: usize| {
        100.0 * (0.35 + 0.5 * (-e / (6.0 + s as f64)).exp()) + noise(e, s) * 50.0
    };
    let err = |e: f64, s: usize| 100.0 * (0.09 + 0.05 * (-e / 12.0).exp()) + noise(e, s) * 20.0;
    let panel = |metric: &str, unit: Option<&str>, f: &dyn Fn(f64, usize) -> f64| MetricPanel {
        metric: metric.into(),
        unit: unit.map(String::from),
        series: runs
            .iter()
            .enumerate()
            .map(|(s, r)| MetricSeries {
                run: r.to_string(),
                points: curve(f, s),
                group: None,
            })
            .collect(),
    };
    let mut single = TrainingCurvesPlot::new(format!("{cascade}: REINFORCE training reward"));
    single.panels = vec![panel("charts/mean_reward", None, &reward)];
    report(single.write(out.join("training_reward"))?);
    let mut multi = TrainingCurvesPlot::new(format!("{cascade}: REINFORCE training"));
    multi.panels = vec![
        panel("charts/mean_reward", None, &reward),
        panel("losses/policy_loss", None, &loss),
        panel("charts/mean_cost", Some("% of largest stage"), &cost),
        panel("val/error", Some("%"), &err),
    ];
    report(multi.write(out.join("training_curves"))?);

    if let Some(dir) = idx {
        fashion_grid(&dir, &out)?;
    }
    rgb_grid(&out)?;
    Ok(())
}

fn report(files: cascade_plots::FigureFiles) {
    println!("{}\n{}", files.png.display(), files.svg.display());
}

fn fashion_grid(dir: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let images = std::fs::read(dir.join("t10k-images-idx3-ubyte"))?;
    let labels = std::fs::read(dir.join("t10k-labels-idx1-ubyte"))?;
    let n = 2000;
    let px: Vec<f32> = images[16..16 + n * 784]
        .iter()
        .map(|&b| f32::from(b) / 255.0)
        .collect();
    let labels: Vec<usize> = labels[8..8 + n].iter().map(|&b| usize::from(b)).collect();
    let names = CLASSES.map(String::from);
    let grid = ImageGridPlot {
        title: "Fashion-MNIST (test): 8 images per class",
        images: &px,
        shape: [n, 1, 28, 28],
        labels: &labels,
        class_names: &names,
        per_class: 8,
        scale: 3,
        captions: &[],
        flagged: &[],
    };
    report(grid.write(out.join("preview_fashion_mnist"))?);
    Ok(())
}

/// Coloured blobs of graded difficulty, like the synthetic data set.
fn rgb_grid(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (n, h, w) = (24usize, 16usize, 16usize);
    let names: Vec<String> = ["red blob", "green bar", "blue ring"]
        .map(String::from)
        .to_vec();
    let mut px = vec![0f32; n * 3 * h * w];
    let mut labels = vec![];
    for i in 0..n {
        let class = i % 3;
        labels.push(class);
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f32 - 7.5 - (i % 4) as f32 * 0.5, y as f32 - 7.5);
                let r2 = dx * dx + dy * dy;
                let v = match class {
                    0 => (-r2 / 18.0).exp(),
                    1 => {
                        if (x + i) % 16 < 5 {
                            1.0
                        } else {
                            0.1
                        }
                    }
                    _ => (-(r2.sqrt() - 5.0).powi(2) / 2.0).exp(),
                };
                let base = i * 3 * h * w + y * w + x;
                px[base + class * h * w] = v;
                px[base + ((class + 1) % 3) * h * w] = 0.15 * (1.0 - v);
            }
        }
    }
    let grid = ImageGridPlot {
        title: "Synthetic (RGB, 16x16): 6 images per class",
        images: &px,
        shape: [n, 3, h, w],
        labels: &labels,
        class_names: &names,
        per_class: 6,
        scale: 4,
        captions: &[],
        flagged: &[],
    };
    report(grid.write(out.join("preview_synthetic_rgb"))?);
    Ok(())
}

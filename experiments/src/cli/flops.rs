//! `cascade flops`: analytic MACs and parameters of one model (per layer) or
//! of every stage of a cascade preset.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{bail, Context};
use cascade_rl::flops;
use cascade_rl::models::ModelConfig;
use cascade_rl::presets::Preset;
use clap::Args;
use serde_json::json;

/// `cascade flops`.
#[derive(Debug, Args)]
pub struct FlopsArgs {
    /// Model name, e.g. resnet-110, mlp-256, cnn-16-32, linear.
    #[arg(long, required_unless_present = "preset", conflicts_with = "preset")]
    pub model: Option<String>,
    /// Cascade preset, e.g. fmnist-4: per-stage and cumulative MACs.
    #[arg(long)]
    pub preset: Option<String>,
    /// Input shape C,H,W (with --model).
    #[arg(long, default_value = "3,32,32")]
    pub input: String,
    /// Number of classes (with --model).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses an input shape `C,H,W`.
pub fn parse_shape(s: &str) -> anyhow::Result<[usize; 3]> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--input '{s}': expected C,H,W, e.g. 3,32,32"))?;
    match v.as_slice() {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => bail!("--input '{s}': expected three numbers C,H,W, e.g. 3,32,32"),
    }
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Runs `cascade flops`.
pub fn run(args: &FlopsArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.preset {
        return run_preset(name, args.json);
    }
    let name = args.model.as_deref().unwrap_or_default();
    let cfg: ModelConfig = name.parse()?;
    let shape = parse_shape(&args.input)?;
    let r = flops::count(&cfg, shape, args.classes)?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&r)?))
    } else {
        emit(&r.table())
    }
}

fn run_preset(name: &str, as_json: bool) -> anyhow::Result<()> {
    let p = Preset::by_name(name)?;
    let (shape, classes) = p.input_spec()?;
    let reports = p
        .stages
        .iter()
        .map(|s| flops::count(&s.model, shape, classes))
        .collect::<Result<Vec<_>, _>>()?;
    let largest = reports.iter().map(|r| r.macs).max().unwrap_or(1).max(1) as f64;
    let mut cum = 0u64;
    let rows: Vec<_> = reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            cum += r.macs;
            (i + 1, r, cum)
        })
        .collect();
    if as_json {
        let stages: Vec<_> = rows
            .iter()
            .map(|(t, r, cum)| {
                json!({
                    "stage": t,
                    "model": r.model,
                    "macs": r.macs,
                    "params": r.params,
                    "feature_dim": r.feature_dim,
                    "pct_of_largest": 100.0 * r.macs as f64 / largest,
                    "cumulative_macs": cum,
                    "cumulative_pct_of_largest": 100.0 * *cum as f64 / largest,
                })
            })
            .collect();
        let out = json!({
            "preset": p.name,
            "dataset": p.dataset,
            "input": shape,
            "classes": classes,
            "stages": stages,
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&out)?));
    }
    let mut text = String::new();
    writeln!(
        text,
        "preset {} ({}), input {}x{}x{}, {} classes",
        p.name, p.dataset, shape[0], shape[1], shape[2], classes
    )?;
    writeln!(
        text,
        "{:>5}  {:<16} {:>14} {:>10} {:>16} {:>10} {:>10}",
        "stage", "model", "MACs", "% largest", "cumulative MACs", "cum. %", "params"
    )?;
    for (t, r, cum) in &rows {
        writeln!(
            text,
            "{:>5}  {:<16} {:>14} {:>10.3} {:>16} {:>10.3} {:>10}",
            t,
            r.model,
            r.macs,
            100.0 * r.macs as f64 / largest,
            cum,
            100.0 * *cum as f64 / largest,
            r.params
        )?;
    }
    emit(&text)
}

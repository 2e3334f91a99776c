//! Command-line flags of the study binaries (`joint_vs_frozen`,
//! `alpha_sweep`) and their resolution into a [`StudyConfig`] and
//! [`RunOptions`].

use std::path::PathBuf;

use cascade_env::CostModel;
use cascade_rl::device::DeviceSpec;
use clap::{Args, Parser};

use super::config::StudyConfig;
use super::record::{RunOptions, StudyOutcome};
use crate::error::{read_json, Error, Result};
use crate::results::Shard;
use cascade_agents::{AgentKind, AgentSpec, ReinforceConfig};

/// Flags shared by the study binaries.
#[derive(Debug, Clone, Args)]
pub struct StudyArgs {
    /// Study preset: default (Fashion-MNIST when found, else synthetic data;
    /// about 10 minutes on 2 cores), quick (synthetic, about a minute),
    /// fmnist (full Fashion-MNIST, 3 seeds, 6 alphas), cifar10 (the paper's
    /// ResNet cascade; a GPU job: --device cuda).
    #[arg(long, default_value = "default")]
    pub preset: String,
    /// Start from this config.json (a run folder's, or a bare study config)
    /// instead of a preset; the flags below still override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run folder (default: `runs/<study>__<dataset>__<preset>`). Rerunning
    /// into the same folder resumes: points already in results.csv are skipped.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Alphas to sweep, comma-separated (e.g. 0.01,0.03,0.1).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub alphas: Option<Vec<f64>>,
    /// Training seeds of the learned agents, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Device of the classifiers: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Folder holding the data set (overrides discovery).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run only shard i of n (0-based, e.g. $SLURM_ARRAY_TASK_ID/8); rows go
    /// to results.shard-i-of-n.csv; join them with `cascade merge RUN_DIR`.
    #[arg(long, value_name = "i/n")]
    pub shard: Option<String>,
    /// Pretrain the cascade and record its outputs, then stop (the first
    /// step of a sharded run).
    #[arg(long)]
    pub pretrain_only: bool,
    /// No progress bars or progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Pretraining epochs: one value for every stage, or one per stage
    /// (comma-separated, cheapest stage first).
    #[arg(long, value_delimiter = ',')]
    pub pretrain_epochs: Option<Vec<usize>>,
    /// Real data: use at most this many training images.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Real data: use at most this many validation images.
    #[arg(long)]
    pub max_val: Option<usize>,
    /// Real data: use at most this many test images.
    #[arg(long)]
    pub max_test: Option<usize>,
    /// Synthetic data: training images (validation is carved from them).
    #[arg(long)]
    pub synthetic_train: Option<usize>,
    /// Synthetic data: test images.
    #[arg(long)]
    pub synthetic_test: Option<usize>,
    /// Share of the training split held out from pretraining for the
    /// learned agents (0: they train on the classifiers' own images).
    #[arg(long, allow_negative_numbers = true)]
    pub agent_fraction: Option<f64>,
    /// Seed of the cascade: data split, pretraining and temperatures (one
    /// run folder per cascade seed; `cascade aggregate` joins them).
    #[arg(long)]
    pub cascade_seed: Option<u64>,
    /// Policy epochs of both learned agents (frozen and joint).
    #[arg(long)]
    pub policy_epochs: Option<usize>,
    /// Most epochs of the frozen agent.
    #[arg(long)]
    pub frozen_epochs: Option<usize>,
    /// Epochs of the joint agent.
    #[arg(long)]
    pub joint_epochs: Option<usize>,
    /// Learning rate of the classifiers in joint training.
    #[arg(long, allow_negative_numbers = true)]
    pub classifier_lr: Option<f64>,
    /// Training images the learned agents see (a seeded subset).
    #[arg(long)]
    pub agent_train_samples: Option<usize>,
    /// Cost model: cumulative (separate networks) or exit (early-exit branches).
    #[arg(long)]
    pub cost_model: Option<CostModel>,
}

/// `joint_vs_frozen`: the paper's comparison of the joint agent with the
/// policy-only agent, the threshold baseline, the static stages and the oracle.
#[derive(Debug, Clone, Parser)]
#[command(name = "joint_vs_frozen", version, about, long_about = None)]
pub struct JointVsFrozenArgs {
    #[command(flatten)]
    pub study: StudyArgs,
    /// Agents to sweep, comma-separated (default: those of `--config`'s
    /// file, else all of them).
    #[arg(long, value_delimiter = ',')]
    pub agents: Option<Vec<AgentKind>>,
}

/// `alpha_sweep`: one agent across alphas or budgets (one curve).
#[derive(Debug, Clone, Parser)]
#[command(name = "alpha_sweep", version, about, long_about = None)]
pub struct AlphaSweepArgs {
    #[command(flatten)]
    pub study: StudyArgs,
    /// The agent.
    #[arg(long)]
    pub agent: AgentKind,
    /// Sweep cost budgets instead of alphas: fractions of the largest
    /// stage's cost, comma-separated (e.g. 0.1,0.25,0.5).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub budgets: Option<Vec<f64>>,
}

impl StudyArgs {
    /// The config and run options these flags describe for the experiment
    /// `study`; `name_extra` goes into the default run-folder name.
    /// `agents` replaces the agent list; without it a `--config` file keeps
    /// its own and a preset runs every agent.
    pub fn resolve(
        &self,
        study: &str,
        agents: Option<Vec<AgentKind>>,
        budgets: Option<Vec<f64>>,
        name_extra: Option<&str>,
    ) -> Result<(StudyConfig, RunOptions)> {
        let mut cfg = match &self.config {
            Some(path) => {
                let v: serde_json::Value = read_json(path)?;
                let inner = v.get("config").cloned().unwrap_or(v);
                let c: StudyConfig = serde_json::from_value(inner)
                    .map_err(|e| Error::run_file(path, format!("not a study config: {e}")))?;
                c
            }
            None => StudyConfig::preset(study, &self.preset, self.data_dir.as_deref())?,
        };
        cfg.study = study.to_string();
        match agents {
            Some(list) => cfg.agents = list,
            None if self.config.is_none() => cfg.agents = AgentKind::ALL.to_vec(),
            None => {}
        }
        if let Some(a) = &self.alphas {
            cfg.alphas = a.clone();
            cfg.budgets.clear();
        }
        if let Some(b) = budgets {
            if self.alphas.is_some() {
                return Err(Error::Config("give --alphas or --budgets, not both".into()));
            }
            cfg.budgets = b;
            cfg.alphas.clear();
        }
        // Ablations run at points of the sweep: with a sweep given here that
        // lacks the preset's ablation points, at its first point.
        let sweep = if cfg.budget_mode() {
            &cfg.budgets
        } else {
            &cfg.alphas
        };
        if !cfg.ablation_points.iter().all(|x| sweep.contains(x)) {
            cfg.ablation_points = sweep.first().copied().into_iter().collect();
        }
        if let Some(s) = &self.seeds {
            cfg.seeds = s.clone();
        }
        let p = &mut cfg.pretrain;
        if let Some(e) = &self.pretrain_epochs {
            p.epochs = e.clone();
        }
        if self.max_train.is_some() {
            p.max_train = self.max_train;
        }
        if self.max_val.is_some() {
            p.max_val = self.max_val;
        }
        if self.max_test.is_some() {
            p.max_test = self.max_test;
        }
        if let Some(n) = self.synthetic_train {
            p.synthetic_train = n;
        }
        if let Some(n) = self.synthetic_test {
            p.synthetic_test = n;
        }
        if let Some(f) = self.agent_fraction {
            p.agent_fraction = f;
        }
        if let Some(s) = self.cascade_seed {
            p.seed = s;
        }
        let epochs = |e: usize| {
            move |c: &mut ReinforceConfig| {
                c.epochs = e;
                c.patience = c.patience.min(e);
            }
        };
        let frozen = self.frozen_epochs.or(self.policy_epochs);
        let joint = self.joint_epochs.or(self.policy_epochs);
        if let Some(e) = frozen {
            with_kind_settings(&mut cfg, AgentKind::ReinforceFrozen, policy_of, epochs(e))?;
        }
        if let Some(e) = joint {
            with_kind_settings(&mut cfg, AgentKind::ReinforceJoint, policy_of, epochs(e))?;
        }
        if let Some(lr) = self.classifier_lr {
            with_kind_settings(
                &mut cfg,
                AgentKind::ReinforceJoint,
                joint_classifiers_of,
                |c| c.classifier_lr = lr,
            )?;
        }
        if self.agent_train_samples.is_some() {
            cfg.agent_train_samples = self.agent_train_samples;
        }
        if let Some(m) = self.cost_model {
            cfg.reward.cost = m;
        }
        cfg.validate()?;
        let device: DeviceSpec = self.device.parse()?;
        let shard = self.shard.as_deref().map(str::parse::<Shard>).transpose()?;
        let out = self.out.clone().unwrap_or_else(|| {
            let mut name = study.to_string();
            if let Some(x) = name_extra {
                name.push_str(&format!("__{x}"));
            }
            let mut dir = format!("{name}__{}__{}", cfg.dataset, cfg.preset);
            if let Some(s) = self.cascade_seed {
                dir.push_str(&format!("__cascade{s}"));
            }
            PathBuf::from("runs").join(dir)
        });
        let opts = RunOptions {
            out,
            device,
            data_dir: self.data_dir.clone(),
            shard,
            pretrain_only: self.pretrain_only,
            progress: !self.quiet,
            report: true,
        };
        Ok((cfg, opts))
    }
}

/// Parses flags like the binaries do, returning clap's message as an error
/// (for callers without clap).
fn parse_args<P: Parser, I, T>(argv: I) -> Result<P>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    P::try_parse_from(argv).map_err(|e| Error::Config(e.to_string()))
}

impl JointVsFrozenArgs {
    /// Parses `argv` (program name first).
    pub fn from_argv<I, T>(argv: I) -> Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        parse_args(argv)
    }

    /// The resolved config and options.
    pub fn resolve(&self) -> Result<(StudyConfig, RunOptions)> {
        self.study
            .resolve("joint_vs_frozen", self.agents.clone(), None, None)
    }
}

impl AlphaSweepArgs {
    /// Parses `argv` (program name first).
    pub fn from_argv<I, T>(argv: I) -> Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        parse_args(argv)
    }

    /// The resolved config and options.
    pub fn resolve(&self) -> Result<(StudyConfig, RunOptions)> {
        let agent = self.agent;
        self.study.resolve(
            "alpha_sweep",
            Some(vec![agent]),
            self.budgets.clone(),
            Some(agent.name()),
        )
    }
}

/// Runs the study a binary resolved, then prints what it did: the next
/// step after `--pretrain-only`, else the [`closing_line`].
pub fn run_and_report(cfg: &StudyConfig, opts: &RunOptions) -> Result<()> {
    let outcome = super::run_study(cfg, opts)?;
    if opts.pretrain_only {
        println!(
            "{}: cascade ready and its outputs recorded; now run the shards (--shard i/n), then `cascade merge {}`",
            outcome.run_dir.display(),
            outcome.run_dir.display()
        );
    } else {
        println!("{}", closing_line(&outcome));
    }
    Ok(())
}

/// The closing line of a study binary: what it did and what it wrote.
pub fn closing_line(o: &StudyOutcome) -> String {
    let mut s = format!(
        "{}: {} result rows computed, {} already present (skipped), in {:.1} s{}",
        o.run_dir.display(),
        o.computed,
        o.skipped,
        o.seconds,
        if o.pretrained {
            " (cascade pretrained in this run)"
        } else {
            ""
        }
    );
    if let Some(sum) = &o.summary {
        let figs: Vec<String> = o
            .figures
            .iter()
            .map(|f| {
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        s.push_str(&format!(
            "\nwrote {}, {} and figures {}/{{{}}} (+ .svg)",
            sum.display(),
            o.run_dir.join(crate::results::RESULTS_FILE).display(),
            o.run_dir.join("figures").display(),
            figs.join(", ")
        ));
    } else if o.results_file.exists() {
        s.push_str(&format!(
            "\nwrote {} (join the shards with `cascade merge {}`)",
            o.results_file.display(),
            o.run_dir.display()
        ));
    }
    if o.synthetic {
        s.push_str(&format!("\n{}", cascade_rl::data::SYNTHETIC_NOTICE));
    }
    s
}

/// The policy settings of a REINFORCE-trained spec.
fn policy_of(s: &mut AgentSpec) -> Option<&mut ReinforceConfig> {
    match s {
        AgentSpec::ReinforceFrozen(c) => Some(c),
        AgentSpec::ReinforceJoint(j) => Some(&mut j.policy),
        AgentSpec::ExpectedJoint(j) => Some(&mut j.policy),
        _ => None,
    }
}

/// The classifiers' settings of `reinforce-joint`.
fn joint_classifiers_of(s: &mut AgentSpec) -> Option<&mut cascade_agents::JointConfig> {
    match s {
        AgentSpec::ReinforceJoint(j) => Some(&mut j.classifiers),
        _ => None,
    }
}

/// Changes, by `change`, the part `part` of the settings of `kind`'s own
/// agent and of the variants of `kind` that share that part with it (the
/// variants that change it keep theirs: a twin's classifier lr 0, an
/// ablation's policy).
fn with_kind_settings<T: Clone + PartialEq>(
    cfg: &mut StudyConfig,
    kind: AgentKind,
    part: impl Fn(&mut AgentSpec) -> Option<&mut T>,
    change: impl Fn(&mut T),
) -> Result<()> {
    let mut main = cfg.spec(kind)?.clone();
    let Some(shared) = part(&mut main).cloned() else {
        return Ok(());
    };
    for a in cfg.specs.iter_mut().filter(|a| a.kind() == Some(kind)) {
        if let Some(p) = part(&mut a.spec).filter(|p| **p == shared) {
            change(p);
        }
    }
    Ok(())
}

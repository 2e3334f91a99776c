//! Running one work unit: build, train, save and evaluate an agent (or
//! the static stages and oracles) and turn the reports into result rows.

use cascade_agents::AgentFolder;
use std::path::{Path, PathBuf};

use cascade_agents::{
    evaluate, ActMode, Agent, AgentSpec, EvalConfig, EvalReport, Evaluated, Family, JointInputs,
    JointSplits, JointStart, OracleAgent, ReinforceAgent, ReinforceMode, StaticAgent, TrainData,
    TrainInputs, TrainOptions, TrainSummary,
};
use cascade_env::{RewardSpec, StageBackend};
use cascade_rl::backend::CandleBackend;
use cascade_rl::cascade::Cascade;

use super::cache::Traces;
use super::config::{StudyAgent, StudyConfig};
use super::data::StudyData;
use super::oracle::oracle_at;
use super::plan::{Point, Unit};
use super::progress::Reporter;
use super::record::{AGENTS_DIR, CASCADE_DIR};
use crate::cli::train::AGENT_FOLDER;
use crate::error::{read_json, write_json, Error, Result};
use crate::provenance;
use crate::results::{ResultRow, RowId};
use cascade_agents::AgentKind;
use cascade_rl::folder::{NewFolder, Replace};

/// An agent to train at a point: a kind of the sweep with the study's
/// settings, or a variant (an ablation, a twin).
pub(super) struct AgentJob {
    /// Its name in results and agent folders.
    pub(super) name: String,
    /// What to train.
    pub(super) spec: AgentSpec,
}

impl AgentJob {
    /// `kind` with the study's settings.
    fn of(kind: AgentKind, cfg: &StudyConfig) -> Result<Self> {
        Ok(AgentJob {
            name: kind.name().to_string(),
            spec: cfg.spec(kind)?.clone(),
        })
    }

    /// The agent `a` of the study.
    fn named(a: &StudyAgent) -> Self {
        AgentJob {
            name: a.name.clone(),
            spec: a.spec.clone(),
        }
    }
}

/// Everything a work unit needs.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a StudyConfig,
    pub(super) run: &'a Path,
    pub(super) cascade_dir: &'a Path,
    pub(super) device: &'a candle_core::Device,
    pub(super) data: &'a StudyData,
    pub(super) traces: &'a mut Traces,
    pub(super) rep: &'a Reporter,
    pub(super) quiet: bool,
}

impl Ctx<'_> {
    fn spec(&self, alpha: f64) -> RewardSpec {
        RewardSpec {
            alpha,
            ..self.cfg.reward
        }
    }

    fn eval_cfg(&self, split: &str, seed: u64) -> EvalConfig {
        EvalConfig {
            split: split.into(),
            seed,
            num_envs: self.cfg.num_envs,
            mode: ActMode::Greedy,
            count_policy_cost: self.cfg.count_policy_cost,
        }
    }

    fn train_opts(&self, p: Point, seed: u64, log: Option<PathBuf>) -> TrainOptions {
        TrainOptions {
            spec: self.spec(p.alpha),
            budget: p.budget,
            seed,
            quiet: self.quiet,
            log_csv: log,
            count_policy_cost: self.cfg.count_policy_cost,
            num_envs: self.cfg.num_envs,
        }
    }

    fn agent_dir(&self, agent: &str, p: Point, seed: Option<u64>) -> (PathBuf, String) {
        let mut name = format!("{}__{}__{}", self.cfg.dataset, agent, p.tag());
        if let Some(s) = seed {
            name.push_str(&format!("__seed{s}"));
        }
        let rel = format!("{AGENTS_DIR}/{name}");
        (self.run.join(&rel), rel)
    }

    /// Evaluates `agent` on the recorded val and test splits.
    fn eval_replay(
        &mut self,
        agent: &dyn Agent,
        spec: &RewardSpec,
        seed: u64,
    ) -> Result<(EvalReport, EvalReport)> {
        let (vc, tc) = (self.eval_cfg("val", seed), self.eval_cfg("test", seed));
        let val = evaluate(agent, &mut self.traces.val, spec, &vc)?;
        let test = evaluate(agent, &mut self.traces.test, spec, &tc)?;
        Ok((val, test))
    }

    pub(super) fn run_unit(&mut self, unit: &Unit) -> Result<Vec<ResultRow>> {
        match *unit {
            Unit::Static => {
                let k = self.traces.test.num_stages();
                let spec = self.spec(0.0);
                let mut rows = Vec::with_capacity(k);
                for t in 0..k {
                    let a = StaticAgent::new(t, k)?;
                    let (val, test) = self.eval_replay(&a, &spec, 0)?;
                    let name = a.name();
                    let id = self.row_id(&name, Family::Static);
                    rows.push(ResultRow::from_reports(id, &val, &test, None));
                }
                Ok(rows)
            }
            Unit::Oracle => {
                let a = OracleAgent::new(self.traces.test.num_stages())?;
                let (val, test) = self.eval_replay(&a, &self.spec(0.0), 0)?;
                let id = self.row_id("oracle", Family::Oracle);
                Ok(vec![ResultRow::from_reports(id, &val, &test, None)])
            }
            Unit::OracleCurve => {
                let mut rows = Vec::new();
                for &alpha in &self.cfg.oracle_alphas {
                    let spec = self.spec(alpha);
                    let val = oracle_at(&self.traces.val, &spec, "val")?;
                    let test = oracle_at(&self.traces.test, &spec, "test")?;
                    let id = RowId {
                        alpha: Some(alpha),
                        ..self.row_id("oracle-alpha", Family::Oracle)
                    };
                    rows.push(ResultRow::from_reports(id, &val, &test, None));
                }
                Ok(rows)
            }
            Unit::Agent(kind, p, seed) => {
                let job = AgentJob::of(kind, self.cfg)?;
                self.agent_unit(&job, p, seed)
            }
            Unit::Variant(i, p, seed) => {
                let job = AgentJob::named(&self.cfg.specs[i]);
                self.agent_unit(&job, p, Some(seed))
            }
        }
    }

    /// Trains, saves and evaluates one agent at point `p` (with `seed`;
    /// `None` for the seedless kinds), and returns its row. Agents that
    /// fine-tuned classifiers are evaluated on them, the others on the
    /// recorded outputs.
    pub(super) fn agent_unit(
        &mut self,
        job: &AgentJob,
        p: Point,
        seed: Option<u64>,
    ) -> Result<Vec<ResultRow>> {
        let (target, rel) = self.agent_dir(&job.name, p, seed);
        let s = seed.unwrap_or(0);
        // Built beside and swapped in whole: what a stopped run left in
        // this agent's folder is replaced, never mixed with the new files.
        let folder = NewFolder::begin(&target, AGENT_FOLDER, Replace::Anything)?;
        let dir = folder.path().to_path_buf();
        let (agent, summary) = self.train_agent(job, p, s, &dir)?;
        agent.save(&dir)?;
        cascade_agents::record_spec(&dir, &job.spec)?;
        let spec = self.spec(summary.alpha);
        let (mut val, mut test) = match agent.classifiers() {
            Some(tuned) => {
                let (val_ds, test_ds) = (&self.data.splits.val, &self.data.splits.test);
                let mut vb = CandleBackend::new(tuned, val_ds, self.cfg.eval_batch)?;
                let val = evaluate(&*agent, &mut vb, &spec, &self.eval_cfg("val", s))?;
                let mut tb = CandleBackend::new(tuned, test_ds, self.cfg.eval_batch)?;
                let test = evaluate(&*agent, &mut tb, &spec, &self.eval_cfg("test", s))?;
                (val, test)
            }
            None if job.spec.joint() => {
                return Err(Error::Config(format!(
                    "{}: training returned no fine-tuned cascade",
                    job.name
                )))
            }
            None => self.eval_replay(&*agent, &spec, s)?,
        };
        // The reports record what they evaluated; summaries check it.
        let (cascade_dir, cascade_hash) = match agent.classifiers() {
            Some(_) => {
                let own = dir.join(CASCADE_DIR);
                (
                    format!("{rel}/{CASCADE_DIR}"),
                    provenance::cascade_hash(&own)?,
                )
            }
            None => (
                CASCADE_DIR.to_string(),
                provenance::cascade_hash(self.cascade_dir)?,
            ),
        };
        let evaluated = Evaluated {
            agent_dir: rel.clone(),
            agent_hash: provenance::agent_hash(&dir)?,
            cascade_dir,
            cascade_hash,
        };
        val.evaluated = Some(evaluated.clone());
        test.evaluated = Some(evaluated);
        self.save_reports(&dir, &summary, &val, &test)?;
        folder.commit()?;
        let id = RowId {
            alpha: Some(p.alpha),
            budget: p.budget,
            seed,
            agent_dir: &rel,
            ..self.row_id(&job.name, job.spec.family())
        };
        Ok(vec![ResultRow::from_reports(
            id,
            &val,
            &test,
            Some(&summary),
        )])
    }

    /// Builds `job`'s agent and trains it at `p` with `seed` (training log
    /// in `dir` for the learned kinds).
    fn train_agent(
        &mut self,
        job: &AgentJob,
        p: Point,
        seed: u64,
        dir: &Path,
    ) -> Result<(Box<dyn Agent>, TrainSummary)> {
        let spec = &job.spec;
        let opts = self.train_opts(
            p,
            seed,
            spec.seeded().then(|| AgentFolder::new(dir).train_log()),
        );
        let joint = match spec.joint_start() {
            None => None,
            Some(start) => {
                // The mixed start: the frozen agent at the same point and
                // seed (and, under a budget, the alpha its dual ascent
                // reached).
                let start = match start {
                    JointStart::Mixed => Some(self.frozen_agent(p, seed)?),
                    JointStart::Cold | JointStart::Ann => None,
                };
                // The pretrained classifiers as recorded (with their fitted
                // temperatures), loaded for this agent alone: joint training
                // fine-tunes the cascade it owns.
                let cascade = Cascade::load(
                    self.cascade_dir,
                    self.device,
                    Some(&self.cfg.cascade),
                    Some(&self.cfg.dataset),
                )?;
                // D_C, D_P and D_V: what each part learns from is the
                // agent's setting (cross-fitted by default).
                let splits = JointSplits {
                    classifier_train: &self.data.splits.train,
                    policy_train: &self.data.agent_train,
                    val: &self.data.splits.val,
                };
                Some(JointInputs {
                    cascade,
                    splits,
                    start,
                })
            }
        };
        let rep = self.rep;
        let inputs = TrainInputs {
            data: TrainData {
                train: &mut self.traces.train,
                val: &mut self.traces.val,
            },
            joint,
        };
        Ok(rep.quietly(|| cascade_agents::train(spec, inputs, &opts))?)
    }

    /// The frozen agent at `p` and `seed`: loaded from its folder when a
    /// finished one is there, trained (deterministically, as its own unit
    /// would) and saved otherwise.
    /// Returns it with the alpha of its kept epoch (under a budget, where
    /// dual ascent left it).
    fn frozen_agent(&mut self, p: Point, seed: u64) -> Result<(ReinforceAgent, f64)> {
        let (dir, _) = self.agent_dir(AgentKind::ReinforceFrozen.name(), p, Some(seed));
        let summary = AgentFolder::new(&dir).train_summary();
        if summary.exists() {
            if let (Ok(a), Ok(s)) = (
                ReinforceAgent::load(&dir),
                read_json::<TrainSummary>(&summary),
            ) {
                if a.mode() == ReinforceMode::Frozen {
                    return Ok((a, s.alpha));
                }
            }
        }
        let folder = NewFolder::begin(&dir, AGENT_FOLDER, Replace::Anything)?;
        let job = AgentJob::of(AgentKind::ReinforceFrozen, self.cfg)?;
        let (a, s) = self.train_agent(&job, p, seed, folder.path())?;
        a.save(folder.path())?;
        cascade_agents::record_spec(folder.path(), &job.spec)?;
        write_json(&AgentFolder::new(folder.path()).train_summary(), &s)?;
        // Another shard may have run the frozen unit meanwhile: its folder
        // (the same agent, with its evaluations) is kept, not replaced by
        // this one without them. Read back as saved either way (weights
        // are stored exactly; the two are the same training).
        folder.commit_unless_taken()?;
        Ok((ReinforceAgent::load(&dir)?, s.alpha))
    }

    fn save_reports(
        &self,
        dir: &Path,
        summary: &TrainSummary,
        val: &EvalReport,
        test: &EvalReport,
    ) -> Result<()> {
        write_json(&AgentFolder::new(dir).train_summary(), summary)?;
        val.write_json(&AgentFolder::new(dir).eval_json("val"))?;
        test.write_json(&AgentFolder::new(dir).eval_json("test"))?;
        Ok(())
    }

    /// The identity of an alpha-free, seedless row of this study (the
    /// rest set by struct update where it applies).
    fn row_id<'b>(&'b self, agent: &'b str, kind: Family) -> RowId<'b> {
        RowId {
            agent,
            kind,
            alpha: None,
            budget: None,
            seed: None,
            dataset: &self.cfg.dataset,
            cascade: &self.cfg.cascade,
            agent_dir: "",
        }
    }
}

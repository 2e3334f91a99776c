//! End to end: the `joint_vs_frozen` study on a shrunken `quick` preset
//! (synthetic data, a few hundred images, one or two epochs), then resuming,
//! sharding + merging, redrawing, and an `alpha_sweep` in budget mode.

use std::path::{Path, PathBuf};

use cascade_experiments::results::{
    header, read_results, ResultRow, FIXED_COLUMNS, RESULTS_FILE, WALL_TIME_COLUMNS,
};
use cascade_experiments::study::{run_study, AlphaSweepArgs, JointVsFrozenArgs, StudyOutcome};

/// The shrunken quick study into `out`, with `extra` flags.
fn study_args(out: &Path, extra: &[&str]) -> JointVsFrozenArgs {
    let mut argv = vec![
        "joint_vs_frozen",
        "--preset",
        "quick",
        "--out",
        out.to_str().unwrap(),
        "--synthetic-train",
        "1000",
        "--synthetic-test",
        "300",
        "--pretrain-epochs",
        "2",
        "--frozen-epochs",
        "3",
        "--joint-epochs",
        "2",
        "--alphas",
        "0.02,0.2",
        "--seeds",
        "0,1",
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    JointVsFrozenArgs::from_argv(argv).unwrap()
}

fn run(args: &JointVsFrozenArgs) -> StudyOutcome {
    let (cfg, opts) = args.resolve().unwrap();
    run_study(&cfg, &opts).unwrap()
}

fn stage_files(cascade: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(cascade)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "safetensors" || x == "json")
        })
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

/// Rows with the wall-time columns zeroed.
fn without_wall_times(rows: Vec<ResultRow>) -> Vec<ResultRow> {
    rows.into_iter()
        .map(|r| ResultRow {
            train_seconds: 0.0,
            eval_seconds: 0.0,
            ..r
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn quick_study_end_to_end_resumes_shards_and_redraws() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");

    // -- Pretrain only, then the sweep: the pretrained files never change.
    let o = run(&study_args(&dir, &["--pretrain-only"]));
    assert!(o.pretrained);
    assert_eq!(o.computed, 0);
    assert!(!dir.join(RESULTS_FILE).exists());
    let before = stage_files(&dir.join("cascade"));
    assert_eq!(before.len(), 4, "cascade.json and three stage files");

    let o = run(&study_args(&dir, &[]));
    assert!(
        !o.pretrained,
        "the cascade of the pretrain-only step is reused"
    );
    // 3 static + oracle + 31 oracle-alpha + 3 x 2 threshold (shared,
    // per-stage, entropy) + 2 backward-induction + 2 ann + 4 frozen + 4
    // reinforce-joint + 4 expected-joint + 18 joint arms x 2 seeds at the
    // ablation point + the main arm's -lr0 twin at every alpha x 2 seeds.
    assert_eq!((o.computed, o.skipped), (99, 0));
    assert_eq!(
        stage_files(&dir.join("cascade")),
        before,
        "joint training wrote to the shared cascade"
    );

    // -- results.csv: the documented columns, every agent.
    let text = std::fs::read_to_string(dir.join(RESULTS_FILE)).unwrap();
    let head: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    assert_eq!(head, header(3, 4));
    assert_eq!(&head[..FIXED_COLUMNS.len()], FIXED_COLUMNS);
    let rows = read_results(&dir.join(RESULTS_FILE)).unwrap();
    assert_eq!(rows.len(), 99);
    for agent in [
        "static-1",
        "static-3",
        "oracle",
        "oracle-alpha",
        "threshold",
        "threshold-per-stage",
        "threshold-entropy",
        "backward-induction",
        "ann",
        "reinforce-frozen",
        "reinforce-joint",
        "expected-joint",
        "reinforce-joint-lr0",
        "reinforce-joint-pooled",
        "reinforce-joint-ann",
        "reinforce-joint-cold",
        "expected-joint-routing-ce",
        "expected-joint-ann-lr0",
    ] {
        assert!(rows.iter().any(|r| r.agent == agent), "no {agent} row");
    }
    // Joint arms started "mixed" select on validation from the frozen
    // agent's policy and the pretrained classifiers (epoch 0), so none is
    // worse than the frozen agent on validation at the same point and seed.
    for r in rows.iter().filter(|r| {
        [
            "reinforce-joint",
            "expected-joint",
            "reinforce-joint-lr0",
            "reinforce-joint-clr-low",
            "reinforce-joint-clr-high",
            "reinforce-joint-detached",
            "reinforce-joint-recal",
            "reinforce-joint-pooled",
            "reinforce-joint-pooled-lr0",
            "expected-joint-lr0",
            "expected-joint-routing-ce",
            "expected-joint-clr-low",
            "expected-joint-clr-high",
        ]
        .contains(&r.agent.as_str())
    }) {
        let frozen = rows
            .iter()
            .find(|f| f.agent == "reinforce-frozen" && f.alpha == r.alpha && f.seed == r.seed)
            .unwrap();
        assert!(
            r.val_mean_reward >= frozen.val_mean_reward - 1e-6,
            "{} alpha {:?} seed {:?}: validation reward {} below the frozen agent's {}",
            r.agent,
            r.alpha,
            r.seed,
            r.val_mean_reward,
            frozen.val_mean_reward
        );
    }
    // The cascade records its data roles and the temperatures fitted on
    // the policy images.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cascade").join("cascade.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["roles"]["policy_train"], 180);
    assert_eq!(manifest["calibration"]["split"], "policy_train");
    assert!(manifest["stages"][0]["temperature"].as_f64().unwrap() > 0.0);
    let joint: Vec<&ResultRow> = rows
        .iter()
        .filter(|r| r.agent == "reinforce-joint")
        .collect();
    assert_eq!(joint.len(), 4);
    for r in &joint {
        assert_eq!(r.n, 300);
        assert!((r.exit_fraction.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let per_class: usize = r.exits_per_class.iter().flatten().sum();
        assert_eq!(per_class, 300);
        assert!(dir.join(&r.agent_dir).join("train_log.csv").exists());
        assert!(dir
            .join(&r.agent_dir)
            .join("cascade")
            .join("cascade.json")
            .exists());
    }
    // The packed per-image outcomes hold every agent row's test evaluation
    // (as its folder has it) and each stage alone.
    let packed = dir.join(cascade_experiments::outcomes::OUTCOMES_FILE);
    let names = cascade_experiments::outcomes::names(&packed).unwrap();
    let agent_rows: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| !r.agent_dir.is_empty())
        .map(|r| r.agent_dir.as_str())
        .collect();
    assert_eq!(names.len(), agent_rows.len() + 3);
    for r in &joint {
        let from_file = cascade_experiments::outcomes::read(&packed, &r.agent_dir).unwrap();
        let from_folder =
            cascade_agents::EvalReport::read_json(&dir.join(&r.agent_dir).join("eval_test.json"))
                .unwrap();
        assert_eq!(from_file.sample_correct, from_folder.sample_correct);
        assert_eq!(from_file.sample_exits, from_folder.sample_exits);
    }
    // The packed training logs hold every learned agent's curves.
    let logs = dir.join(cascade_experiments::outcomes::TRAIN_LOGS_FILE);
    for r in &joint {
        let val =
            cascade_experiments::outcomes::read_log(&logs, &r.agent_dir, "val/error").unwrap();
        let own = std::fs::read_to_string(dir.join(&r.agent_dir).join("train_log.csv")).unwrap();
        assert_eq!(val.len(), own.lines().count() - 1);
        assert_eq!(val.len(), r.epochs_run.unwrap());
    }
    let s3_packed = cascade_experiments::outcomes::read(&packed, "static-3").unwrap();
    assert_eq!(s3_packed.n, 300);
    // The largest stage alone: cumulative cost (all three stages) is > 100%.
    let s3 = rows.iter().find(|r| r.agent == "static-3").unwrap();
    assert_eq!(s3.exit_fraction, vec![0.0, 0.0, 1.0]);
    assert!(s3.cost_pct > 100.0);

    // -- Figures (valid PNG and SVG) and the summary.
    for name in [
        "pareto",
        "sample_distribution",
        "accuracy_distribution",
        "exits_per_class",
        "training_curves",
    ] {
        let png = std::fs::read(dir.join("figures").join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
        let svg = std::fs::read_to_string(dir.join("figures").join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
    }
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    for needle in [
        "static stage 1",
        "static stage 3",
        "threshold",
        "REINFORCE on frozen classifiers",
        "REINFORCE joint",
        "expected-joint",
        "## Ablations",
        "## Paired tests on the test images",
        "oracle",
        "synthetic data",
        "validation",
    ] {
        assert!(
            summary.contains(needle),
            "summary.md lacks {needle:?}:\n{summary}"
        );
    }
    // Every joint arm is paired with its -lr0 twin (a shared one for the
    // learning-rate arms) and with the frozen learner.
    for arm in [
        "REINFORCE joint",
        "reinforce-joint-clr-high",
        "expected-joint-routing-ce",
    ] {
        let row = summary
            .lines()
            .find(|l| l.starts_with(&format!("| {arm} at ")))
            .unwrap_or_else(|| panic!("no paired row for {arm}:\n{summary}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "{row}");
        assert!(cells[4] != "n/a" && cells[5] != "n/a", "{row}");
    }

    // -- Rerun: nothing trained, results unchanged.
    let o = run(&study_args(&dir, &[]));
    assert_eq!((o.computed, o.skipped), (0, 99));
    assert_eq!(
        std::fs::read_to_string(dir.join(RESULTS_FILE)).unwrap(),
        text
    );

    // -- Other settings in the same folder are refused, naming them.
    let (cfg, opts) = study_args(&dir, &["--classifier-lr", "0.5"])
        .resolve()
        .unwrap();
    let err = run_study(&cfg, &opts).unwrap_err().to_string();
    assert!(
        err.contains("(reinforce-joint, ") && err.contains("another --out"),
        "{err}"
    );

    // -- Two shards merged equal the unsharded run (wall times aside).
    let sharded = tmp.path().join("sharded");
    copy_dir(&dir.join("cascade"), &sharded.join("cascade"));
    let a = run(&study_args(&sharded, &["--shard", "0/2"]));
    let b = run(&study_args(&sharded, &["--shard", "1/2"]));
    assert!(!a.pretrained && !b.pretrained);
    assert_eq!(a.computed + b.computed, 99);
    assert!(a.computed > 0 && b.computed > 0);
    assert!(sharded.join("results.shard-0-of-2.csv").exists());
    assert!(!sharded.join(RESULTS_FILE).exists());
    cascade_experiments::cli::merge::run(&cascade_experiments::cli::merge::MergeArgs {
        run_dir: sharded.clone(),
        no_report: false,
    })
    .unwrap();
    let merged = read_results(&sharded.join(RESULTS_FILE)).unwrap();
    assert_eq!(without_wall_times(merged), without_wall_times(rows.clone()));
    assert!(sharded.join("figures").join("pareto.png").exists());
    assert!(WALL_TIME_COLUMNS.iter().all(|c| head.contains(c)));

    // -- `cascade plot` redraws from the files alone.
    std::fs::remove_dir_all(dir.join("figures")).unwrap();
    std::fs::remove_file(dir.join("summary.md")).unwrap();
    cascade_experiments::cli::plot::run(&cascade_experiments::cli::plot::PlotArgs {
        run_dir: dir.clone(),
        gallery: Some("threshold".into()),
    })
    .unwrap();
    assert!(dir.join("figures").join("training_curves.svg").exists());
    assert!(dir.join("figures").join("exit_gallery.png").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("summary.md")).unwrap(),
        summary
    );

    // -- alpha_sweep in budget mode on the same cascade: threshold only.
    let sweep = tmp.path().join("sweep");
    copy_dir(&dir.join("cascade"), &sweep.join("cascade"));
    let args = AlphaSweepArgs::from_argv([
        "alpha_sweep",
        "--preset",
        "quick",
        "--out",
        sweep.to_str().unwrap(),
        "--synthetic-train",
        "1000",
        "--synthetic-test",
        "300",
        "--pretrain-epochs",
        "2",
        "--frozen-epochs",
        "3",
        "--joint-epochs",
        "2",
        "--agent",
        "threshold",
        "--budgets",
        "0.3,0.6",
        "--quiet",
    ])
    .unwrap();
    let (cfg, opts) = args.resolve().unwrap();
    let o = run_study(&cfg, &opts).unwrap();
    assert!(!o.pretrained);
    let rows = read_results(&sweep.join(RESULTS_FILE)).unwrap();
    let th: Vec<&ResultRow> = rows.iter().filter(|r| r.agent == "threshold").collect();
    assert_eq!(
        th.iter().map(|r| r.budget).collect::<Vec<_>>(),
        [Some(0.3), Some(0.6)]
    );
    for r in th {
        // Chosen on validation to meet the budget.
        if r.budget_met == Some(true) {
            assert!(r.val_cost_pct <= 100.0 * r.budget.unwrap() + 1e-9);
        }
    }
    assert!(!rows.iter().any(|r| r.agent.starts_with("reinforce")));
}

#[test]
fn aggregate_joins_runs_over_cascade_seeds_and_refuses_other_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let run_with = |name: &str, extra: &[&str]| {
        let dir = tmp.path().join(name);
        let args = study_args(
            &dir,
            &[&["--agents", "threshold,frozen"][..], extra].concat(),
        );
        run(&args);
        dir
    };
    let a = run_with("c0", &["--cascade-seed", "0"]);
    let b = run_with("c1", &["--cascade-seed", "1"]);
    let (md, dropped) =
        cascade_experiments::cli::aggregate::aggregate_markdown(&[a.clone(), b.clone()]).unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
    assert!(md.contains("cascade seeds [0, 1]"), "{md}");
    // 2 cascades x 2 agent seeds for the frozen agent, 2 x 1 for the threshold.
    assert!(md.contains("| reinforce-frozen | 0.02 | 4 |"), "{md}");
    assert!(md.contains("| threshold | 0.2 | 2 |"), "{md}");
    assert!(md.contains("| static-3 | | 2 |"), "{md}");
    let err = cascade_experiments::cli::aggregate::aggregate_markdown(&[a.clone(), a.clone()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("share cascade seed 0"), "{err}");
    let c = run_with("c2", &["--cascade-seed", "2", "--classifier-lr", "0.5"]);
    let err = cascade_experiments::cli::aggregate::aggregate_markdown(&[a, c])
        .unwrap_err()
        .to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn a_config_file_keeps_its_agents_unless_the_flag_names_others() {
    use cascade_agents::AgentKind;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (mut cfg, _) = study_args(&out, &[]).resolve().unwrap();
    assert_eq!(
        cfg.agents,
        AgentKind::ALL.to_vec(),
        "a preset runs every agent"
    );
    cfg.agents = vec![AgentKind::Ann, AgentKind::ReinforceFrozen];
    let file = tmp.path().join("config.json");
    std::fs::write(&file, serde_json::to_string(&cfg).unwrap()).unwrap();
    let from_file = |extra: &[&str]| {
        let mut argv = vec![
            "joint_vs_frozen",
            "--config",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        argv.extend_from_slice(extra);
        JointVsFrozenArgs::from_argv(argv)
            .unwrap()
            .resolve()
            .unwrap()
            .0
    };
    assert_eq!(
        from_file(&[]).agents,
        vec![AgentKind::Ann, AgentKind::ReinforceFrozen]
    );
    assert_eq!(
        from_file(&["--agents", "threshold"]).agents,
        vec![AgentKind::Threshold]
    );
}

#[test]
fn a_study_with_sampled_predictions_packs_and_compares_sampled_stages() {
    use cascade_agents::AgentKind;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (mut cfg, _) = study_args(&out, &[]).resolve().unwrap();
    cfg.agents = vec![AgentKind::Threshold, AgentKind::BackwardInduction];
    cfg.reward.prediction = cascade_env::Prediction::Sample;
    let file = tmp.path().join("config.json");
    std::fs::write(&file, serde_json::to_string(&cfg).unwrap()).unwrap();
    let args = JointVsFrozenArgs::from_argv([
        "joint_vs_frozen",
        "--config",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ])
    .unwrap();
    run(&args);
    let rows = read_results(&out.join(RESULTS_FILE)).unwrap();
    let packed = out.join(cascade_experiments::outcomes::OUTCOMES_FILE);
    for k in 1..=3 {
        let name = format!("static-{k}");
        let row = rows.iter().find(|r| r.agent == name).unwrap();
        let report = cascade_experiments::outcomes::read(&packed, &name).unwrap();
        assert_eq!(report.spec.prediction, cascade_env::Prediction::Sample);
        assert!(
            (100.0 * report.error - row.error_pct).abs() < 1e-9,
            "{name}: packed {} against the row's {}",
            100.0 * report.error,
            row.error_pct
        );
    }
    // The summary's "vs the last stage alone" compares sampled outcomes
    // too: each difference is the agent's error minus static-3's row.
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let last = rows.iter().find(|r| r.agent == "static-3").unwrap();
    let bi: Vec<_> = rows
        .iter()
        .filter(|r| r.agent == "backward-induction")
        .collect();
    assert_eq!(bi.len(), 2);
    for r in bi {
        let label = format!("| backward induction at alpha {} |", r.alpha.unwrap());
        let line = summary
            .lines()
            .find(|l| l.starts_with(&label))
            .unwrap_or_else(|| panic!("no line {label} in {summary}"));
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let want = format!("{:+.2} [", r.error_pct - last.error_pct);
        assert!(cells[3].starts_with(&want), "{line}: want {want}");
    }
}

use super::*;
use std::path::Path;

#[test]
fn presets_validate_and_quick_is_synthetic() {
    for name in STUDY_PRESETS {
        let c = StudyConfig::preset("joint_vs_frozen", name, None).unwrap();
        c.validate().unwrap();
        c.cascade_preset().unwrap();
    }
    let q = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
    assert!(q.is_synthetic());
    let e = StudyConfig::preset("joint_vs_frozen", "imagenet", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("imagenet") && e.contains("quick"), "{e}");
}

#[test]
fn a_twin_must_be_a_variant_and_the_main_twin_runs_everywhere() {
    let mut c = StudyConfig::preset("joint_vs_frozen", "fmnist", None).unwrap();
    let lr0 = c.agent("reinforce-joint-lr0").unwrap();
    assert!(lr0.every_point && !lr0.is_main());
    match (&lr0.spec, c.spec(AgentKind::ReinforceJoint).unwrap()) {
        (AgentSpec::ReinforceJoint(twin), AgentSpec::ReinforceJoint(main)) => {
            assert_eq!(twin.classifiers.classifier_lr, 0.0);
            assert!(main.classifiers.classifier_lr > 0.0);
            assert_eq!(twin.policy, main.policy);
            assert_eq!(twin.start, main.start);
        }
        other => panic!("{other:?}"),
    }
    let low = c
        .specs
        .iter_mut()
        .find(|v| v.name == "reinforce-joint-clr-low")
        .unwrap();
    assert_eq!(low.twin.as_deref(), Some("reinforce-joint-lr0"));
    low.twin = Some("no-such-arm".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("no-such-arm") && e.contains("twin"), "{e}");
}

#[test]
fn log_grid_is_rounded_and_spans_the_range() {
    assert_eq!(log_grid(0.01, 1.0, 3), vec![0.01, 0.1, 1.0]);
    assert_eq!(log_grid(0.5, 2.0, 1), vec![0.5]);
}

#[test]
fn validation_names_the_bad_value() {
    let mut c = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
    c.alphas = vec![0.1, -1.0];
    assert!(c.validate().unwrap_err().to_string().contains("-1"));
    c.alphas = vec![0.1, 0.1];
    assert!(c.validate().unwrap_err().to_string().contains("twice"));
    c.alphas = vec![0.1];
    c.budgets = vec![0.3];
    assert!(c.validate().unwrap_err().to_string().contains("not both"));
    // Out-of-range values are refused before any work, named briefly.
    c.budgets = vec![];
    for bad in [1e308, 1e-300, f64::NAN, f64::INFINITY] {
        c.alphas = vec![bad];
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("alpha must be 0 or between") && e.len() < 200,
            "{e}"
        );
    }
    c.alphas = vec![0.0, 1e-9, 0.05, 1e4];
    c.validate().unwrap();
    c.alphas = vec![];
    for bad in [1e300, 0.0, -0.1, 1e-7] {
        c.budgets = vec![bad];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("budget must be") && e.len() < 200, "{e}");
    }
}

#[test]
fn a_named_data_folder_without_the_data_is_an_error() {
    let err = StudyConfig::preset(
        "joint_vs_frozen",
        "default",
        Some(Path::new("/no/such/dir")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fashion-mnist") && err.contains("/no/such/dir"),
        "{err}"
    );
}

#[test]
fn identity_ignores_the_sweep() {
    let a = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
    let mut b = a.clone();
    b.alphas.push(0.7);
    b.seeds.push(9);
    b.specs.pop();
    assert_eq!(a.identity(), b.identity());
    assert!(a.changed_agents(&b).is_empty());
    b.pretrain.seed += 1;
    assert_ne!(a.identity(), b.identity());
    // An agent's settings are compared by name.
    let mut c = a.clone();
    if let AgentSpec::ReinforceFrozen(f) = &mut c.specs[5].spec {
        f.epochs += 1;
    }
    assert_eq!(a.identity(), c.identity());
    assert_eq!(a.changed_agents(&c), vec!["reinforce-frozen".to_string()]);
}

#[test]
fn the_by_kind_form_resolves_to_named_specs() {
    // A config.json written before named specs: the by-kind form.
    let c = StudyConfig::preset("joint_vs_frozen", "fmnist", None).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/results/fmnist/joint/cascade0/config.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let old: StudyConfig = serde_json::from_value(v["config"].clone()).unwrap();
    old.validate().unwrap();
    for name in [
        "reinforce-frozen",
        "reinforce-joint",
        "reinforce-joint-lr0",
        "expected-joint",
    ] {
        assert_eq!(
            old.agent(name).unwrap().spec,
            c.agent(name).unwrap().spec,
            "{name}"
        );
    }
    // Named specs round-trip.
    let back: StudyConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    // A name taken by another kind, or a twin that is no variant, is refused.
    let mut bad = c.clone();
    bad.specs[7].name = "ann".into();
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("'ann' is taken"));
    let mut bad = c.clone();
    bad.specs[8].twin = Some("reinforce-joint".into());
    assert!(bad.validate().is_err());
}

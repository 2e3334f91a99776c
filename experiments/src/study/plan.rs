//! The sweep as a fixed list of work units ([`Unit`]) over operating
//! points ([`Point`]): the order resuming and sharding rely on.

use super::config::StudyConfig;
use crate::results::PointKey;
use cascade_agents::AgentKind;

/// One operating point of a sweep: an alpha, or a budget with its starting alpha.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Point {
    pub(super) alpha: f64,
    pub(super) budget: Option<f64>,
}

impl Point {
    /// The point's part of a folder name: `budget0.18`, `alpha0.01`; a
    /// number whose plain form is long is written in exponent form
    /// (`alpha1e-7`), so names stay short.
    pub(super) fn tag(&self) -> String {
        fn short(x: f64) -> String {
            let plain = x.to_string();
            if plain.len() <= 12 {
                plain
            } else {
                format!("{x:e}")
            }
        }
        match self.budget {
            Some(b) => format!("budget{}", short(b)),
            None => format!("alpha{}", short(self.alpha)),
        }
    }
}

/// A work unit (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Unit {
    /// An agent of the sweep at a point, with a seed unless the kind is
    /// seedless.
    Agent(AgentKind, Point, Option<u64>),
    /// The variant `cfg.specs[i]` at a point with a seed.
    Variant(usize, Point, u64),
    Static,
    Oracle,
    OracleCurve,
}

pub(super) fn plan(cfg: &StudyConfig) -> Vec<Unit> {
    let points: Vec<Point> = if cfg.budget_mode() {
        cfg.budgets
            .iter()
            .map(|&b| Point {
                alpha: cfg.budget_alpha0,
                budget: Some(b),
            })
            .collect()
    } else {
        cfg.alphas
            .iter()
            .map(|&a| Point {
                alpha: a,
                budget: None,
            })
            .collect()
    };
    // The learned agents first, in display order, so the frozen agent
    // comes before the joint agents that warm-start from it (they train it
    // themselves when it is missing, e.g. in another shard); then the
    // seedless ones.
    let mut units = Vec::new();
    let swept = |seedless: bool| {
        AgentKind::ALL
            .into_iter()
            .filter(move |a| a.seedless() == seedless && cfg.agents.contains(a))
    };
    for agent in swept(false) {
        for p in &points {
            for &s in &cfg.seeds {
                units.push(Unit::Agent(agent, *p, Some(s)));
            }
        }
    }
    for agent in swept(true) {
        units.extend(points.iter().map(|&p| Unit::Agent(agent, p, None)));
    }
    units.extend([Unit::Static, Unit::Oracle, Unit::OracleCurve]);
    // Ablations of the joint agents swept (not in an `alpha_sweep` of
    // another agent).
    for (i, v) in cfg.specs.iter().enumerate() {
        if v.is_main() || !v.kind().is_some_and(|k| cfg.agents.contains(&k)) {
            continue;
        }
        for p in &points {
            let x = p.budget.unwrap_or(p.alpha);
            if v.every_point || cfg.ablation_points.is_empty() || cfg.ablation_points.contains(&x) {
                for &s in &cfg.seeds {
                    units.push(Unit::Variant(i, *p, s));
                }
            }
        }
    }

    units
}

impl Unit {
    pub(super) fn keys(&self, cfg: &StudyConfig, k: usize) -> Vec<PointKey> {
        match *self {
            Unit::Agent(a, p, s) => vec![PointKey::new(a.name(), Some(p.alpha), p.budget, s)],
            Unit::Variant(i, p, s) => vec![PointKey::new(
                &cfg.specs[i].name,
                Some(p.alpha),
                p.budget,
                Some(s),
            )],
            Unit::Static => (1..=k)
                .map(|t| PointKey::new(&format!("static-{t}"), None, None, None))
                .collect(),
            Unit::Oracle => vec![PointKey::new("oracle", None, None, None)],
            Unit::OracleCurve => cfg
                .oracle_alphas
                .iter()
                .map(|&a| PointKey::new("oracle-alpha", Some(a), None, None))
                .collect(),
        }
    }

    pub(super) fn describe(&self) -> String {
        match *self {
            Unit::Agent(a, p, Some(s)) => format!("{} {} seed {s}", a.name(), p.tag()),
            Unit::Agent(a, p, None) => format!("{} {}", a.name(), p.tag()),
            Unit::Variant(i, p, s) => format!("variant {} {} seed {s}", i + 1, p.tag()),
            Unit::Static => "static stages".into(),
            Unit::Oracle => "oracle".into(),
            Unit::OracleCurve => "oracle curve".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn point_tags_stay_short() {
        let tag = |alpha: f64, budget: Option<f64>| Point { alpha, budget }.tag();
        assert_eq!(tag(0.01, None), "alpha0.01");
        assert_eq!(tag(0.0, None), "alpha0");
        assert_eq!(tag(0.003, None), "alpha0.003");
        assert_eq!(tag(0.0, Some(0.18)), "budget0.18");
        assert_eq!(tag(1e-9, None), "alpha0.000000001");
        assert_eq!(tag(1e-13, None), "alpha1e-13");
        assert_eq!(tag(1234.5678901234, None), "alpha1.2345678901234e3");
        assert_eq!(tag(0.0, Some(1e-6)), "budget0.000001");
    }

    #[test]
    fn plan_puts_frozen_before_joint_and_covers_every_point() {
        let mut cfg = StudyConfig::preset("joint_vs_frozen", "quick", None).unwrap();
        cfg.alphas = vec![0.1, 0.2];
        cfg.seeds = vec![0, 1];
        let units = plan(&cfg);
        // Frozen, joint, threshold, static + oracles, and the main joint
        // arm's -lr0 twin at every point (the other ablations run only at
        // 0.05, not swept here).
        assert_eq!(units.len(), 4 + 4 + 2 + 3 + 4);
        assert!(matches!(
            units[0],
            Unit::Agent(AgentKind::ReinforceFrozen, _, Some(0))
        ));
        assert!(matches!(
            units[4],
            Unit::Agent(AgentKind::ReinforceJoint, _, Some(0))
        ));
        let keys: Vec<String> = units
            .iter()
            .flat_map(|u| u.keys(&cfg, 3))
            .map(|k| k.to_string())
            .collect();
        let unique: HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(keys.contains(&"reinforce-joint alpha 0.2 seed 1".to_string()));
        assert!(keys.contains(&"static-3".to_string()));
        assert!(keys.contains(&"reinforce-joint-lr0 alpha 0.1 seed 1".to_string()));
    }
}

//! The per-image outcomes of a run's test evaluations in one compact file,
//! `outcomes.jsonl.gz`: one gzipped JSON line per evaluation
//! (`{"name": ..., "report": EvalReport}`), the report with its per-image
//! exits, correctness and predictions. It holds every agent row of
//! `results.csv` (named by its agent folder, e.g.
//! `agents/fashion-mnist__ann__budget0.18`) and each stage alone
//! (`static-1` .. `static-K`, evaluated on the recorded test outputs), so
//! that every paired interval of a run can be recomputed from this file
//! alone: `cascade paired FILE#NAME FILE#NAME`.

use cascade_agents::AgentFolder;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use cascade_agents::{evaluate, ActMode, EvalConfig, EvalReport, StaticAgent};
use cascade_env::{ReplayBackend, RewardSpec, StageBackend};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::results::{read_results, RESULTS_FILE};
use crate::study::StudyConfig;

/// File name of the packed outcomes in a run folder.
pub const OUTCOMES_FILE: &str = "outcomes.jsonl.gz";

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    /// The agent folder (relative to the run) or `static-k`.
    name: String,
    /// The test evaluation, per-image outcomes included.
    report: EvalReport,
}

/// Stage `t` alone on a recorded test trace, evaluated as the study's
/// `static-K` rows are: the study's reward spec at alpha 0 (so its
/// prediction rule: a study with sampled predictions compares sampled
/// outcomes), greedy, seed 0, its sub-env count.
pub fn static_test_report(
    test: &mut ReplayBackend,
    cfg: &StudyConfig,
    t: usize,
) -> Result<EvalReport> {
    let spec = RewardSpec {
        alpha: 0.0,
        ..cfg.reward
    };
    let eval = EvalConfig {
        split: "test".into(),
        seed: 0,
        num_envs: cfg.num_envs,
        mode: ActMode::Greedy,
        count_policy_cost: cfg.count_policy_cost,
    };
    let agent = StaticAgent::new(t, test.num_stages())?;
    Ok(evaluate(&agent, test, &spec, &eval)?)
}

/// Writes `run/outcomes.jsonl.gz` from the run's agent folders (every row
/// of `results.csv` that has one) and its recorded test outputs
/// (`traces/test.trace`: each stage alone, [`static_test_report`]).
/// Returns the file and how many evaluations it holds. An agent folder
/// without `eval_test.json` is an error naming it.
pub fn pack(run: &Path) -> Result<(PathBuf, usize)> {
    let rows = read_results(&run.join(RESULTS_FILE))?;
    let mut lines = Vec::new();
    let trace_path = run.join(crate::study::TRACES_DIR).join("test.trace");
    if trace_path.exists() {
        let cfg = crate::study::read_run_record(run)?.config;
        let mut test = ReplayBackend::load(&trace_path)?;
        for t in 0..test.num_stages() {
            let report = static_test_report(&mut test, &cfg, t)?;
            lines.push(Line {
                name: report.agent.clone(),
                report,
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| !r.agent_dir.is_empty()) {
        if !seen.insert(r.agent_dir.clone()) {
            continue;
        }
        let file = AgentFolder::new(run.join(&r.agent_dir)).eval_json("test");
        let report = EvalReport::read_json(&file)?;
        if report.sample_correct.len() != report.n {
            return Err(Error::run_file(
                &file,
                "holds no per-image outcomes (written by an older build); evaluate again",
            ));
        }
        lines.push(Line {
            name: r.agent_dir.clone(),
            report,
        });
    }
    let out = run.join(OUTCOMES_FILE);
    let mut text = Vec::new();
    for l in &lines {
        text.extend(serde_json::to_vec(l).map_err(|e| Error::json(&out, e))?);
        text.push(b'\n');
    }
    write_gz(&out, &text)?;
    Ok((out, lines.len()))
}

/// File name of the packed training logs in a run folder.
pub const TRAIN_LOGS_FILE: &str = "train_logs.csv.gz";

/// Writes `run/train_logs.csv.gz`: every agent row's per-epoch training log
/// (`train_log.csv` in its folder, where it has one) in long form, one
/// line `agent_dir,epoch,metric,value` per logged number, so the curves
/// of a run (validation error and cost per epoch, losses) can be redrawn
/// or summarised from this file alone. Returns the file and how many logs
/// it holds.
pub fn pack_logs(run: &Path) -> Result<(PathBuf, usize)> {
    let rows = read_results(&run.join(RESULTS_FILE))?;
    let mut text = String::from("agent_dir,epoch,metric,value\n");
    let mut seen = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| !r.agent_dir.is_empty()) {
        let file = run.join(&r.agent_dir).join(crate::study::TRAIN_LOG_FILE);
        if !seen.insert(r.agent_dir.clone()) || !file.exists() {
            continue;
        }
        let log = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let mut lines = log.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        if header.first() != Some(&"epoch") {
            return Err(Error::run_file(
                &file,
                "does not start with an `epoch` column",
            ));
        }
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != header.len() {
                return Err(Error::run_file(
                    &file,
                    format!(
                        "a row of {} cells under {} columns",
                        cells.len(),
                        header.len()
                    ),
                ));
            }
            for (metric, value) in header.iter().zip(&cells).skip(1) {
                text.push_str(&format!("{},{},{metric},{value}\n", r.agent_dir, cells[0]));
            }
        }
    }
    let out = run.join(TRAIN_LOGS_FILE);
    write_gz(&out, text.as_bytes())?;
    Ok((out, seen.len()))
}

/// Writes `bytes` gzipped to `out` (whole or not at all).
fn write_gz(out: &Path, bytes: &[u8]) -> Result<()> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).map_err(|e| Error::io(out, e))?;
    let packed = gz.finish().map_err(|e| Error::io(out, e))?;
    crate::error::write_file(out, &packed)
}

/// One metric of one agent's log from a packed `train_logs.csv.gz`:
/// `(epoch, value)` in the file's order (empty when the agent or metric is
/// not in it).
pub fn read_log(file: &Path, agent_dir: &str, metric: &str) -> Result<Vec<(usize, f64)>> {
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        .map_err(|e| Error::io(file, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let [dir, epoch, m, value] = cells[..] else {
            return Err(Error::run_file(
                file,
                format!("line {} is not 4 cells", i + 1),
            ));
        };
        if dir != agent_dir || m != metric {
            continue;
        }
        match (epoch.parse(), value.parse()) {
            (Ok(e), Ok(v)) => out.push((e, v)),
            _ => {
                return Err(Error::run_file(
                    file,
                    format!(
                        "line {}: epoch `{epoch}` or value `{value}` is not a number",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// The names in a packed file, in order.
pub fn names(file: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for_each(file, |l| {
        out.push(l.name);
        false
    })?;
    Ok(out)
}

/// The evaluation `name` of the packed file `file`; an unknown name is an
/// error listing a few of the names the file holds.
pub fn read(file: &Path, name: &str) -> Result<EvalReport> {
    let mut found = None;
    let mut names = Vec::new();
    for_each(file, |l| {
        if l.name == name || l.name.trim_start_matches("agents/") == name {
            found = Some(l.report);
            true
        } else {
            names.push(l.name);
            false
        }
    })?;
    found.ok_or_else(|| {
        let shown: Vec<&str> = names.iter().take(6).map(String::as_str).collect();
        Error::run_file(
            file,
            format!(
                "holds no evaluation named '{name}' ({} names, e.g. {})",
                names.len(),
                shown.join(", ")
            ),
        )
    })
}

/// Calls `f` on each line until it returns true.
fn for_each(file: &Path, mut f: impl FnMut(Line) -> bool) -> Result<()> {
    let raw = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(raw));
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(file, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).map_err(|e| {
            Error::run_file(file, format!("line {} is not an evaluation: {e}", i + 1))
        })?;
        if f(l) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_corrupt_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(OUTCOMES_FILE);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"name\": 3}\n").unwrap();
        std::fs::write(&file, gz.finish().unwrap()).unwrap();
        let e = read(&file, "x").unwrap_err().to_string();
        assert!(e.contains("line 1 is not an evaluation"), "{e}");
        std::fs::write(&file, b"not gzip").unwrap();
        assert!(read(&file, "x").is_err());
    }
}

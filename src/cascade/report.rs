//! The static table of a cascade: each stage used alone, its test error
//! and its cost as a share of the largest stage (`static.md` and
//! `static.csv` in a cascade folder).

use crate::checkpoint::CascadeManifest;

/// One row of the static table.
struct StaticRow {
    stage: usize,
    name: String,
    macs: u64,
    /// % of the largest stage's MACs.
    pct: f64,
    cumulative: u64,
    cumulative_pct: f64,
    val_error: f64,
    test_error: f64,
}

fn static_rows(m: &CascadeManifest) -> Vec<StaticRow> {
    let largest = m.stages.iter().map(|s| s.macs).max().unwrap_or(1).max(1) as f64;
    let mut cum = 0u64;
    m.stages
        .iter()
        .map(|s| {
            cum += s.macs;
            StaticRow {
                stage: s.stage,
                name: s.name.clone(),
                macs: s.macs,
                pct: 100.0 * s.macs as f64 / largest,
                cumulative: cum,
                cumulative_pct: 100.0 * cum as f64 / largest,
                val_error: s.val_error,
                test_error: s.test_error,
            }
        })
        .collect()
}

/// The static table in Markdown: each stage used alone, its test error and
/// cost as a share of the largest stage.
pub fn static_markdown(m: &CascadeManifest) -> String {
    let mut s = format!(
        "# Static cascade table: preset `{}`, data set `{}`\n\n",
        m.preset, m.dataset
    );
    if let Some(n) = &m.notice {
        s += &format!("**{n}**\n\n");
    }
    s += &format!(
        "Each stage used alone on the {} test images (seed {}). MACs per image; \
         % is of the largest stage; cumulative = all stages up to this one run.\n\n",
        m.split.n_test, m.seed
    );
    s += "| stage | model | MACs | % of largest | cumulative MACs | cumulative % | val error % | test error % |\n";
    s += "|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for r in static_rows(m) {
        s += &format!(
            "| {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} |\n",
            r.stage,
            r.name,
            r.macs,
            r.pct,
            r.cumulative,
            r.cumulative_pct,
            100.0 * r.val_error,
            100.0 * r.test_error
        );
    }
    s
}

/// The static table as CSV (one row per stage; the `synthetic` column says
/// whether the numbers come from synthetic data).
pub fn static_csv(m: &CascadeManifest) -> String {
    let mut s = String::from(
        "preset,dataset,synthetic,stage,model,macs,macs_pct_of_largest,cumulative_macs,cumulative_pct_of_largest,val_error,test_error\n",
    );
    for r in static_rows(m) {
        s += &format!(
            "{},{},{},{},{},{},{:.4},{},{:.4},{:.6},{:.6}\n",
            m.preset,
            m.dataset,
            m.synthetic,
            r.stage,
            r.name,
            r.macs,
            r.pct,
            r.cumulative,
            r.cumulative_pct,
            r.val_error,
            r.test_error
        );
    }
    s
}

//! Every figure writes a decodable PNG of the documented size and a well-formed
//! SVG holding its title and legend labels; bad input gets a typed error and
//! writes nothing.

use std::path::{Path, PathBuf};

use cascade_plots::{
    AccuracyDistributionPlot, Error, ExitAccuracies, ExitFractions, ExitsPerClassPlot, FigureFiles,
    ImageGridPlot, MetricPanel, MetricSeries, ParetoCurve, ParetoPlot, ParetoPoint,
    SampleDistributionPlot, StagePoint, TrainingCurvesPlot,
};

// ---------------------------------------------------------------- checkers

/// Checks the PNG signature and IHDR, decodes the image, returns its size.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (w, h));
    (w, h)
}

/// A small XML well-formedness check: balanced tags, quoted attributes, one
/// root element. Returns the root name, the decoded text content (one string
/// per text node) and the raw attribute text of every element.
fn parse_xml(xml: &str) -> (String, Vec<String>, Vec<(String, String)>) {
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    };
    let mut stack: Vec<String> = vec![];
    let mut root = None;
    let mut texts = vec![];
    let mut elements = vec![];
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        let text = rest[..lt].trim();
        if !text.is_empty() {
            assert!(!stack.is_empty(), "text outside the root: {text:?}");
            assert!(!text.contains('>'), "stray '>' in text {text:?}");
            texts.push(unescape(text));
        }
        rest = &rest[lt..];
        if rest.starts_with("<?") {
            rest = &rest[rest.find("?>").expect("unclosed <?") + 2..];
            continue;
        }
        if rest.starts_with("<!--") {
            rest = &rest[rest.find("-->").expect("unclosed comment") + 3..];
            continue;
        }
        // Find the end of the tag, skipping '>' inside quoted attributes.
        let mut in_quote = None;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            match (in_quote, c) {
                (None, '"' | '\'') => in_quote = Some(c),
                (Some(q), c) if c == q => in_quote = None,
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                (None, '<') => panic!("'<' inside a tag"),
                _ => {}
            }
        }
        let end = end.expect("unclosed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().expect("closing tag without opening");
            assert_eq!(open, name.trim(), "mismatched tags");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name: String = tag.chars().take_while(|c| !c.is_whitespace()).collect();
        assert!(!name.is_empty(), "empty tag name");
        let attrs = tag[name.len()..].to_string();
        assert_eq!(
            attrs.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{name}{attrs}>"
        );
        if stack.is_empty() {
            assert!(root.is_none(), "second root element <{name}>");
            root = Some(name.clone());
        }
        elements.push((name.clone(), attrs));
        if !self_closing {
            stack.push(name);
        }
    }
    assert!(rest.trim().is_empty(), "text after the root");
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    (root.expect("no root element"), texts, elements)
}

/// Checks the SVG is well formed with root `<svg>` of the given size and
/// contains each of `needles` as one text element.
fn check_svg(
    path: &Path,
    size: (u32, u32),
    needles: &[&str],
) -> (Vec<String>, Vec<(String, String)>) {
    let xml = std::fs::read_to_string(path).unwrap();
    let (root, texts, elements) = parse_xml(&xml);
    assert_eq!(root, "svg");
    let svg_attrs = &elements[0].1;
    assert!(
        svg_attrs.contains(&format!("width=\"{}\"", size.0)),
        "{svg_attrs}"
    );
    assert!(
        svg_attrs.contains(&format!("height=\"{}\"", size.1)),
        "{svg_attrs}"
    );
    for n in needles {
        assert!(
            texts.iter().any(|t| t == n),
            "{}: no text {n:?} in {texts:?}",
            path.display()
        );
    }
    (texts, elements)
}

fn check_files(
    files: &FigureFiles,
    stem: &Path,
    size: (u32, u32),
    needles: &[&str],
) -> Vec<String> {
    assert_eq!(files.svg, stem.with_extension("svg"));
    assert_eq!(files.png, stem.with_extension("png"));
    assert_eq!(png_size(&files.png), size);
    check_svg(&files.svg, size, needles).0
}

/// Nothing but the expected files: no temporaries left behind.
fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}

fn stem(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

// ---------------------------------------------------------------- data

fn stages3() -> Vec<String> {
    ["stage 1 linear", "stage 2 CNN-s", "stage 3 CNN-l"]
        .map(String::from)
        .to_vec()
}

fn pareto() -> ParetoPlot {
    let mut p = ParetoPlot::new("Fashion-MNIST, linear/CNN-s/CNN-l: threshold vs REINFORCE");
    p.stages = vec![
        StagePoint {
            label: "stage 1 linear".into(),
            cost: 0.35,
            error: 15.9,
        },
        StagePoint {
            label: "stage 3 CNN-l".into(),
            cost: 100.0,
            error: 7.6,
        },
    ];
    p.curves = vec![
        ParetoCurve::new(
            "threshold",
            vec![
                ParetoPoint::new(3.1, 12.2).with_spread(0.3, 0.3),
                ParetoPoint::new(0.9, 14.6).with_spread(1.5, 0.3), // spread reaching below 0
                ParetoPoint::new(41.0, 8.0),
            ],
        ),
        ParetoCurve::new(
            "REINFORCE (joint)",
            vec![ParetoPoint::new(2.2, 10.8), ParetoPoint::new(31.0, 7.5)],
        ),
        ParetoCurve::reference(
            "oracle",
            vec![ParetoPoint::new(0.42, 6.9), ParetoPoint::new(4.0, 4.2)],
        ),
    ];
    p
}

fn samples() -> SampleDistributionPlot {
    SampleDistributionPlot {
        title: "Fashion-MNIST: where test samples stop".into(),
        stages: stages3(),
        agents: vec![
            ExitFractions {
                agent: "threshold".into(),
                fractions: vec![0.52, 0.31, 0.17],
            },
            ExitFractions {
                agent: "REINFORCE (joint)".into(),
                fractions: vec![0.61, 0.27, 0.12],
            },
        ],
    }
}

fn accuracies() -> AccuracyDistributionPlot {
    AccuracyDistributionPlot {
        title: "Fashion-MNIST: accuracy per exit stage".into(),
        stages: stages3(),
        agents: vec![
            ExitAccuracies {
                agent: "threshold".into(),
                accuracies: vec![Some(0.962), Some(0.851), Some(0.744)],
            },
            ExitAccuracies {
                agent: "oracle".into(),
                accuracies: vec![Some(1.0), None, None],
            },
        ],
    }
}

fn heat() -> ExitsPerClassPlot {
    ExitsPerClassPlot {
        title: "Fashion-MNIST, REINFORCE (joint): exits per class".into(),
        classes: ["T-shirt/top", "Trouser", "Pullover"]
            .map(String::from)
            .to_vec(),
        stages: stages3(),
        fractions: vec![
            vec![0.48, 0.33, 0.19],
            vec![0.91, 0.07, 0.02],
            vec![0.35, 0.38, 0.27],
        ],
    }
}

fn curves(panels: usize) -> TrainingCurvesPlot {
    let metrics = [
        "charts/mean_reward",
        "losses/policy_loss",
        "charts/mean_cost",
        "val/error",
        "charts/sps",
    ];
    let mut t = TrainingCurvesPlot::new("Fashion-MNIST: REINFORCE training");
    t.panels = metrics[..panels]
        .iter()
        .enumerate()
        .map(|(m, name)| MetricPanel {
            metric: name.to_string(),
            unit: (m == 3).then(|| "%".to_string()),
            series: ["seed 0", "seed 1"]
                .iter()
                .enumerate()
                .map(|(s, run)| MetricSeries {
                    run: run.to_string(),
                    points: (1..=12)
                        .map(|e| (e as f64, -0.3 + 0.01 * (e * (s + 1) + m) as f64))
                        .collect(),
                    group: None,
                })
                .collect(),
        })
        .collect();
    t
}

// ---------------------------------------------------------------- figures

#[test]
fn pareto_log_axis_writes_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "pareto");
    let p = pareto();
    assert!(p.log_cost, "log cost axis is the default");
    let files = p.write(&s).unwrap();
    let texts = check_files(
        &files,
        &s,
        (1000, 700),
        &[
            &p.title,
            "threshold",
            "REINFORCE (joint)",
            "oracle",
            "single stage",
            "stage 1 linear",
            "stage 3 CNN-l",
            "test error (%)",
            "mean cost (% of largest stage's FLOPs, log scale)",
        ],
    );
    // 1-2-5 ticks on the log axis.
    for tick in ["1", "10", "100"] {
        assert!(
            texts.iter().any(|t| t == tick),
            "no tick {tick} in {texts:?}"
        );
    }
    assert_only(dir.path(), &["pareto.png", "pareto.svg"]);
}

#[test]
fn pareto_linear_axis_accepts_zero_cost() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pareto();
    p.log_cost = false;
    p.stages.push(StagePoint {
        label: "no compute".into(),
        cost: 0.0,
        error: 90.0,
    });
    let s = stem(&dir, "linear");
    let files = p.write(&s).unwrap();
    check_files(
        &files,
        &s,
        (1000, 700),
        &["mean cost (% of largest stage's FLOPs)", "no compute"],
    );
}

#[test]
fn pareto_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "bad");

    let mut p = pareto();
    p.curves[1].points[0].error = f64::NAN;
    match p.write(&s) {
        Err(Error::NonFinite {
            figure: "pareto",
            what,
            ..
        }) => {
            assert!(
                what.contains("REINFORCE (joint)") && what.contains("point 0 error"),
                "{what}"
            )
        }
        other => panic!("{other:?}"),
    }

    let mut p = pareto();
    p.curves[0].points.clear();
    assert!(matches!(p.write(&s), Err(Error::Empty { what, .. }) if what.contains("threshold")));

    let mut p = pareto();
    p.stages[0].cost = 0.0;
    assert!(
        matches!(p.write(&s), Err(Error::OutOfRange { what, .. }) if what.contains("stage 1 linear"))
    );

    let mut p = pareto();
    p.curves[0].points[0].error_spread = Some(-1.0);
    assert!(matches!(p.write(&s), Err(Error::OutOfRange { .. })));

    let mut p = pareto();
    p.curves[0].points[0].error = 140.0;
    assert!(matches!(p.write(&s), Err(Error::OutOfRange { .. })));

    let mut p = pareto();
    p.curves[1].name = "threshold".into();
    assert!(matches!(p.write(&s), Err(Error::Invalid { .. })));

    let empty = ParetoPlot::new("nothing");
    assert!(matches!(empty.write(&s), Err(Error::Empty { .. })));

    let mut p = pareto();
    p.title = "  ".into();
    assert!(matches!(p.write(&s), Err(Error::Empty { what, .. }) if what == "title"));

    assert_only(dir.path(), &[]);
}

#[test]
fn sample_distribution_writes_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "samples");
    let p = samples();
    let files = p.write(&s).unwrap();
    let texts = check_files(
        &files,
        &s,
        (1000, 700),
        &[
            &p.title,
            "threshold",
            "REINFORCE (joint)",
            "stage 2 CNN-s",
            "test samples stopping at stage (%)",
        ],
    );
    // Bar values are printed on the bars, in %.
    assert!(texts.iter().any(|t| t == "61.0"), "{texts:?}");

    let mut bad = samples();
    bad.agents[0].fractions.pop();
    assert!(matches!(
        bad.write(&s),
        Err(Error::LengthMismatch {
            got: 2,
            expected: 3,
            ..
        })
    ));
    let mut bad = samples();
    bad.agents[0].fractions = vec![0.5, 0.3, 0.1];
    assert!(
        matches!(bad.write(&s), Err(Error::Invalid { message, .. }) if message.contains("sum to"))
    );
    let mut bad = samples();
    bad.agents[0].fractions = vec![1.2, -0.1, -0.1];
    assert!(matches!(bad.write(&s), Err(Error::OutOfRange { .. })));
    let mut bad = samples();
    bad.agents.clear();
    assert!(matches!(bad.write(&s), Err(Error::Empty { .. })));
}

#[test]
fn accuracy_distribution_marks_missing_stages_na() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "accuracy");
    let p = accuracies();
    let files = p.write(&s).unwrap();
    let texts = check_files(
        &files,
        &s,
        (1000, 700),
        &[&p.title, "threshold", "oracle", "stage 3 CNN-l"],
    );
    assert_eq!(texts.iter().filter(|t| *t == "n/a").count(), 2);
    assert!(texts.iter().any(|t| t == "96.2"));

    let mut bad = accuracies();
    bad.agents[1].accuracies[0] = Some(f64::INFINITY);
    assert!(matches!(bad.write(&s), Err(Error::NonFinite { .. })));
    let mut bad = accuracies();
    bad.agents[1].accuracies.push(None);
    assert!(matches!(
        bad.write(&s),
        Err(Error::LengthMismatch {
            got: 4,
            expected: 3,
            ..
        })
    ));
}

#[test]
fn exits_per_class_heat_map_writes_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "heat");
    let p = heat();
    let files = p.write(&s).unwrap();
    check_files(
        &files,
        &s,
        (1000, 700),
        &[
            &p.title,
            "T-shirt/top",
            "Pullover",
            "stage 1 linear",
            "91.0%",
            "fraction of class",
            "100%",
        ],
    );

    let mut bad = heat();
    bad.fractions.pop();
    assert!(matches!(
        bad.write(&s),
        Err(Error::LengthMismatch {
            got: 2,
            expected: 3,
            ..
        })
    ));
    let mut bad = heat();
    bad.fractions[1] = vec![0.5, 0.5];
    assert!(
        matches!(bad.write(&s), Err(Error::LengthMismatch { what, .. }) if what.contains("Trouser"))
    );
    let mut bad = heat();
    bad.fractions[2][1] = f64::NAN;
    assert!(matches!(bad.write(&s), Err(Error::NonFinite { .. })));
    let mut bad = heat();
    bad.fractions[0] = vec![0.2, 0.2, 0.2];
    assert!(matches!(bad.write(&s), Err(Error::Invalid { .. })));
}

#[test]
fn many_classes_make_a_taller_heat_map() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "heat100");
    let classes: Vec<String> = (0..100).map(|i| format!("class {i}")).collect();
    let p = ExitsPerClassPlot {
        title: "CIFAR-100: exits per class".into(),
        fractions: vec![vec![0.5, 0.25, 0.25]; 100],
        classes,
        stages: stages3(),
    };
    let files = p.write(&s).unwrap();
    assert_eq!(png_size(&files.png), (1000, 100 * 24 + 250));
}

#[test]
fn training_curves_single_and_small_multiples() {
    let dir = tempfile::tempdir().unwrap();
    let one = curves(1);
    let s1 = stem(&dir, "one");
    let files = one.write(&s1).unwrap();
    check_files(
        &files,
        &s1,
        (1000, 700),
        &[
            &one.title,
            "seed 0",
            "seed 1",
            "charts/mean_reward",
            "epoch",
        ],
    );

    let four = curves(4);
    let s4 = stem(&dir, "four");
    let files = four.write(&s4).unwrap();
    // 2 x 2 panels of 420 px, title and one legend row.
    check_files(
        &files,
        &s4,
        (1100, 150 + 26 + 2 * 420),
        &[
            "losses/policy_loss",
            "charts/mean_cost",
            "val/error (%)",
            "seed 1",
        ],
    );

    let five = curves(5);
    let files = five.write(stem(&dir, "five")).unwrap();
    assert_eq!(png_size(&files.png), (1500, 150 + 26 + 2 * 420));
}

#[test]
fn training_curves_give_a_group_one_colour_and_its_runs_markers() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = curves(1);
    let series = &mut t.panels[0].series;
    let mut third = series[1].clone();
    third.run = "other".into();
    series.push(third);
    let colours = |t: &TrainingCurvesPlot, name: &str| {
        let files = t.write(stem(&dir, name)).unwrap();
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        let mut c: Vec<String> = svg
            .lines()
            .filter(|l| l.contains("<polyline") && l.contains("stroke-width=\"2\""))
            .filter_map(|l| {
                l.split("stroke=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(String::from)
            })
            .collect();
        c.sort();
        c.dedup();
        c
    };
    // Ungrouped: a colour a run (the legend's lines and the panel's).
    assert_eq!(colours(&t, "ungrouped").len(), 3);
    // Two seeds of one agent and another run: two colours.
    for s in &mut t.panels[0].series[..2] {
        s.group = Some("agent".into());
    }
    assert_eq!(colours(&t, "grouped").len(), 2);
}

#[test]
fn training_curves_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "bad");
    let mut bad = curves(2);
    bad.panels[1].series[0].points[3].1 = f64::NAN;
    assert!(
        matches!(bad.write(&s), Err(Error::NonFinite { what, .. }) if what.contains("losses/policy_loss"))
    );
    let mut bad = curves(2);
    bad.panels[0].series[1].points.swap(2, 3);
    assert!(
        matches!(bad.write(&s), Err(Error::Invalid { message, .. }) if message.contains("epochs must increase"))
    );
    let mut bad = curves(2);
    bad.panels[0].series[1].points.clear();
    assert!(matches!(bad.write(&s), Err(Error::Empty { .. })));
    let mut bad = curves(1);
    bad.panels.clear();
    assert!(matches!(bad.write(&s), Err(Error::Empty { .. })));
    assert_only(dir.path(), &[]);
}

// ---------------------------------------------------------------- image grid

fn grid_data() -> (Vec<f32>, Vec<usize>, Vec<String>) {
    // 5 grey 4x3 images, classes 0,1,0,1,0, pixel value = (i*12 + p) / 255.
    let n = 5;
    let px: Vec<f32> = (0..n * 12).map(|v| v as f32 / 255.0).collect();
    (
        px,
        vec![0, 1, 0, 1, 0],
        vec!["Sandal".to_string(), "Bag".to_string(), "Coat".to_string()],
    )
}

#[test]
fn image_grid_captions_add_a_line_per_row_and_reach_the_svg() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "gallery");
    let (px, labels, names) = grid_data();
    let captions: Vec<String> = (0..5).map(|i| format!("pred {i}")).collect();
    let flagged = [false, true, false, false, true];
    let grid = ImageGridPlot {
        title: "exit gallery",
        images: &px,
        shape: [5, 1, 4, 3],
        labels: &labels,
        class_names: &names,
        per_class: 2,
        scale: 3,
        captions: &captions,
        flagged: &flagged,
    };
    let files = grid.write(&s).unwrap();
    let (_, h) = png_size(&files.png);
    // As without captions, plus a 20 px caption line under each of 3 rows.
    assert_eq!(h, 62 + 3 * (12 + 20) + 2 * 6 + 24);
    let svg = std::fs::read_to_string(&files.svg).unwrap();
    assert!(svg.contains("pred 1"), "{svg}");
    let bad = ImageGridPlot {
        captions: &captions[..4],
        ..grid
    };
    assert!(bad.write(dir.path().join("bad")).is_err());
}

#[test]
fn image_grid_writes_rows_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "preview");
    let (px, labels, names) = grid_data();
    let grid = ImageGridPlot {
        title: "Fashion-MNIST (train): 2 images per class",
        images: &px,
        shape: [5, 1, 4, 3],
        labels: &labels,
        class_names: &names,
        per_class: 2,
        scale: 3,
        captions: &[],
        flagged: &[],
    };
    let files = grid.write(&s).unwrap();
    let (w, h) = png_size(&files.png);
    // 3 rows of 12 px tiles with 6 px gaps, under a 62 px title band.
    assert_eq!(h, 62 + 3 * 12 + 2 * 6 + 24);
    let (texts, elements) = check_svg(
        &files.svg,
        (w, h),
        &[grid.title, "Sandal", "Bag", "Coat", "(no images)"],
    );
    assert_eq!(texts.iter().filter(|t| *t == "(no images)").count(), 1);
    // Two images for class 0, two for class 1 (the fifth is not shown).
    let images: Vec<&String> = elements
        .iter()
        .filter(|(n, _)| n == "image")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(images.len(), 4);
    assert!(images
        .iter()
        .all(|a| a.contains("width=\"9\"") && a.contains("height=\"12\"")));
}

#[test]
fn image_grid_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "bad");
    let (px, labels, names) = grid_data();
    let ok = ImageGridPlot {
        title: "preview",
        images: &px,
        shape: [5, 1, 4, 3],
        labels: &labels,
        class_names: &names,
        per_class: 2,
        scale: 3,
        captions: &[],
        flagged: &[],
    };
    let short = &px[..px.len() - 1];
    assert!(matches!(
        ImageGridPlot {
            images: short,
            ..ok
        }
        .write(&s),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        ImageGridPlot { shape: [5, 2, 2, 3], ..ok }.write(&s),
        Err(Error::Invalid { message, .. }) if message.contains("channels")
    ));
    let bad_labels = [0, 1, 0, 1, 7];
    assert!(matches!(
        ImageGridPlot { labels: &bad_labels, ..ok }.write(&s),
        Err(Error::Invalid { message, .. }) if message.contains("label 7")
    ));
    assert!(matches!(
        ImageGridPlot {
            labels: &labels[..4],
            ..ok
        }
        .write(&s),
        Err(Error::LengthMismatch { .. })
    ));
    let mut nan = px.clone();
    nan[13] = f32::NAN;
    assert!(matches!(
        ImageGridPlot { images: &nan, ..ok }.write(&s),
        Err(Error::NonFinite { .. })
    ));
    let mut normalised = px.clone();
    normalised[0] = -0.42;
    assert!(matches!(
        ImageGridPlot {
            images: &normalised,
            ..ok
        }
        .write(&s),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        ImageGridPlot { scale: 0, ..ok }.write(&s),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        ImageGridPlot { per_class: 0, ..ok }.write(&s),
        Err(Error::Invalid { .. })
    ));
    assert_only(dir.path(), &[]);
}

// ---------------------------------------------------------------- output

#[test]
fn overwrites_atomically_and_reports_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = stem(&dir, "fig.v1");
    samples().write(&s).unwrap();
    let first = std::fs::read(dir.path().join("fig.v1.png")).unwrap();
    let mut other = samples();
    other.agents[0].fractions = vec![0.1, 0.1, 0.8];
    other.write(&s).unwrap();
    let second = std::fs::read(dir.path().join("fig.v1.png")).unwrap();
    assert_ne!(first, second);
    assert_only(dir.path(), &["fig.v1.png", "fig.v1.svg"]);

    let missing = dir.path().join("no/such/dir/fig");
    assert!(
        matches!(samples().write(&missing), Err(Error::Io { path, .. }) if path.ends_with("fig.svg"))
    );
}

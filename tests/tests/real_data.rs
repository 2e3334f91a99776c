//! The loaders against real Fashion-MNIST, data no one here wrote: the best
//! check of a loader. CI installs Debian's `dataset-fashion-mnist`; set
//! `CASCADE_SKIP_REAL_DATA=1` to skip on a machine without it.

use cascade_rl::data::{find_data_dir, DatasetKind, SplitConfig, Splits};

fn skip() -> bool {
    if std::env::var_os("CASCADE_SKIP_REAL_DATA").is_some() {
        eprintln!("CASCADE_SKIP_REAL_DATA set: skipping the real Fashion-MNIST checks");
        return true;
    }
    false
}

#[test]
fn fashion_mnist_has_its_true_counts() {
    if skip() {
        return;
    }
    let dir = find_data_dir(DatasetKind::FashionMnist, None)
        .expect("Fashion-MNIST not found: apt-get install dataset-fashion-mnist");
    let (train, test) =
        cascade_rl::data::load_raw("fashion-mnist", Some(&dir), &SplitConfig::default()).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.shape, [1, 28, 28]);
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert_eq!(train.class_names[9], "Ankle boot");
    // First training label of Fashion-MNIST is 9 (ankle boot), then 0, 0, 3.
    assert_eq!(train.labels[..4], [9, 0, 0, 3]);
    let mean = train.images.iter().map(|&v| v as f64).sum::<f64>() / train.images.len() as f64;
    assert!((mean - 0.2860).abs() < 1e-3, "pixel mean {mean}");

    let s = Splits::load("fashion-mnist", Some(&dir), &SplitConfig::default()).unwrap();
    assert_eq!(
        (s.train.len(), s.val.len(), s.test.len()),
        (54_000, 6_000, 10_000)
    );
    assert!((s.normalization.mean[0] - 0.286).abs() < 2e-3);
    assert!((s.normalization.std[0] - 0.353).abs() < 2e-3);
}

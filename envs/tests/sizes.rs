//! Sizes beyond memory are refused with the size and the limit before
//! anything is allocated, not ended in the allocator.

use cascade_env::{ReplayBackend, SyntheticTraceConfig};

#[test]
fn a_synthetic_trace_beyond_memory_is_refused() {
    let base = SyntheticTraceConfig::default();
    for (cfg, want) in [
        (
            SyntheticTraceConfig {
                num_samples: 100_000_000_000,
                ..base.clone()
            },
            "100000000000 samples",
        ),
        (
            SyntheticTraceConfig {
                num_classes: 1_000_000_000,
                ..base.clone()
            },
            "1000000000 classes",
        ),
        (
            SyntheticTraceConfig {
                num_samples: usize::MAX / 2,
                num_classes: usize::MAX / 2,
                ..base.clone()
            },
            "overflows",
        ),
        (
            SyntheticTraceConfig {
                feature_dims: vec![2, usize::MAX / 4, 2],
                ..base.clone()
            },
            "stage 2 features",
        ),
    ] {
        let err = ReplayBackend::synthetic(&cfg).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
        assert!(err.contains("the limit of"), "{err}");
    }
    // A size that fits still works.
    assert!(ReplayBackend::synthetic(&base).is_ok());
}

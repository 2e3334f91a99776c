//! Thread-pool settings for the toolkit's programs.
//!
//! Two pools of worker threads can compute in one process: rayon's global
//! pool, which runs the custom CPU kernels of [`crate::ops`] (convolutions,
//! batch norm, GEMMs; `RAYON_NUM_THREADS` sizes it), and candle's own
//! barrier pool, which runs candle's elementwise CPU ops (`CANDLE_NUM_THREADS`
//! sizes it, by default as many threads as rayon's). Their workers spin
//! before they sleep, so with both sized to the cores every hand-over from a
//! kernel to a candle op finds the other pool's threads still spinning on
//! the same cores: the candle op's caller then spins at its barrier waiting
//! for a worker that has no core. In a ResNet training step the only large
//! candle ops left are the gradient sums autograd makes where a tensor feeds
//! two layers (the residual blocks' inputs); the spinning around them cost
//! more than the sums themselves (`cascade bench --epoch --model resnet-8`,
//! 2 cores: 18% of the epoch with other load on the machine).
//!
//! [`single_candle_thread`] keeps candle's elementwise ops on the calling
//! thread. Call it at the start of `main`, before any candle op runs.

/// Sets `CANDLE_NUM_THREADS=1` unless it is already set, so candle's
/// elementwise CPU ops run on the calling thread and rayon's pool is the one
/// pool that computes (see the module docs). Returns whether it set it.
pub fn single_candle_thread() -> bool {
    if std::env::var_os("CANDLE_NUM_THREADS").is_some() {
        return false;
    }
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    true
}

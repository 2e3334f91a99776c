//! A record of the convolutions and linear layers a forward pass actually
//! runs, with the multiply-accumulates of each (test builds only): the
//! yardstick the analytic counts of [`crate::flops`] are checked against.

use std::cell::RefCell;

use candle_core::Tensor;

/// One convolution or linear layer as it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TracedOp {
    /// `"conv"` or `"linear"`.
    pub kind: &'static str,
    /// Output shape per image: `[c, h, w]` or `[d]`.
    pub output: Vec<usize>,
    /// Multiply-accumulates per image.
    pub macs: u64,
}

thread_local! {
    static TRACE: RefCell<Option<Vec<TracedOp>>> = const { RefCell::new(None) };
}

fn push(op: TracedOp) {
    TRACE.with(|t| {
        if let Some(ops) = t.borrow_mut().as_mut() {
            ops.push(op);
        }
    });
}

/// Records a convolution of `x: [b, c_in, h, w]` with `w: [c_out, c_in, k, k]`.
pub(crate) fn conv(x: &Tensor, w: &Tensor, stride: usize, padding: usize) {
    let (Ok((_, c_in, h, wd)), Ok((c_out, _, kh, kw))) = (x.dims4(), w.dims4()) else {
        return;
    };
    let ho = (h + 2 * padding - kh) / stride + 1;
    let wo = (wd + 2 * padding - kw) / stride + 1;
    push(TracedOp {
        kind: "conv",
        output: vec![c_out, ho, wo],
        macs: (c_out * ho * wo * c_in * kh * kw) as u64,
    });
}

/// Records a linear layer on `x: [b, .., d_in]` with `w: [d_out, d_in]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor) {
    let Ok((d_out, d_in)) = w.dims2() else {
        return;
    };
    let dims = x.dims();
    let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
    let per_image = rows / dims.first().copied().unwrap_or(1).max(1);
    push(TracedOp {
        kind: "linear",
        output: vec![d_out],
        macs: (per_image * d_in * d_out) as u64,
    });
}

/// Runs `f` and returns its result with the convolutions and linear layers
/// it ran on this thread, in order.
pub(crate) fn traced<T>(f: impl FnOnce() -> T) -> (T, Vec<TracedOp>) {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let out = f();
    let ops = TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (out, ops)
}

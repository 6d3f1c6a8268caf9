//! The 8-bit activation formats a row of `x` is quantized to once per matmul, before the
//! per-row dot products (llama.cpp `quantize_row_q8_0/q8_1/q8_K`, `ggml-quants.c`). The
//! layouts are this module's own (never stored or exchanged), so the scales stay f32 where
//! llama.cpp rounds them to f16.

use super::QK_K;

/// Elements per block of the 32-element formats.
pub const QK8: usize = 32;
/// Largest magnitude of a quantized value: symmetric, so -128 is never produced and the
/// sign trick of the signed x signed products (`_mm_sign_epi8`) cannot overflow.
const Q8_MAX: f32 = 127.0;

/// 32 activations: `x[i] ~= d * qs[i]`; `s = d * sum(qs)` for formats with a per-block
/// minimum (Q4_1), whose dot product needs it (llama.cpp `block_q8_1`).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub struct BlockQ8 {
    pub qs: [i8; QK8],
    pub d: f32,
    pub s: f32,
}

/// 256 activations for the k-quants (llama.cpp `block_q8_K`): `bsums` are the sums of each
/// 16 quantized values, which the k-quants' per-sub-block minimums and offsets multiply.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
pub struct BlockQ8K {
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
    pub d: f32,
}

impl Default for BlockQ8 {
    fn default() -> Self {
        Self { qs: [0; QK8], d: 0.0, s: 0.0 }
    }
}

impl Default for BlockQ8K {
    fn default() -> Self {
        Self { qs: [0; QK_K], bsums: [0; QK_K / 16], d: 0.0 }
    }
}

/// An activation block format: how many values a block holds and how a row is quantized.
/// Each weight format names the one its dot product reads, and inherits both from it.
pub trait Activation: Clone + Default + Send + Sync {
    /// Values per block (equal to the weight format's block size).
    const ELEMS: usize;
    /// Quantizes one row (a multiple of `ELEMS` long) into `out`.
    fn quantize(xs: &[f32], out: &mut [Self]);
}

impl Activation for BlockQ8 {
    const ELEMS: usize = QK8;
    fn quantize(xs: &[f32], out: &mut [Self]) {
        quantize_q8(xs, out)
    }
}

impl Activation for BlockQ8K {
    const ELEMS: usize = QK_K;
    fn quantize(xs: &[f32], out: &mut [Self]) {
        quantize_q8k(xs, out)
    }
}

/// Scale and its inverse for a block whose largest magnitude is `amax`.
fn scales(xs: &[f32]) -> (f32, f32) {
    let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = amax / Q8_MAX;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// Quantizes `xs` (a multiple of [`QK8`] long) into `out`, one block per 32 values.
pub fn quantize_q8(xs: &[f32], out: &mut [BlockQ8]) {
    for (x, b) in xs.chunks_exact(QK8).zip(out) {
        let (d, id) = scales(x);
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

/// Quantizes `xs` (a multiple of [`QK_K`] long) into `out`, one block per 256 values.
pub fn quantize_q8k(xs: &[f32], out: &mut [BlockQ8K]) {
    for (x, b) in xs.chunks_exact(QK_K).zip(out) {
        let (d, id) = scales(x);
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        b.d = d;
    }
}

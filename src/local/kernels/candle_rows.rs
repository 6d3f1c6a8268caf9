//! candle's own row dot products for the k-quants, run on this module's pool.
//!
//! On CPUs with AVX2, candle 0.11.1's `vec_dot` for Q4_K and Q6_K is 256-bit code (llama.cpp's
//! `__AVX2__` branch), faster than this module's 128-bit kernels; but candle runs its matmuls
//! on its own worker pool, whose idle worker spins for 25,000 iterations after each job. In a
//! forward pass that alternates with this module's kernels (Gemma 3 270M: Q5_0 projections,
//! Q4_K/Q6_K output and down projections), that worker spins through most of the next layer
//! on the core this module's worker needs. Calling candle's per-row `vec_dot` from this
//! module's pool keeps candle's arithmetic and leaves one pool per process.

use std::marker::PhantomData;

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K, BlockQ8K, GgmlType};

use super::{q8, Format, QK_K};

/// candle's Q8_K activation block; `repr(transparent)` so a slice of these is a slice of
/// candle's blocks.
#[derive(Clone)]
#[repr(transparent)]
pub struct CandleQ8K(BlockQ8K);

impl Default for CandleQ8K {
    fn default() -> Self {
        Self(BlockQ8K::zeros())
    }
}

impl q8::Activation for CandleQ8K {
    const ELEMS: usize = QK_K;
    fn quantize(xs: &[f32], out: &mut [Self]) {
        // SAFETY: `CandleQ8K` is a transparent wrapper of `BlockQ8K`.
        let blocks = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<BlockQ8K>(), out.len()) };
        BlockQ8K::from_float(xs, blocks);
    }
}

/// The weight format `T` (a candle k-quant block type) with candle's row dot product.
pub struct CandleRows<T>(PhantomData<T>);

/// candle's block types that are plain `repr(C)` data, so GGUF bytes may be read as them.
pub trait PlainBlock: GgmlType<VecDotType = BlockQ8K> {}
impl PlainBlock for BlockQ4K {}
impl PlainBlock for BlockQ6K {}

impl<T: PlainBlock> Format for CandleRows<T> {
    const BLOCK_BYTES: usize = std::mem::size_of::<T>();
    type Act = CandleQ8K;

    /// # Safety
    /// `w` must be aligned for `T` ([`aligned_for`] checked the weight's start; rows are
    /// whole blocks).
    unsafe fn dot(w: &[u8], a: &[CandleQ8K]) -> f32 {
        // One comparison per row: cheap insurance for the cast below.
        assert!(aligned_for::<T>(w), "quantized weight row not aligned for candle's block type");
        // SAFETY: `w` holds `w.len() / size_of::<T>()` blocks of candle's layout (the GGUF
        // bytes candle itself reads as `T`), aligned as the caller guarantees.
        let blocks = unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<T>(), w.len() / Self::BLOCK_BYTES) };
        // SAFETY: as in `quantize`.
        let acts = unsafe { std::slice::from_raw_parts(a.as_ptr().cast::<BlockQ8K>(), a.len()) };
        T::vec_dot(blocks.len() * T::BLCK_SIZE, blocks, acts)
    }
}

/// Whether `w` starts where a `T` may.
pub fn aligned_for<T>(w: &[u8]) -> bool {
    w.as_ptr().align_offset(std::mem::align_of::<T>()) == 0
}

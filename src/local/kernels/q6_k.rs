//! Q6_K weights x Q8_K activations. Follows llama.cpp `ggml_vec_dot_q6_K_q8_K`
//! (`ggml-cpu/arch/x86/quants.c`, the `__AVX__` branch, at the llama.cpp vendored by
//! llama-cpp-python 0.3.36), in 128-bit registers.
//!
//! Block (210 bytes, 256 elements): `ql: [u8; 128]` (low 4 bits), `qh: [u8; 64]` (high 2
//! bits), `scales: [i8; 16]` (one per 16 elements), `d: f16`; `w = d * scale * (q - 32)`.
//! The `- 32` is applied once per block through the activation sums (`bsums`).

use std::arch::x86_64::*;

use super::q8::BlockQ8K;
use super::simd::{f16_at, hsum, load, load_i8};
use super::{Format, QK_K};

pub struct Q6K;

const BYTES: usize = 210;
const QH_AT: usize = 128;
const SCALES_AT: usize = 192;
const D_AT: usize = 208;

/// `_mm_shuffle_epi8` masks that spread scale bytes (2i, 2i + 1) over 8 bytes each
/// (llama.cpp `get_scale_shuffle`).
const SCALE_SHUFFLE: [[u8; 16]; 8] = {
    let mut t = [[0u8; 16]; 8];
    let mut i = 0;
    while i < 8 {
        let mut j = 0;
        while j < 16 {
            t[i][j] = (2 * i + j / 8) as u8;
            j += 1;
        }
        i += 1;
    }
    t
};

impl Format for Q6K {
    const BLOCK_BYTES: usize = BYTES;
    type Act = BlockQ8K;

    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn dot(w: &[u8], a: &[BlockQ8K]) -> f32 {
        let m3 = _mm_set1_epi8(3);
        let m15 = _mm_set1_epi8(15);
        let mut acc = _mm_setzero_ps();
        for (b, y) in w.chunks_exact(BYTES).zip(a) {
            let d = y.d * f16_at(b, D_AT);
            let scales = load(b, SCALES_AT);
            // SAFETY: `bsums` is 16 i16 = two 16-byte loads; unaligned loads.
            let (s0, s1) =
                unsafe { (_mm_loadu_si128(y.bsums.as_ptr().cast()), _mm_loadu_si128(y.bsums.as_ptr().add(8).cast())) };
            // 32 * sum(scale * bsum): the `- 32` offset of every element.
            let sub_0 = _mm_slli_epi32(_mm_madd_epi16(s0, _mm_cvtepi8_epi16(scales)), 5);
            let sub_1 = _mm_slli_epi32(_mm_madd_epi16(s1, _mm_cvtepi8_epi16(_mm_srli_si128(scales, 8))), 5);

            let mut sumi = _mm_setzero_si128();
            for j in 0..QK_K / 128 {
                let hb0 = load(b, QH_AT + 32 * j);
                let hb1 = load(b, QH_AT + 32 * j + 16);
                let h = [
                    _mm_slli_epi16(_mm_and_si128(hb0, m3), 4),
                    _mm_slli_epi16(_mm_and_si128(hb1, m3), 4),
                    _mm_slli_epi16(_mm_and_si128(hb0, _mm_set1_epi8(12)), 2),
                    _mm_slli_epi16(_mm_and_si128(hb1, _mm_set1_epi8(12)), 2),
                    _mm_and_si128(hb0, _mm_set1_epi8(48)),
                    _mm_and_si128(hb1, _mm_set1_epi8(48)),
                    _mm_srli_epi16(_mm_and_si128(hb0, _mm_set1_epi8(-64)), 2),
                    _mm_srli_epi16(_mm_and_si128(hb1, _mm_set1_epi8(-64)), 2),
                ];
                let l = [load(b, 64 * j), load(b, 64 * j + 16), load(b, 64 * j + 32), load(b, 64 * j + 48)];
                let lows = [
                    _mm_and_si128(l[0], m15),
                    _mm_and_si128(l[1], m15),
                    _mm_and_si128(l[2], m15),
                    _mm_and_si128(l[3], m15),
                    _mm_and_si128(_mm_srli_epi16(l[0], 4), m15),
                    _mm_and_si128(_mm_srli_epi16(l[1], 4), m15),
                    _mm_and_si128(_mm_srli_epi16(l[2], 4), m15),
                    _mm_and_si128(_mm_srli_epi16(l[3], 4), m15),
                ];
                for k in 0..4 {
                    let shuffle = load(&SCALE_SHUFFLE[4 * j + k], 0);
                    let sc = _mm_shuffle_epi8(scales, shuffle);
                    let (sc0, sc1) = (_mm_cvtepi8_epi16(sc), _mm_cvtepi8_epi16(_mm_srli_si128(sc, 8)));
                    let q8 = 128 * j + 32 * k;
                    let p0 = _mm_maddubs_epi16(_mm_or_si128(lows[2 * k], h[2 * k]), load_i8(&y.qs, q8));
                    let p1 = _mm_maddubs_epi16(_mm_or_si128(lows[2 * k + 1], h[2 * k + 1]), load_i8(&y.qs, q8 + 16));
                    sumi = _mm_add_epi32(sumi, _mm_add_epi32(_mm_madd_epi16(sc0, p0), _mm_madd_epi16(sc1, p1)));
                }
            }
            let sumi = _mm_sub_epi32(sumi, _mm_add_epi32(sub_0, sub_1));
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(sumi)));
        }
        hsum(acc)
    }
}

//! Q4_K weights x Q8_K activations. Follows llama.cpp `ggml_vec_dot_q4_K_q8_K`
//! (`ggml-cpu/arch/x86/quants.c`, the `__AVX__` branch, at the llama.cpp vendored by
//! llama-cpp-python 0.3.36), in 128-bit registers.
//!
//! Block (144 bytes, 256 elements): `d: f16`, `dmin: f16`, `scales: [u8; 12]` (eight 6-bit
//! scales and eight 6-bit minimums, packed), `qs: [u8; 128]`. Each 64 elements take 32
//! bytes: the low nibbles are elements 0..32 (sub-block `2j`), the high nibbles 32..64
//! (sub-block `2j + 1`); `w = d * scale[s] * q - dmin * min[s]`.

use std::arch::x86_64::*;

use super::q8::BlockQ8K;
use super::simd::{f16_at, hsum, load, load_i8};
use super::{Format, QK_K};

pub struct Q4K;

const BYTES: usize = 144;
const SCALES_AT: usize = 4;
const QS_AT: usize = 16;
const KMASK1: u32 = 0x3f3f3f3f;
const KMASK2: u32 = 0x0f0f0f0f;
const KMASK3: u32 = 0x03030303;

/// The eight scales (bytes 0..8) and eight minimums (bytes 8..16) as bytes
/// (llama.cpp's `utmp` shuffle of the packed 6-bit values).
fn unpack_scales(b: &[u8]) -> [u32; 4] {
    let word = |i: usize| {
        let at = SCALES_AT + 4 * i;
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    };
    let (u0, u1, u2) = (word(0), word(1), word(2));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

impl Format for Q4K {
    const BLOCK_BYTES: usize = BYTES;
    type Act = BlockQ8K;

    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn dot(w: &[u8], a: &[BlockQ8K]) -> f32 {
        let m4 = _mm_set1_epi8(0xF);
        let m2 = _mm_set1_epi8(2);
        let mut acc = _mm_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (b, y) in w.chunks_exact(BYTES).zip(a) {
            let d = y.d * f16_at(b, 0);
            let dmin = -y.d * f16_at(b, 2);
            let u = unpack_scales(b);
            let utmps = _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32);
            let scales = _mm_cvtepu8_epi16(utmps);
            let mins = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(utmps, utmps));

            // The minimums times the sums of each 32 activations (two 16-sums each).
            let bs = &y.bsums;
            // SAFETY: `bsums` is 16 i16 = two 16-byte loads; unaligned loads.
            let (s0, s1) = unsafe { (_mm_loadu_si128(bs.as_ptr().cast()), _mm_loadu_si128(bs.as_ptr().add(8).cast())) };
            let prod = _mm_madd_epi16(mins, _mm_hadd_epi16(s0, s1));
            acc_m = _mm_add_ps(acc_m, _mm_mul_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod)));

            let mut sumi_0 = _mm_setzero_si128();
            let mut sumi_1 = _mm_setzero_si128();
            // Broadcasts i16 lane `s` of `scales`: bytes (2s, 2s + 1) everywhere.
            let mut shuffle = _mm_set1_epi16(0x0100);
            for j in 0..QK_K / 64 {
                let scale_l = _mm_shuffle_epi8(scales, shuffle);
                shuffle = _mm_add_epi16(shuffle, m2);
                let scale_h = _mm_shuffle_epi8(scales, shuffle);
                shuffle = _mm_add_epi16(shuffle, m2);

                let q0 = load(b, QS_AT + 32 * j);
                let q1 = load(b, QS_AT + 32 * j + 16);
                let q8 = 64 * j;
                let l0 = _mm_maddubs_epi16(_mm_and_si128(q0, m4), load_i8(&y.qs, q8));
                let l1 = _mm_maddubs_epi16(_mm_and_si128(q1, m4), load_i8(&y.qs, q8 + 16));
                let h0 = _mm_maddubs_epi16(_mm_and_si128(_mm_srli_epi16(q0, 4), m4), load_i8(&y.qs, q8 + 32));
                let h1 = _mm_maddubs_epi16(_mm_and_si128(_mm_srli_epi16(q1, 4), m4), load_i8(&y.qs, q8 + 48));
                sumi_0 = _mm_add_epi32(sumi_0, _mm_madd_epi16(scale_l, l0));
                sumi_1 = _mm_add_epi32(sumi_1, _mm_madd_epi16(scale_l, l1));
                sumi_0 = _mm_add_epi32(sumi_0, _mm_madd_epi16(scale_h, h0));
                sumi_1 = _mm_add_epi32(sumi_1, _mm_madd_epi16(scale_h, h1));
            }
            let sumi = _mm_add_epi32(sumi_0, sumi_1);
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(d), _mm_cvtepi32_ps(sumi)));
        }
        hsum(acc) + hsum(acc_m)
    }
}

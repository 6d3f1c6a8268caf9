//! The project's own CPU kernels for quantized matrix products, and the one worker pool every
//! quantized product of a local expert runs on.
//!
//! candle-core 0.11.1's quantized CPU kernels use SIMD only when the CPU has AVX2 and FMA,
//! and have no x86 SIMD at all for Q4_1 and Q5_0; on a CPU with AVX but no AVX2 they run
//! scalar code, at about half llama.cpp's decode speed. These follow llama.cpp's x86 paths
//! (`ggml-cpu/arch/x86/quants.c`; each file pins the function): the activation row is
//! quantized once (Q8_0, Q8_1 or Q8_K, as the weight format pairs with), then each output is
//! one integer dot product per weight row, `maddubs`/`madd` doing the multiply-adds. Every
//! format has the `__AVX__`/`__SSSE3__` branch (128-bit); Q4_1, Q5_0 and Q8_0 also have the
//! `__AVX2__` branch (256-bit), chosen at run time on CPUs with AVX2 and FMA. On such CPUs
//! the k-quants (Q4_K, Q6_K) use candle's own 256-bit row code ([`candle_rows`]).
//!
//! Output rows are split over [`pool::Pool`], which is built not to collapse when the cores
//! are shared. Every quantized product of a forward pass runs on it, also where candle has
//! fast code of its own: candle's matmuls run on candle's pool, whose idle worker spins for
//! 25,000 iterations after each job, so alternating between the two pools left that worker
//! spinning on the core this pool's worker needed (Gemma 3 on two threads: 15 % of all
//! samples).
//!
//! Used for CPU tensors of the formats below when the CPU has SSSE3 and SSE4.1 (runtime
//! detection); candle's kernels remain for every other case (other formats, other
//! architectures, CUDA).

#![expect(unsafe_code, reason = "SIMD intrinsics and the pool's scoped job pointer; each use says why it is sound")]

#[cfg(target_arch = "x86_64")]
mod candle_rows;
mod pool;
mod q8;

#[cfg(target_arch = "x86_64")]
mod q4_1;
#[cfg(target_arch = "x86_64")]
mod q4_k;
#[cfg(target_arch = "x86_64")]
mod q5_0;
#[cfg(target_arch = "x86_64")]
mod q6_k;
#[cfg(target_arch = "x86_64")]
mod q8_0;
#[cfg(target_arch = "x86_64")]
mod simd;

#[cfg(test)]
mod tests;

#[cfg(target_arch = "x86_64")]
use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Result, Storage, Tensor};
#[cfg(target_arch = "x86_64")]
use candle_rows::{aligned_for, CandleRows};

/// Elements per block of the k-quants and of Q8_K.
pub const QK_K: usize = 256;
/// Multiply-adds one chunk of pool work should hold at least: a few microseconds, so the
/// claim (one atomic add) and the cache misses of a chunk boundary stay negligible.
const MIN_CHUNK_MACS: usize = 64 * 1024;
/// Chunks per thread a job is cut into at most: enough that a thread that loses its core
/// mid-job leaves only a small share for the others to pick up.
const CHUNKS_PER_THREAD: usize = 8;
/// Multiply-adds below which a product runs on the calling thread alone: waking a worker
/// costs more than it saves.
const MIN_PARALLEL_MACS: usize = 128 * 1024;

/// Which kernels run, read once per process: unset (or `auto`) picks per format as
/// described in the module docs; `candle` runs candle's everywhere; `own` runs this module's
/// kernels for every format, the 128-bit k-quant ones also where candle has 256-bit code
/// (the 32-element formats take their 256-bit branches on AVX2 CPUs either way). The switch
/// `bench/local` compares them with.
pub const KERNELS_ENV: &str = "TRIAGE_QUANT_KERNELS";

/// A row dot product: one weight row (`a.len()` blocks of raw GGUF bytes) with one quantized
/// activation row.
type Dot<A> = unsafe fn(&[u8], &[A]) -> f32;

/// A weight block format with its activation format and row dot product.
trait Format {
    const BLOCK_BYTES: usize;
    /// The activation blocks the dot product reads; their size is the weight block size.
    type Act: q8::Activation;
    /// Weight elements per block.
    const BLOCK_ELEMS: usize = <Self::Act as q8::Activation>::ELEMS;
    /// Dot product of one weight row (`a.len()` blocks of raw GGUF bytes) with one
    /// quantized activation row.
    ///
    /// # Safety
    /// The CPU must have the features [`Kernel::for_dtype`] checks.
    unsafe fn dot(w: &[u8], a: &[Self::Act]) -> f32;
    /// The same product in 256-bit registers, where the format has it.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    const DOT_AVX2: Option<Dot<Self::Act>> = None;
}

/// The formats with a kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl Kernel {
    /// The kernel for `dtype` on this CPU, if there is one and [`KERNELS_ENV`] allows it.
    fn for_dtype(dtype: GgmlDType) -> Option<Self> {
        let features = cpu_features();
        if !features.ssse3_sse41 || features.choice == Choice::Candle {
            return None;
        }
        Self::of(dtype)
    }

    /// Whether this module has the 256-bit branch for the format (the k-quants have only the
    /// 128-bit one; on AVX2 CPUs candle's 256-bit row code runs them, on this pool).
    fn has_avx2(self) -> bool {
        matches!(self, Kernel::Q4_1 | Kernel::Q5_0 | Kernel::Q8_0)
    }

    /// The kernel for `dtype`, whatever the CPU.
    fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_1 => Kernel::Q4_1,
            GgmlDType::Q5_0 => Kernel::Q5_0,
            GgmlDType::Q8_0 => Kernel::Q8_0,
            GgmlDType::Q4K => Kernel::Q4K,
            GgmlDType::Q6K => Kernel::Q6K,
            _ => return None,
        })
    }
}

/// What [`KERNELS_ENV`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Auto,
    Candle,
    Own,
}

#[derive(Debug, Clone, Copy)]
struct CpuFeatures {
    choice: Choice,
    ssse3_sse41: bool,
    avx2_fma: bool,
}

fn cpu_features() -> CpuFeatures {
    static FEATURES: std::sync::OnceLock<CpuFeatures> = std::sync::OnceLock::new();
    *FEATURES.get_or_init(|| {
        let choice = match std::env::var(KERNELS_ENV).as_deref() {
            Ok("candle") => Choice::Candle,
            Ok("own") => Choice::Own,
            _ => Choice::Auto,
        };
        #[cfg(target_arch = "x86_64")]
        {
            CpuFeatures {
                choice,
                ssse3_sse41: is_x86_feature_detected!("ssse3") && is_x86_feature_detected!("sse4.1"),
                avx2_fma: is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures { choice, ssse3_sse41: false, avx2_fma: false }
        }
    })
}

/// `xs W^T` with this module's kernels when `w` is a quantized CPU weight they cover;
/// `None` when candle's own path should run instead.
pub fn forward(w: &QMatMul, xs: &Tensor) -> Result<Option<Tensor>> {
    let QMatMul::QTensor(q) = w else { return Ok(None) };
    if !xs.device().is_cpu() || xs.dtype() != DType::F32 {
        return Ok(None);
    }
    let Some(kernel) = Kernel::for_dtype(q.dtype()) else { return Ok(None) };
    let features = cpu_features();
    // With AVX2: the 256-bit branch of the 32-element formats, and candle's row code for the
    // k-quants unless `own` asks for this module's (candle's checks the CPU at run time too).
    let wide = features.avx2_fma && (kernel.has_avx2() || features.choice == Choice::Auto);
    matmul(kernel, q, xs, wide).map(Some)
}

/// `xs W^T` with `kernel`. `avx2` (only where the CPU has AVX2 and FMA): the 256-bit branch
/// for the formats that have one here, candle's row code for the k-quants.
fn matmul(kernel: Kernel, q: &QTensor, xs: &Tensor, avx2: bool) -> Result<Tensor> {
    let (n, k) = q.shape().dims2()?;
    let dims = xs.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("quantized matmul: input {:?} does not end in the weight's {k} columns", xs.shape());
    }
    let m = xs.elem_count() / k;
    let xs = xs.contiguous()?;
    // On the CPU this borrows the blocks in place: no copy, nothing more to account for.
    let w = q.data()?;
    let (storage, layout) = xs.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("quantized matmul: input is not on the CPU") };
    let start = layout.start_offset();
    let x = &cpu.as_slice::<f32>()?[start..start + m * k];
    let out = match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Q4_1 => run::<q4_1::Q4_1>(&w, n, k, x, m, avx2)?,
        #[cfg(target_arch = "x86_64")]
        Kernel::Q5_0 => run::<q5_0::Q5_0>(&w, n, k, x, m, avx2)?,
        #[cfg(target_arch = "x86_64")]
        Kernel::Q8_0 => run::<q8_0::Q8_0>(&w, n, k, x, m, avx2)?,
        #[cfg(target_arch = "x86_64")]
        Kernel::Q4K if avx2 && aligned_for::<BlockQ4K>(&w) => run::<CandleRows<BlockQ4K>>(&w, n, k, x, m, true)?,
        #[cfg(target_arch = "x86_64")]
        Kernel::Q4K => run::<q4_k::Q4K>(&w, n, k, x, m, false)?,
        #[cfg(target_arch = "x86_64")]
        Kernel::Q6K if avx2 && aligned_for::<BlockQ6K>(&w) => run::<CandleRows<BlockQ6K>>(&w, n, k, x, m, true)?,
        #[cfg(target_arch = "x86_64")]
        Kernel::Q6K => run::<q6_k::Q6K>(&w, n, k, x, m, false)?,
        #[cfg(not(target_arch = "x86_64"))]
        _ => candle_core::bail!("quantized matmul: no {kernel:?} kernel on this architecture"),
    };
    drop(storage);
    let mut shape = dims.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    Tensor::from_vec(out, shape, &candle_core::Device::Cpu)
}

/// Where the pool's chunks write their outputs: each (row, column) of the result belongs to
/// exactly one chunk.
struct Out(*mut f32);
// SAFETY: chunks write disjoint elements (see `run`), and the buffer outlives the pool job.
unsafe impl Sync for Out {}

/// `x (m x k) . W^T` for `W` (`n` rows of `k / F::BLOCK_ELEMS` blocks in `w`), row-major
/// (m x n).
#[cfg_attr(not(target_arch = "x86_64"), expect(dead_code, reason = "only x86-64 has kernels"))]
fn run<F: Format>(w: &[u8], n: usize, k: usize, x: &[f32], m: usize, avx2: bool) -> Result<Vec<f32>> {
    let dot: Dot<F::Act> = match F::DOT_AVX2 {
        Some(wide) if avx2 => wide,
        _ => F::dot,
    };
    if k % F::BLOCK_ELEMS != 0 {
        candle_core::bail!("quantized matmul: {k} columns are not whole blocks of {}", F::BLOCK_ELEMS);
    }
    let kb = k / F::BLOCK_ELEMS;
    let row_bytes = kb * F::BLOCK_BYTES;
    if w.len() != n * row_bytes || x.len() != m * k {
        candle_core::bail!(
            "quantized matmul: {} weight bytes for {n} x {k}, {} inputs for {m} x {k}",
            w.len(),
            x.len()
        );
    }
    let mut acts = vec![F::Act::default(); m * kb];
    for (row, act) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
        <F::Act as q8::Activation>::quantize(row, act);
    }
    let mut out = vec![0f32; m * n];
    let pool = pool::pool();
    let macs = m * n * k;
    let threads = if macs < MIN_PARALLEL_MACS { 1 } else { pool.threads() };
    let rows_per_chunk = n.div_ceil(threads * CHUNKS_PER_THREAD).max(MIN_CHUNK_MACS.div_ceil(m * k)).min(n).max(1);
    let chunks = n.div_ceil(rows_per_chunk);
    let dst = Out(out.as_mut_ptr());
    let dst = &dst;
    let acts = &acts;
    let chunk = |c: usize| {
        let rows = c * rows_per_chunk..n.min((c + 1) * rows_per_chunk);
        for r in rows {
            let wr = &w[r * row_bytes..(r + 1) * row_bytes];
            prefetch(w, (r * row_bytes + PREFETCH_AHEAD).min(w.len()), row_bytes);
            for (i, a) in acts.chunks_exact(kb).enumerate() {
                // SAFETY: `Kernel::for_dtype` checked the CPU features `F::dot` needs, and
                // the caller passes `avx2` only where the CPU has AVX2 and FMA. `wr` is
                // whole blocks at a multiple of the block size from the weight's start,
                // which `matmul` checked is aligned for the formats that need it.
                let v = unsafe { dot(wr, a) };
                // SAFETY: `i * n + r < m * n`, and element (i, r) is written by this chunk
                // only (chunks partition the rows `r`).
                unsafe { *dst.0.add(i * n + r) = v };
            }
        }
    };
    let ok = if threads == 1 {
        (0..chunks).for_each(chunk);
        true
    } else {
        pool.run(chunks, &chunk)
    };
    if !ok {
        candle_core::bail!("quantized matmul: a worker thread panicked");
    }
    Ok(out)
}

/// How far ahead of the row being read the weights are prefetched. Decode streams every
/// weight once per token, and the hardware prefetcher alone left the kernels waiting on
/// those loads (a third of the Q4_1 kernel's samples sat on its two weight loads):
/// SmolLM2 on one thread decoded 32-33 tok/s without, 36-40 with 1, 2 or 4 KiB ahead
/// (2 KiB best, interleaved runs).
const PREFETCH_AHEAD: usize = 2048;

/// Asks the CPU to start loading `w[at..at + len]` into L1 (one request per 64 bytes).
#[inline]
fn prefetch(w: &[u8], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (at + len).min(w.len());
        let mut i = at;
        while i < end {
            // SAFETY: `i < w.len()`; a prefetch never faults and changes nothing observable.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(w.as_ptr().add(i).cast()) };
            i += 64;
        }
    }
}

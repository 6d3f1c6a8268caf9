//! Each kernel against candle's reference: the weight dequantized by candle, times the f32
//! input, in f32. The only approximation the kernels make is quantizing the activations to
//! 8 bits, so the bound is the worst case of that rounding (half a step per element), not a
//! loose percentage.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use super::{cpu_features, forward, matmul, Kernel, QK_K};

/// Shapes (m inputs, n outputs, k columns) with odd m and n, and k not a power of two.
const SHAPES: [(usize, usize, usize); 4] = [(1, 7, QK_K), (3, 33, 2 * QK_K), (5, 1, 3 * QK_K), (2, 257, 5 * QK_K)];
/// Every format the GGUFs this project ships use.
const FORMATS: [GgmlDType; 5] = [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K];

fn random(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Worst case of the activation rounding for output (i, r): every element off by half its
/// block's step (`amax / 127 / 2`), times the weight it multiplies.
fn bound(x: &[f32], w: &[f32], block: usize) -> f32 {
    x.chunks(block)
        .zip(w.chunks(block))
        .map(|(xb, wb)| {
            let step = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            wb.iter().map(|v| v.abs()).sum::<f32>() * step / 2.0
        })
        .sum()
}

#[test]
fn kernels_match_candle_dequantized_reference() -> candle_core::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let dev = Device::Cpu;
    for dtype in FORMATS {
        // Whatever `forward` would pick on this CPU: every kernel runs where SSSE3 does.
        let Some(kernel) = Kernel::of(dtype).filter(|_| cpu_features().ssse3_sse41) else {
            eprintln!("skipping {dtype:?}: no kernel on this CPU");
            continue;
        };
        for (m, n, k) in SHAPES {
            let w = Tensor::from_vec(random(&mut rng, n * k), (n, k), &dev)?;
            let q = QTensor::quantize(&w, dtype)?;
            let wd = q.dequantize(&dev)?;
            let x = Tensor::from_vec(random(&mut rng, m * k), (1, m, k), &dev)?;
            let reference = x.broadcast_matmul(&wd.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            // Both branches where the CPU has AVX2: the 128-bit one is what a CPU without it runs.
            let widths: &[bool] = if cpu_features().avx2_fma { &[false, true] } else { &[false] };
            for &avx2 in widths {
                let got = matmul(kernel, &q, &x, avx2)?;
                assert_eq!(got.dims(), &[1, m, n], "{dtype:?} output shape");
                let got = got.flatten_all()?.to_vec1::<f32>()?;
                let (xs, ws) = (x.flatten_all()?.to_vec1::<f32>()?, wd.flatten_all()?.to_vec1::<f32>()?);
                let block = if matches!(dtype, GgmlDType::Q4K | GgmlDType::Q6K) { QK_K } else { 32 };
                for i in 0..m {
                    for r in 0..n {
                        let (g, e) = (got[i * n + r], reference[i * n + r]);
                        // Plus f32 summation-order noise.
                        let tol = bound(&xs[i * k..(i + 1) * k], &ws[r * k..(r + 1) * k], block) * 1.001 + 1e-4;
                        assert!(
                            (g - e).abs() <= tol,
                            "{dtype:?} avx2={avx2} (m, n, k) = ({m}, {n}, {k}) output ({i}, {r}): kernel {g}, \
                             reference {e}, tolerance {tol}"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn formats_without_a_kernel_fall_back_to_candle() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let w = Tensor::zeros((4, 64), candle_core::DType::F32, &dev)?;
    let q = QMatMul::QTensor(std::sync::Arc::new(QTensor::quantize(&w, GgmlDType::Q4_0)?));
    let x = Tensor::zeros((1, 64), candle_core::DType::F32, &dev)?;
    assert!(forward(&q, &x)?.is_none(), "Q4_0 has no kernel here; candle must run it");
    assert!(forward(&QMatMul::Tensor(w), &x)?.is_none(), "float weights are candle's");
    Ok(())
}

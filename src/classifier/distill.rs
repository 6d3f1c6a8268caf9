//! Static token embeddings distilled from the backbone, in the manner of Model2Vec
//! (Tulkens & van Dongen, 2024): every vocabulary token is run alone through the
//! sentence encoder (`[CLS] token [SEP]`, mean pooled), the table is reduced with PCA,
//! and each row is weighted by the token's inverse document frequency in the training
//! split. A text's embedding is then the normalised sum of its tokens' rows: a lookup,
//! not a transformer, so stage 1 can use it at microsecond cost.

use candle_core::{DType, Device, Tensor};

use super::encoder::{Encoder, EncoderError};

/// Tokens per forward pass while distilling: 3 positions each, so a pass is ~1.5k
/// positions, big enough for efficient matmuls and small enough to stay in cache.
const DISTILL_BATCH: usize = 512;
/// Orthogonal-iteration steps for PCA: the 384x384 covariance converges to f32
/// precision long before this; a fixed count keeps training deterministic.
const PCA_ITERATIONS: usize = 200;

/// A distilled, PCA-reduced, IDF-weighted token table.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticEmbeddings {
    dims: usize,
    /// `[vocab * dims]`, row-major by token id.
    table: Vec<f32>,
}

impl StaticEmbeddings {
    /// Runs every token of `encoder`'s vocabulary (the untouched backbone) through it
    /// and reduces the resulting `[vocab, hidden]` table to `dims` principal components.
    /// With `limit > 0` only the first `limit` tokens are distilled and the rest get zero
    /// rows (quick tests). `progress` is called with the number of tokens done.
    pub fn distill(
        encoder: &Encoder,
        dims: usize,
        limit: usize,
        progress: &dyn Fn(usize),
    ) -> Result<Self, EncoderError> {
        let (cls, sep) = encoder.special_ids();
        let vocab = encoder.vocab_size();
        let distilled = if limit > 0 { limit.min(vocab) } else { vocab };
        let hidden = encoder.hidden_size();
        let dims = dims.min(hidden);
        let mut raw = Vec::with_capacity(distilled * hidden);
        let ids: Vec<u32> = (0..distilled as u32).collect();
        for chunk in ids.chunks(DISTILL_BATCH) {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| vec![cls, i, sep]).collect();
            raw.extend(encoder.embed_ids_candle(&seqs)?.flatten_all()?.to_vec1::<f32>()?);
            progress(chunk.len());
        }
        let mut table = pca(&raw, hidden, dims);
        table.resize(vocab * dims, 0.0);
        Ok(Self { dims, table })
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    fn vocab(&self) -> usize {
        self.table.len() / self.dims.max(1)
    }

    /// Multiplies each token's row by its smoothed IDF over `docs` (token ids of the
    /// training texts), so that frequent tokens ("the", "?") do not dominate the mean.
    pub fn weight_by_idf(&mut self, docs: &[Vec<u32>]) {
        let mut df = vec![0f64; self.vocab()];
        for doc in docs {
            let mut ids = doc.clone();
            ids.sort_unstable();
            ids.dedup();
            for i in ids {
                if let Some(d) = df.get_mut(i as usize) {
                    *d += 1.0;
                }
            }
        }
        let n = docs.len() as f64;
        for (row, d) in self.table.chunks_mut(self.dims).zip(df) {
            let idf = (((n + 1.0) / (d + 1.0)).ln() + 1.0) as f32;
            row.iter_mut().for_each(|x| *x *= idf);
        }
    }

    /// The unit-length sum of the rows of `ids` (zero for no known token).
    pub fn embed(&self, ids: &[u32]) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        for &i in ids {
            if let Some(row) = self.table.get(i as usize * self.dims..(i as usize + 1) * self.dims) {
                v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// The table as an f16 tensor `[vocab, dims]` (half the bytes; the features are
    /// normalised sums, far coarser than f16's precision).
    pub fn to_tensor(&self) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.table.clone(), (self.vocab(), self.dims), &Device::Cpu)?.to_dtype(DType::F16)
    }

    /// Reads a table written by [`StaticEmbeddings::to_tensor`].
    pub fn from_tensor(t: &Tensor) -> candle_core::Result<Self> {
        let (_, dims) = t.dims2()?;
        let table = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { dims, table })
    }
}

/// Projects the rows of `x` (`[n, h]`, row-major) on their top `k` principal
/// components, after centering. Orthogonal iteration on the covariance, started from
/// the identity, in f64: deterministic and exact enough for features.
fn pca(x: &[f32], h: usize, k: usize) -> Vec<f32> {
    let n = x.len() / h.max(1);
    let mut mean = vec![0f64; h];
    for row in x.chunks(h) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v));
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut cov = vec![0f64; h * h];
    let mut centered = vec![0f64; h];
    for row in x.chunks(h) {
        centered.iter_mut().zip(row.iter().zip(&mean)).for_each(|(c, (&v, m))| *c = f64::from(v) - m);
        for i in 0..h {
            let ci = centered[i];
            cov[i * h..(i + 1) * h].iter_mut().zip(&centered).for_each(|(a, &cj)| *a += ci * cj);
        }
    }
    // q: [h, k], columns orthonormal.
    let mut q = vec![0f64; h * k];
    for j in 0..k {
        q[j * k + j] = 1.0;
    }
    for _ in 0..PCA_ITERATIONS {
        let mut z = vec![0f64; h * k];
        for i in 0..h {
            for l in 0..h {
                let c = cov[i * h + l];
                z[i * k..(i + 1) * k].iter_mut().zip(&q[l * k..(l + 1) * k]).for_each(|(a, &b)| *a += c * b);
            }
        }
        // Modified Gram-Schmidt on the columns of z.
        for j in 0..k {
            for p in 0..j {
                let dot: f64 = (0..h).map(|i| z[i * k + j] * z[i * k + p]).sum();
                (0..h).for_each(|i| z[i * k + j] -= dot * z[i * k + p]);
            }
            let norm = (0..h).map(|i| z[i * k + j] * z[i * k + j]).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
            (0..h).for_each(|i| z[i * k + j] /= norm);
        }
        q = z;
    }
    let mut out = Vec::with_capacity(n * k);
    for row in x.chunks(h) {
        centered.iter_mut().zip(row.iter().zip(&mean)).for_each(|(c, (&v, m))| *c = f64::from(v) - m);
        for j in 0..k {
            out.push((0..h).map(|i| centered[i] * q[i * k + j]).sum::<f64>() as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_dominant_direction() {
        // Points spread along (1, 1, 0) with small noise on the other axes: one
        // component carries the variance, and projections keep the points' order.
        let x: Vec<f32> =
            (0..50).flat_map(|i| [i as f32, i as f32 + 0.01 * (i % 3) as f32, 0.02 * (i % 2) as f32]).collect();
        let p = pca(&x, 3, 1);
        let increasing = p.windows(2).all(|w| w[1] > w[0]);
        let decreasing = p.windows(2).all(|w| w[1] < w[0]);
        assert!(increasing || decreasing, "projection should be monotone along the data: {p:?}");
        let spread = (p[49] - p[0]).abs();
        assert!((spread - 49.0 * 2f32.sqrt()).abs() < 0.1, "projected spread {spread}");
    }
}

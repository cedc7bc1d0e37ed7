//! The agent's dense-retrieval kernel: unit vectors quantised to one signed
//! byte per dimension (with one scale per vector), and an exhaustive scan
//! that scores a query against every stored vector.
//!
//! Why a crate of its own: at 100k 384-dimensional vectors an `f32` scan
//! reads 154 MB per query and is limited by memory bandwidth (about 15 ms
//! on the development machine). Bytes read a quarter of that. The scan is a
//! plain loop that LLVM vectorises (widening multiply-add), but only at
//! `opt-level = 3`; the agent crate builds at opt-level 1 for fast rebuilds,
//! so the kernel lives here, where `Cargo.toml` raises its optimisation
//! level alone. The scores are approximate (about 1e-3 off a true cosine);
//! callers re-score their best candidates exactly.

#![forbid(unsafe_code)]

/// Quantise `v` symmetrically into `out` (appending `v.len()` bytes) and
/// return the scale: `v[i] ≈ out[i] as f32 * scale`. A zero vector gets
/// scale 0, and non-finite components count as zero.
pub fn quantize_into(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = v
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        out.extend(std::iter::repeat_n(0i8, v.len()));
        return 0.0;
    }
    let inv = 127.0 / max;
    out.extend(v.iter().map(|x| {
        if x.is_finite() {
            // In [-127, 127] by construction of `inv`.
            (x * inv).round().clamp(-127.0, 127.0) as i8
        } else {
            0
        }
    }));
    max / 127.0
}

/// Replace `out` with the little-endian `f32`s in `bytes` (a trailing
/// partial value is ignored): how stored vectors are read back, here so that
/// loading 100k of them runs at full optimisation.
pub fn decode_le_into(bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
}

/// The integer dot product of two code vectors of equal length.
#[inline]
pub fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// Approximate dot products of the query (`query` codes, `query_scale`)
/// with every stored vector: `codes` holds `scales.len()` rows of
/// `query.len()` bytes. Scores are appended to `out` in row order.
/// Rows beyond the shorter of `codes` and `scales` are ignored.
pub fn scan(codes: &[i8], scales: &[f32], query: &[i8], query_scale: f32, out: &mut Vec<f32>) {
    let dims = query.len();
    if dims == 0 {
        return;
    }
    out.reserve(scales.len());
    out.extend(
        codes
            .chunks_exact(dims)
            .zip(scales)
            .map(|(row, s)| dot(row, query) as f32 * s * query_scale),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        // A small deterministic generator: no dependency for tests.
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn quantised_scores_stay_within_a_thousandth_of_the_true_cosine() {
        let dims = 384;
        let rows: Vec<Vec<f32>> = (0..500).map(|i| unit(i, dims)).collect();
        let mut codes = Vec::new();
        let scales: Vec<f32> = rows.iter().map(|r| quantize_into(r, &mut codes)).collect();
        let q = unit(9999, dims);
        let mut qc = Vec::new();
        let qs = quantize_into(&q, &mut qc);
        let mut got = Vec::new();
        scan(&codes, &scales, &qc, qs, &mut got);
        assert_eq!(got.len(), rows.len());
        for (row, approx) in rows.iter().zip(&got) {
            let exact: f32 = row.iter().zip(&q).map(|(a, b)| a * b).sum();
            assert!((exact - approx).abs() < 1e-3, "{exact} vs {approx}");
        }
    }

    #[test]
    fn stored_bytes_decode_back_to_the_same_floats() {
        let v = [1.5f32, -0.25, 3.0e-8];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut out = vec![9.0];
        decode_le_into(&bytes[..bytes.len() - 1], &mut out);
        assert_eq!(out, &v[..2], "a partial value is dropped");
        decode_le_into(&bytes, &mut out);
        assert_eq!(out, v);
    }

    #[test]
    fn zero_and_non_finite_vectors_quantise_to_zero_instead_of_nan() {
        let mut codes = Vec::new();
        assert_eq!(quantize_into(&[0.0; 4], &mut codes), 0.0);
        let s = quantize_into(&[f32::NAN, 1.0, f32::INFINITY, -0.5], &mut codes);
        assert_eq!(&codes[4..], &[0, 127, 0, -64]);
        assert!((s - 1.0 / 127.0).abs() < 1e-9);
        let mut out = Vec::new();
        scan(&codes, &[0.0, s], &codes[4..], s, &mut out);
        assert_eq!(out[0], 0.0);
        assert!(out[1].is_finite() && out[1] > 0.0);
    }
}

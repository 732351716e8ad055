//! ggml's tensor encodings that cria writes and reads: f32, f16, bf16 (read only), and the
//! block formats q8_0 and q4_0. A block holds 32 consecutive values of a row and an f16 scale
//! `d`: q8_0 stores `round(x / d)` as 32 signed bytes with `d = max|x| / 127`; q4_0 stores
//! 4-bit codes `q` with `x ≈ (q - 8) d`, `d = m / -8` where `m` is the value of largest
//! magnitude (sign kept), low nibbles holding the block's first 16 values and high nibbles the
//! last 16. The arithmetic below is ggml's reference quantizer's, in the same f32 order, so the
//! bytes equal what llama.cpp's own `llama-quantize` writes (scripts/check_gguf.py checks it).

use half::{bf16, f16};

pub const QK: usize = 32;
/// Bytes of one q8_0 block: f16 scale + 32 × i8.
pub const Q8_0_BYTES: usize = 2 + QK;
/// Bytes of one q4_0 block: f16 scale + 16 bytes of nibbles.
pub const Q4_0_BYTES: usize = 2 + QK / 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q8_0,
    Bf16,
    /// Any other ggml type id (k-quants, i-quants…): listed, not decoded.
    Other(u32),
}

impl GgmlType {
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q8_0 => 8,
            GgmlType::Bf16 => 30,
            GgmlType::Other(i) => i,
        }
    }
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            i => GgmlType::Other(i),
        }
    }
    /// (values per block, bytes per block), for the types cria decodes.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((QK, Q4_0_BYTES)),
            GgmlType::Q8_0 => Some((QK, Q8_0_BYTES)),
            GgmlType::Other(_) => None,
        }
    }
    /// Bytes of `n` values, `None` when `n` is not a whole number of blocks or the type is
    /// unknown.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let (b, s) = self.block()?;
        n.is_multiple_of(b).then_some(n / b * s)
    }
    pub fn is_quantized(self) -> bool {
        matches!(self, GgmlType::Q4_0 | GgmlType::Q8_0)
    }
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "f32".into(),
            GgmlType::F16 => "f16".into(),
            GgmlType::Q4_0 => "q4_0".into(),
            GgmlType::Q8_0 => "q8_0".into(),
            GgmlType::Bf16 => "bf16".into(),
            GgmlType::Other(i) => format!("ggml type {i}"),
        }
    }
}

/// Quantizes `x` (a whole number of 32-value blocks) to q8_0.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK, 0, "q8_0 rows are whole blocks");
    let mut out = Vec::with_capacity(x.len() / QK * Q8_0_BYTES);
    for b in x.chunks_exact(QK) {
        let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

/// Quantizes `x` (a whole number of 32-value blocks) to q4_0.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK, 0, "q4_0 rows are whole blocks");
    let mut out = Vec::with_capacity(x.len() / QK * Q4_0_BYTES);
    for b in x.chunks_exact(QK) {
        // The value of largest magnitude, the first one on ties, sign kept.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        for j in 0..QK / 2 {
            let x0 = b[j] * id;
            let x1 = b[QK / 2 + j] * id;
            // C's (int8_t) conversion truncates toward zero, then MIN(15, ·).
            let q0 = ((x0 + 8.5) as i8).min(15) as u8;
            let q1 = ((x1 + 8.5) as i8).min(15) as u8;
            out.push(q0 | (q1 << 4));
        }
    }
    out
}

/// Encodes `x` in `ty` (f32, f16 or a block format).
pub fn encode(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => x
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::Bf16 => x
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => quantize_q8_0(x),
        GgmlType::Q4_0 => quantize_q4_0(x),
        GgmlType::Other(i) => panic!("cria does not encode ggml type {i}"),
    }
}

/// Decodes `n` values of `ty` from `bytes` into f32 (`None` for types cria does not read).
pub fn decode(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    Some(match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        GgmlType::F16 => bytes.chunks_exact(2).map(h).collect(),
        GgmlType::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => bytes
            .chunks_exact(Q8_0_BYTES)
            .flat_map(|b| {
                let d = h(b);
                b[2..].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        GgmlType::Q4_0 => bytes
            .chunks_exact(Q4_0_BYTES)
            .flat_map(|b| {
                let d = h(b);
                let qs = &b[2..];
                let lo = qs.iter().map(move |&q| ((q & 0xF) as i32 - 8) as f32 * d);
                let hi = qs.iter().map(move |&q| ((q >> 4) as i32 - 8) as f32 * d);
                lo.chain(hi).collect::<Vec<_>>()
            })
            .collect(),
        GgmlType::Other(_) => return None,
    })
}

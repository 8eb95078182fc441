//! Weight matrices times activations: our own int8 kernel (`linepilot-kernels`), or
//! candle's for the file's own types (`Requantize::Keep`).

use std::borrow::Cow;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use linepilot_kernels::Int8Matrix;

/// A weight matrix and how its products are computed.
pub(crate) enum Linear {
    /// Int8 blocks, our kernel.
    Int8(Int8Matrix),
    /// The file's own quantized type, candle's kernels.
    Candle(QMatMul),
}

impl Linear {
    /// `x` (…, in) times the transposed weight → (…, out).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Int8(m) => int8_forward(m, x),
            Linear::Candle(m) => m.forward(x),
        }
    }
}

/// Matrices applied to the same input (q, k and v; gate and up), computed as one
/// product when they are all int8: one quantization of the input and one fork-join
/// over the threads instead of three or two.
pub(crate) enum Fused {
    /// One stacked matrix and the number of rows of each part, in order.
    Stacked(Int8Matrix, Vec<usize>),
    /// Parts that cannot be stacked, run one by one.
    Separate(Vec<Linear>),
}

impl Fused {
    /// Stacks `parts` when they are all int8 with the same input width.
    pub(crate) fn new(parts: Vec<Linear>) -> Fused {
        let width = |p: &Linear| match p {
            Linear::Int8(m) => Some(m.cols()),
            Linear::Candle(_) => None,
        };
        let first = parts.first().and_then(width);
        if first.is_none() || parts.iter().any(|p| width(p) != first) {
            return Fused::Separate(parts);
        }
        let mut mats = parts.into_iter().filter_map(|p| match p {
            Linear::Int8(m) => Some(m),
            Linear::Candle(_) => None,
        });
        let Some(mut all) = mats.next() else { return Fused::Separate(Vec::new()) };
        let mut sizes = vec![all.rows()];
        for m in mats {
            sizes.push(m.rows());
            all.stack(&m);
        }
        Fused::Stacked(all, sizes)
    }

    /// Each part's product with `x`, in order (views of one result when stacked).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Fused::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
            Fused::Stacked(m, sizes) => {
                let y = int8_forward(m, x)?;
                let last = y.rank() - 1;
                let mut at = 0;
                sizes
                    .iter()
                    .map(|&n| {
                        let part = y.narrow(last, at, n);
                        at += n;
                        part
                    })
                    .collect()
            }
        }
    }
}

/// Converts a quantized (rows, cols) tensor to int8, 64 rows at a time so loading
/// never holds a whole matrix as f32 (Qwen2.5's embedding would be 545 MB).
/// `None` for shapes the kernel does not take (rows not a multiple of 4, cols of 32).
pub(crate) fn int8_from_qtensor(t: &QTensor) -> candle_core::Result<Option<Int8Matrix>> {
    const CHUNK: usize = 64;
    let (rows, cols) = match t.shape().dims() {
        [rows, cols] => (*rows, *cols),
        _ => return Ok(None),
    };
    let dtype = t.dtype();
    let Some(mut m) = Int8Matrix::new(rows, cols) else { return Ok(None) };
    if cols % dtype.block_size() != 0 {
        return Ok(None);
    }
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let data = t.data()?;
    for r0 in (0..rows).step_by(CHUNK) {
        let n = CHUNK.min(rows - r0);
        let bytes = &data[r0 * row_bytes..(r0 + n) * row_bytes];
        let storage = QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, dtype)?;
        let f = QTensor::new(storage, (n, cols))?.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        m.set_rows(r0, &f);
    }
    Ok(Some(m))
}

fn int8_forward(m: &Int8Matrix, x: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.last().copied() != Some(m.cols()) {
        return Err(candle_core::Error::ShapeMismatchBinaryOp {
            lhs: x.shape().clone(),
            rhs: (m.rows(), m.cols()).into(),
            op: "int8 matmul",
        });
    }
    let xs = x.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    let out = m.matmul(&xs);
    let mut shape = dims;
    if let Some(last) = shape.last_mut() {
        *last = m.rows();
    }
    Tensor::from_vec(out, shape, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Q8_0 tensor converted in chunks gives its dequantized values' products, and
    /// a fused pair splits back into its parts.
    #[test]
    fn conversion_from_candle_keeps_the_values() {
        let (rows, cols) = (132, 64);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, candle_core::quantized::GgmlDType::Q8_0).unwrap();
        let want = q.dequantize(&Device::Cpu).unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
        let x = Tensor::ones((1, cols), candle_core::DType::F32, &Device::Cpu).unwrap();
        let m = int8_from_qtensor(&q).unwrap().unwrap();
        let got = Linear::Int8(m).forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 0.05, "{g} vs {w}");
        }
        let two = || Linear::Int8(int8_from_qtensor(&q).unwrap().unwrap());
        let parts = Fused::new(vec![two(), two()]).forward(&x).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].dims(), &[1, rows]);
        let second = parts[1].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(second, got);
    }
}

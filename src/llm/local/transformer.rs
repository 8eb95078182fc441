//! The decoder-only transformer of llama-family GGUF files (llama, qwen2), on
//! candle's quantized matrix products.
//!
//! Our own forward pass rather than `candle-transformers`' models, for three reasons
//! the gateway needs: the key/value cache can be cut back to a common prefix (so a
//! repeated system prompt is not paid for again), weights can be re-quantized once at
//! load to a type with vectorised kernels, and the token embedding stays quantized
//! (Qwen2.5's would be 545 MB as f32).

use std::collections::HashMap;
use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, QMatMul, QTensor};

use super::linear::{int8_from_qtensor, Fused, Linear};
use candle_core::{DType, Device, Tensor};

use super::LocalError;

/// The architectures we run, from `general.architecture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// llama and llama-like files (SmolLM2): interleaved rotary embedding, no q/k/v bias.
    Llama,
    /// Qwen2 / Qwen2.5: NeoX-style rotary embedding, q/k/v bias.
    Qwen2,
}

impl Architecture {
    fn from_gguf(name: &str) -> Result<Architecture, LocalError> {
        match name {
            "llama" => Ok(Architecture::Llama),
            "qwen2" => Ok(Architecture::Qwen2),
            other => Err(LocalError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The name used in GGUF metadata keys.
    pub fn key(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }
}

/// Shape of the network, from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct Hyperparameters {
    /// Which family.
    pub architecture: Architecture,
    /// Layers.
    pub block_count: usize,
    /// Width of the residual stream.
    pub embedding_length: usize,
    /// Query heads.
    pub head_count: usize,
    /// Key/value heads (grouped-query attention when fewer than `head_count`).
    pub head_count_kv: usize,
    /// Context the model was trained for.
    pub context_length: usize,
    /// RMS-norm epsilon.
    pub rms_eps: f64,
    /// Rotary embedding base.
    pub rope_freq_base: f32,
}

impl Hyperparameters {
    fn head_dim(&self) -> usize {
        self.embedding_length / self.head_count
    }
}

fn md<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, LocalError> {
    ct.metadata.get(key).ok_or_else(|| LocalError::MissingMetadata(key.to_string()))
}

fn md_usize(ct: &gguf_file::Content, key: &str) -> Result<usize, LocalError> {
    let v = md(ct, key)?;
    v.to_u32()
        .map(|v| v as usize)
        .or_else(|_| v.to_u64().map(|v| v as usize))
        .map_err(|_| LocalError::BadMetadata { key: key.to_string(), expected: "an unsigned integer" })
}

fn md_f32(ct: &gguf_file::Content, key: &str) -> Result<f32, LocalError> {
    md(ct, key)?.to_f32().map_err(|_| LocalError::BadMetadata { key: key.to_string(), expected: "a float" })
}

impl Hyperparameters {
    /// Reads the hyperparameters of a GGUF file.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Hyperparameters, LocalError> {
        let arch_name = md(ct, "general.architecture")?
            .to_string()
            .map_err(|_| LocalError::BadMetadata { key: "general.architecture".into(), expected: "a string" })?;
        let architecture = Architecture::from_gguf(arch_name)?;
        let a = architecture.key();
        let hp = Hyperparameters {
            architecture,
            block_count: md_usize(ct, &format!("{a}.block_count"))?,
            embedding_length: md_usize(ct, &format!("{a}.embedding_length"))?,
            head_count: md_usize(ct, &format!("{a}.attention.head_count"))?,
            head_count_kv: md_usize(ct, &format!("{a}.attention.head_count_kv"))?,
            context_length: md_usize(ct, &format!("{a}.context_length"))?,
            rms_eps: f64::from(md_f32(ct, &format!("{a}.attention.layer_norm_rms_epsilon"))?),
            rope_freq_base: md_f32(ct, &format!("{a}.rope.freq_base")).unwrap_or(10_000.0),
        };
        if hp.head_count == 0
            || hp.head_count_kv == 0
            || !hp.embedding_length.is_multiple_of(hp.head_count)
            || !hp.head_count.is_multiple_of(hp.head_count_kv)
        {
            return Err(LocalError::BadMetadata {
                key: format!("{a}.attention.head_count"),
                expected: "head counts that divide the embedding length and each other",
            });
        }
        Ok(hp)
    }
}

/// What to do with the weights' quantization at load time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Requantize {
    /// Keep the file's types.
    Keep,
    /// Convert every weight matrix once to int8 blocks of 32 with an f32 scale (the
    /// Q8_0 scheme) for our own kernel (`linear.rs`): near-lossless for 4- and 5-bit
    /// sources, about twice their size, and several times faster than candle's kernels.
    #[default]
    Int8,
}

struct Loader<'a, R> {
    ct: &'a gguf_file::Content,
    reader: &'a mut R,
    device: Device,
    requantize: Requantize,
}

impl<R: Read + Seek> Loader<'_, R> {
    fn qtensor(&mut self, name: &str) -> Result<QTensor, LocalError> {
        self.ct
            .tensor(self.reader, name, &self.device)
            .map_err(|source| LocalError::Tensor { name: name.to_string(), source })
    }

    fn has(&self, name: &str) -> bool {
        self.ct.tensor_infos.contains_key(name)
    }

    /// A weight matrix: as int8 blocks for our kernel unless the file's types are to
    /// be kept, in which case candle's kernels run them.
    fn matmul(&mut self, name: &str) -> Result<Linear, LocalError> {
        let t = self.qtensor(name)?;
        let wrap = |source| LocalError::Tensor { name: name.to_string(), source };
        if self.requantize != Requantize::Keep {
            if let Some(m) = int8_from_qtensor(&t).map_err(wrap)? {
                return Ok(Linear::Int8(m));
            }
        }
        QMatMul::from_qtensor(t).map(Linear::Candle).map_err(wrap)
    }

    /// A vector (norm weight, bias) as f32.
    fn vector(&mut self, name: &str) -> Result<Tensor, LocalError> {
        let t = self.qtensor(name)?;
        t.dequantize(&self.device).map_err(|source| LocalError::Tensor { name: name.to_string(), source })
    }
}

struct Attention {
    /// q, k and v, one product.
    qkv: Fused,
    wo: Linear,
    bias: Option<(Tensor, Tensor, Tensor)>,
}

struct Block {
    attn_norm: Tensor,
    attn: Attention,
    ffn_norm: Tensor,
    /// gate and up, one product.
    gate_up: Fused,
    down: Linear,
}

/// Per-layer key/value cache: grown in chunks, written in place, cut back at will.
struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

const CACHE_CHUNK: usize = 256;

/// The network with its key/value cache.
pub struct Transformer {
    hp: Hyperparameters,
    embedding: QTensor,
    blocks: Vec<Block>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    cache: Vec<LayerCache>,
    /// Tokens whose keys and values are in the cache, in order.
    cached: Vec<u32>,
    device: Device,
}

fn wrap(e: candle_core::Error) -> LocalError {
    LocalError::Compute(e)
}

impl Transformer {
    /// Loads the weights of a GGUF file.
    pub fn load<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        requantize: Requantize,
    ) -> Result<Transformer, LocalError> {
        let hp = Hyperparameters::from_gguf(ct)?;
        let device = Device::Cpu;
        let mut l = Loader { ct, reader, device: device.clone(), requantize };
        let embedding = l.qtensor("token_embd.weight")?;
        let output = if l.has("output.weight") { l.matmul("output.weight")? } else { l.matmul("token_embd.weight")? };
        let norm = l.vector("output_norm.weight")?;
        let mut blocks = Vec::with_capacity(hp.block_count);
        for i in 0..hp.block_count {
            let p = format!("blk.{i}");
            let bias = if hp.architecture == Architecture::Qwen2 {
                Some((
                    l.vector(&format!("{p}.attn_q.bias"))?,
                    l.vector(&format!("{p}.attn_k.bias"))?,
                    l.vector(&format!("{p}.attn_v.bias"))?,
                ))
            } else {
                None
            };
            blocks.push(Block {
                attn_norm: l.vector(&format!("{p}.attn_norm.weight"))?,
                attn: Attention {
                    qkv: Fused::new(vec![
                        l.matmul(&format!("{p}.attn_q.weight"))?,
                        l.matmul(&format!("{p}.attn_k.weight"))?,
                        l.matmul(&format!("{p}.attn_v.weight"))?,
                    ]),
                    wo: l.matmul(&format!("{p}.attn_output.weight"))?,
                    bias,
                },
                ffn_norm: l.vector(&format!("{p}.ffn_norm.weight"))?,
                gate_up: Fused::new(vec![
                    l.matmul(&format!("{p}.ffn_gate.weight"))?,
                    l.matmul(&format!("{p}.ffn_up.weight"))?,
                ]),
                down: l.matmul(&format!("{p}.ffn_down.weight"))?,
            });
        }
        let (cos, sin) = rope_tables(hp.head_dim(), hp.rope_freq_base, hp.context_length, &device)?;
        let cache = (0..hp.block_count).map(|_| LayerCache { k: None, v: None }).collect();
        Ok(Transformer { hp, embedding, blocks, norm, output, cos, sin, cache, cached: Vec::new(), device })
    }

    /// The network's shape.
    pub fn hyperparameters(&self) -> &Hyperparameters {
        &self.hp
    }

    /// Tokens whose keys and values are cached.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Cuts the cache back to its first `len` tokens.
    pub fn truncate_cache(&mut self, len: usize) {
        self.cached.truncate(len);
    }

    /// Runs `tokens` after the cached ones and returns the logits of the last position.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LocalError> {
        let pos = self.cached.len();
        let seq = tokens.len();
        if seq == 0 {
            return Err(LocalError::EmptyPrompt);
        }
        if pos + seq > self.hp.context_length {
            return Err(LocalError::ContextFull { needed: pos + seq, context: self.hp.context_length });
        }
        let ids = Tensor::new(tokens, &self.device).map_err(wrap)?;
        let mut x = self.embedding.embedding(&ids).map_err(wrap)?.unsqueeze(0).map_err(wrap)?;
        let cos = self.cos.narrow(0, pos, seq).map_err(wrap)?;
        let sin = self.sin.narrow(0, pos, seq).map_err(wrap)?;
        let mask = if seq > 1 { Some(causal_mask(seq, pos, &self.device)?) } else { None };
        for (block, cache) in self.blocks.iter().zip(self.cache.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.hp.rms_eps as f32).map_err(wrap)?;
            let h = attention(&self.hp, &block.attn, cache, &h, pos, &cos, &sin, mask.as_ref())?;
            x = (x + h).map_err(wrap)?;
            let h = candle_nn::ops::rms_norm(&x, &block.ffn_norm, self.hp.rms_eps as f32).map_err(wrap)?;
            let [g, u]: [Tensor; 2] = parts(block.gate_up.forward(&h).map_err(wrap)?)?;
            let h = (candle_nn::ops::silu(&g).map_err(wrap)? * u).map_err(wrap)?;
            let h = block.down.forward(&h).map_err(wrap)?;
            x = (x + h).map_err(wrap)?;
        }
        self.cached.extend_from_slice(tokens);
        let last = x.narrow(1, seq - 1, 1).map_err(wrap)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.hp.rms_eps as f32).map_err(wrap)?;
        let logits = self.output.forward(&last).map_err(wrap)?;
        logits.flatten_all().map_err(wrap)?.to_dtype(DType::F32).map_err(wrap)?.to_vec1::<f32>().map_err(wrap)
    }
}

#[allow(clippy::too_many_arguments)]
fn attention(
    hp: &Hyperparameters,
    a: &Attention,
    cache: &mut LayerCache,
    x: &Tensor,
    pos: usize,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor, LocalError> {
    let (b, seq, width) = x.dims3().map_err(wrap)?;
    let hd = hp.head_dim();
    let (nh, nkv) = (hp.head_count, hp.head_count_kv);
    let [mut q, mut k, mut v]: [Tensor; 3] = parts(a.qkv.forward(x).map_err(wrap)?)?;
    if let Some((bq, bk, bv)) = &a.bias {
        q = q.broadcast_add(bq).map_err(wrap)?;
        k = k.broadcast_add(bk).map_err(wrap)?;
        v = v.broadcast_add(bv).map_err(wrap)?;
    }
    let heads = |t: Tensor, n: usize| -> Result<Tensor, LocalError> {
        t.reshape((b, seq, n, hd)).map_err(wrap)?.transpose(1, 2).map_err(wrap)?.contiguous().map_err(wrap)
    };
    let (q, k, v) = (heads(q, nh)?, heads(k, nkv)?, heads(v, nkv)?);
    let rope = |t: &Tensor| match hp.architecture {
        Architecture::Llama => candle_nn::rotary_emb::rope_i(t, cos, sin),
        Architecture::Qwen2 => candle_nn::rotary_emb::rope(t, cos, sin),
    };
    let q = rope(&q).map_err(wrap)?;
    let k = rope(&k).map_err(wrap)?;
    let (k, v) = cache.append(&k, &v, pos)?;
    // Grouped-query attention without copying keys: the query heads that share a
    // key/value head become extra rows of one matrix product.
    let group = nh / nkv;
    let q = q.reshape((b, nkv, group * seq, hd)).map_err(wrap)?;
    let att = (q.matmul(&k.t().map_err(wrap)?).map_err(wrap)? / (hd as f64).sqrt()).map_err(wrap)?;
    let att = match mask {
        None => att,
        Some(mask) => {
            let kv_len = pos + seq;
            let att = att.reshape((b, nkv, group, seq, kv_len)).map_err(wrap)?;
            att.broadcast_add(mask).map_err(wrap)?.reshape((b, nkv, group * seq, kv_len)).map_err(wrap)?
        }
    };
    let att = candle_nn::ops::softmax_last_dim(&att).map_err(wrap)?;
    let y = att.matmul(&v).map_err(wrap)?; // (b, nkv, group*seq, hd)
    let y = y
        .reshape((b, nh, seq, hd))
        .map_err(wrap)?
        .transpose(1, 2)
        .map_err(wrap)?
        .reshape((b, seq, width))
        .map_err(wrap)?;
    a.wo.forward(&y).map_err(wrap)
}

/// The parts of a fused product, as many as expected.
fn parts<const N: usize>(v: Vec<Tensor>) -> Result<[Tensor; N], LocalError> {
    let n = v.len();
    v.try_into()
        .map_err(|_| LocalError::Compute(candle_core::Error::Msg(format!("{n} parts of a fused product, not {N}"))))
}

impl LayerCache {
    /// Writes the new keys and values at `pos` and returns views of positions `0..pos+seq`.
    fn append(&mut self, k: &Tensor, v: &Tensor, pos: usize) -> Result<(Tensor, Tensor), LocalError> {
        let (b, nkv, seq, hd) = k.dims4().map_err(wrap)?;
        let need = pos + seq;
        let capacity = self.k.as_ref().map(|t| t.dims()[2]).unwrap_or(0);
        if need > capacity {
            let new_cap = need.div_ceil(CACHE_CHUNK) * CACHE_CHUNK;
            let grow = |old: &Option<Tensor>| -> Result<Tensor, LocalError> {
                let t = Tensor::zeros((b, nkv, new_cap, hd), k.dtype(), k.device()).map_err(wrap)?;
                if let Some(old) = old {
                    if pos > 0 {
                        t.slice_set(&old.narrow(2, 0, pos).map_err(wrap)?.contiguous().map_err(wrap)?, 2, 0)
                            .map_err(wrap)?;
                    }
                }
                Ok(t)
            };
            self.k = Some(grow(&self.k)?);
            self.v = Some(grow(&self.v)?);
        }
        let (kc, vc) = match (&self.k, &self.v) {
            (Some(kc), Some(vc)) => (kc, vc),
            _ => return Err(LocalError::EmptyPrompt),
        };
        kc.slice_set(k, 2, pos).map_err(wrap)?;
        vc.slice_set(v, 2, pos).map_err(wrap)?;
        Ok((kc.narrow(2, 0, need).map_err(wrap)?, vc.narrow(2, 0, need).map_err(wrap)?))
    }
}

/// An additive mask: 0 where a query may look, -inf where it may not; shape (seq, pos+seq).
fn causal_mask(seq: usize, pos: usize, device: &Device) -> Result<Tensor, LocalError> {
    let kv_len = pos + seq;
    let data: Vec<f32> =
        (0..seq).flat_map(|i| (0..kv_len).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(data, (seq, kv_len), device).map_err(wrap)
}

fn rope_tables(head_dim: usize, base: f32, context: usize, device: &Device) -> Result<(Tensor, Tensor), LocalError> {
    let inv: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / head_dim as f32)).collect();
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), device).map_err(wrap)?;
    let t = Tensor::arange(0u32, context as u32, device)
        .map_err(wrap)?
        .to_dtype(DType::F32)
        .map_err(wrap)?
        .reshape((context, 1))
        .map_err(wrap)?;
    let freqs = t.matmul(&inv).map_err(wrap)?;
    Ok((freqs.cos().map_err(wrap)?, freqs.sin().map_err(wrap)?))
}

/// The types of the weights, counted by number of tensors (for `model list` and logs).
pub fn weight_types(ct: &gguf_file::Content) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for info in ct.tensor_infos.values() {
        *m.entry(format!("{:?}", info.ggml_dtype)).or_insert(0) += 1;
    }
    m
}

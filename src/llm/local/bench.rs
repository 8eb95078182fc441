//! `linepilot model bench`: prompt and generation speed, time to first token with a
//! cached system prefix, and peak memory — the figures docs/BENCHMARKS.md compares with
//! llama.cpp on the same GGUF file in the same run (`benches/llm_vs_llamacpp.py`).

use std::time::Instant;

use serde::Serialize;

use super::{GenerateOptions, LocalError, LocalModel, Sampler, Sampling};
use crate::llm::ChatMessage;

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// Model name.
    pub model: String,
    /// Inference threads.
    pub threads: usize,
    /// Prompt tokens processed from an empty cache.
    pub prompt_tokens: usize,
    /// Prompt tokens per second.
    pub prompt_tps: f64,
    /// Tokens generated (greedy, stop tokens ignored).
    pub generated_tokens: usize,
    /// Generated tokens per second.
    pub generation_tps: f64,
    /// Tokens in the cached system prefix.
    pub prefix_tokens: usize,
    /// Time to the first answer token of a new question after that prefix, ms.
    pub ttft_cached_ms: f64,
    /// The same without the cache, ms.
    pub ttft_cold_ms: f64,
    /// Peak resident memory of the process, MB (VmHWM).
    pub peak_rss_mb: f64,
    /// Perplexity of the first 128 prompt tokens (each predicted from the ones before):
    /// what re-quantizing costs in accuracy, compared run against run.
    pub perplexity: f64,
}

/// Peak resident set of this process in MB, from /proc (Linux).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Measures `model` on `prompt` token ids, then `generate` greedy tokens, then the time
/// to first token after a system prefix of about `prefix_tokens` tokens.
pub fn run(
    model: &mut LocalModel,
    threads: usize,
    prompt: &[u32],
    generate: usize,
    prefix_tokens: usize,
) -> Result<BenchResult, LocalError> {
    // Warm-up (page in the weights, size the cache).
    model.clear_cache();
    model.prefill(&prompt[..prompt.len().min(16)])?;
    model.clear_cache();

    let t = Instant::now();
    let mut logits = model.prefill(prompt)?;
    let prompt_s = t.elapsed().as_secs_f64();
    let mut sampler = Sampler::new(Sampling::default());
    let t = Instant::now();
    for _ in 0..generate {
        let pick = sampler.pick(&logits, None).ok_or(LocalError::EmptyPrompt)?;
        logits = model.prefill_next(pick.token)?;
    }
    let gen_s = t.elapsed().as_secs_f64();

    // A system prompt of about `prefix_tokens` tokens, as an agent's would be.
    let sentence = "Line 1 fills and caps bottles; report numbers only from tool results, with units and times. ";
    let per = model.tokenizer().encode(sentence)?.len().max(1);
    let system = sentence.repeat(prefix_tokens.div_ceil(per));
    let ask = |q: &str| vec![ChatMessage::system(system.clone()), ChatMessage::user(q.to_string())];
    let opts = GenerateOptions { max_tokens: 1, ..GenerateOptions::default() };
    model.clear_cache();
    let t = Instant::now();
    model.generate(&ask("What is the state of the filler?"), &opts, &mut |_| true)?;
    let ttft_cold_ms = t.elapsed().as_secs_f64() * 1e3;
    let prefix = model.last_stats().prompt_tokens;
    let t = Instant::now();
    model.generate(&ask("Why did the capper stop at 10:40?"), &opts, &mut |_| true)?;
    let ttft_cached_ms = t.elapsed().as_secs_f64() * 1e3;

    // Accuracy: perplexity of the prompt, token by token.
    let n = prompt.len().min(128);
    model.clear_cache();
    let mut logits = model.prefill(&prompt[..1])?;
    let mut nll = 0.0f64;
    for &t in &prompt[1..n] {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_z = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
        nll -= f64::from(logits[t as usize] - log_z);
        logits = model.prefill_next(t)?;
    }
    let perplexity = (nll / (n.max(2) - 1) as f64).exp();

    Ok(BenchResult {
        model: model.name().to_string(),
        threads,
        prompt_tokens: prompt.len(),
        prompt_tps: prompt.len() as f64 / prompt_s,
        generated_tokens: generate,
        generation_tps: generate as f64 / gen_s,
        prefix_tokens: prefix,
        ttft_cached_ms,
        ttft_cold_ms,
        peak_rss_mb: peak_rss_mb(),
        perplexity,
    })
}

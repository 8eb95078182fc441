//! The local model: a quantized GGUF file run with candle on the gateway's own CPU.
//!
//! - `transformer`: the llama / qwen2 forward pass with a prefix-reusing key/value cache;
//! - `tokenizer`: the tokenizer from the GGUF metadata, the chat template, stop tokens;
//! - `sampler`: greedy or seeded temperature/top-p sampling, with a token mask;
//! - `registry`: the models we know, how `linepilot model pull` fetches and checks them;
//! - `worker`: one generation at a time on a dedicated thread, behind a queue.

pub mod bench;
mod linear;
pub mod registry;
pub mod sampler;
pub mod tokenizer;
pub mod transformer;
pub mod worker;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;

use crate::llm::{ChatMessage, Completion, Confidence, FinishReason, Usage};
pub use registry::{ModelSpec, MODELS};
pub use sampler::{Pick, Sampler, Sampling};
pub use tokenizer::{GgufTokenizer, TextStream};
pub use transformer::{Architecture, Requantize, Transformer};
pub use worker::{LocalWorker, WorkerStatus};

/// Errors of the local model.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The model file is not there.
    #[error("model `{name}` is not in {dir}; run `linepilot model pull {name}`")]
    NotPulled {
        /// Model name.
        name: String,
        /// Directory searched.
        dir: PathBuf,
    },
    /// A model name nobody knows.
    #[error("unknown model `{0}` (known: smollm2-135m, qwen2.5-0.5b)")]
    UnknownModel(String),
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid GGUF.
    #[error("{path} is not a readable GGUF file: {source}")]
    Gguf {
        /// File.
        path: PathBuf,
        /// Cause.
        source: candle_core::Error,
    },
    /// An architecture we do not run.
    #[error("unsupported model architecture `{0}` (supported: llama, qwen2)")]
    UnsupportedArchitecture(String),
    /// A metadata key is missing.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingMetadata(String),
    /// A metadata key has the wrong type or value.
    #[error("GGUF metadata key `{key}` is not {expected}")]
    BadMetadata {
        /// Key.
        key: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A tensor could not be loaded.
    #[error("tensor `{name}`: {source}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// Cause.
        source: candle_core::Error,
    },
    /// The tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A computation failed.
    #[error("inference: {0}")]
    Compute(#[from] candle_core::Error),
    /// Nothing to run.
    #[error("empty prompt")]
    EmptyPrompt,
    /// The prompt does not fit.
    #[error("prompt needs {needed} tokens, the model's context is {context}")]
    ContextFull {
        /// Tokens needed.
        needed: usize,
        /// Context length.
        context: usize,
    },
    /// The JSON schema cannot be enforced.
    #[error("constraint: {0}")]
    Constraint(String),
    /// The worker thread is gone.
    #[error("the local model worker has stopped")]
    WorkerGone,
    /// Pulling a model failed.
    #[error("model pull: {0}")]
    Pull(String),
    /// A thread pool could not be built.
    #[error("thread pool: {0}")]
    Threads(String),
}

/// Reads only the tokenizer of a GGUF file (no weights).
pub fn tokenizer_from_file(path: &Path) -> Result<GgufTokenizer, LocalError> {
    let file = File::open(path).map_err(|source| LocalError::Io { path: path.to_path_buf(), source })?;
    let mut reader = BufReader::new(file);
    let ct = gguf_file::Content::read(&mut reader)
        .map_err(|source| LocalError::Gguf { path: path.to_path_buf(), source })?;
    GgufTokenizer::from_gguf(&ct)
}

/// What one generation may do.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Token limit of the answer.
    pub max_tokens: usize,
    /// How tokens are picked.
    pub sampling: Sampling,
    /// A JSON schema the answer must match (enforced by masking, see `constraint`).
    pub json_schema: Option<serde_json::Value>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, sampling: Sampling::default(), json_schema: None }
    }
}

/// Timings of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens in all.
    pub prompt_tokens: usize,
    /// Of those, tokens whose keys and values were already cached.
    pub cached_prompt_tokens: usize,
    /// Time to process the uncached prompt tokens (and produce the first token's logits).
    pub prompt_time: Duration,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Time spent generating after the first token's logits.
    pub generation_time: Duration,
}

/// A loaded local model.
pub struct LocalModel {
    name: String,
    transformer: Transformer,
    tokenizer: GgufTokenizer,
    pool: rayon::ThreadPool,
    last_stats: GenerationStats,
    constraints: Option<constraint::ConstraintFactory>,
}

impl LocalModel {
    /// Loads a GGUF file with `threads` inference threads.
    pub fn load(path: &Path, name: &str, threads: usize, requantize: Requantize) -> Result<LocalModel, LocalError> {
        let started = Instant::now();
        let file = File::open(path).map_err(|source| LocalError::Io { path: path.to_path_buf(), source })?;
        let mut reader = BufReader::new(file);
        let ct = gguf_file::Content::read(&mut reader)
            .map_err(|source| LocalError::Gguf { path: path.to_path_buf(), source })?;
        let tokenizer = GgufTokenizer::from_gguf(&ct)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("llm-{i}"))
            .build()
            .map_err(|e| LocalError::Threads(e.to_string()))?;
        let transformer = pool.install(|| Transformer::load(&ct, &mut reader, requantize))?;
        tracing::info!(
            model = name,
            path = %path.display(),
            architecture = ?transformer.hyperparameters().architecture,
            layers = transformer.hyperparameters().block_count,
            threads,
            ?requantize,
            load_ms = started.elapsed().as_millis() as u64,
            "Local model loaded"
        );
        Ok(LocalModel {
            name: name.to_string(),
            transformer,
            tokenizer,
            pool,
            last_stats: GenerationStats::default(),
            constraints: None,
        })
    }

    /// Loads a known model by name from `dir`.
    pub fn load_named(dir: &Path, name: &str, threads: usize) -> Result<LocalModel, LocalError> {
        let spec = registry::spec(name)?;
        let path = spec.path_in(dir);
        if !path.is_file() {
            return Err(LocalError::NotPulled { name: name.to_string(), dir: dir.to_path_buf() });
        }
        LocalModel::load(&path, name, threads, Requantize::default())
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The network.
    pub fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    /// Timings of the last generation.
    pub fn last_stats(&self) -> GenerationStats {
        self.last_stats
    }

    /// The grammar engine's index of this model's vocabulary, built on first use.
    fn constraints(&mut self) -> Result<&constraint::ConstraintFactory, LocalError> {
        if self.constraints.is_none() {
            let (tokens, special) = self.tokenizer.vocabulary();
            let end = self.tokenizer.stop_tokens()[0];
            self.constraints = Some(constraint::ConstraintFactory::new(tokens, special, end)?);
        }
        self.constraints.as_ref().ok_or_else(|| LocalError::Constraint("no vocabulary index".into()))
    }

    /// Forgets the cached prompt.
    pub fn clear_cache(&mut self) {
        self.transformer.truncate_cache(0);
    }

    /// Processes `prompt` (reusing the longest cached prefix) and returns the logits of
    /// its last position.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>, LocalError> {
        if prompt.is_empty() {
            return Err(LocalError::EmptyPrompt);
        }
        let common = self.transformer.cached_tokens().iter().zip(prompt).take_while(|(a, b)| a == b).count();
        // At least one token must run to give logits.
        let keep = common.min(prompt.len() - 1);
        self.transformer.truncate_cache(keep);
        self.last_stats.cached_prompt_tokens = keep;
        let transformer = &mut self.transformer;
        self.pool.install(|| transformer.forward(&prompt[keep..]))
    }

    /// Runs one more token after the cached ones and returns the next logits.
    pub fn prefill_next(&mut self, token: u32) -> Result<Vec<f32>, LocalError> {
        let transformer = &mut self.transformer;
        self.pool.install(|| transformer.forward(&[token]))
    }

    /// Answers a conversation. `on_text` gets each new piece of text as it is decoded and
    /// returns `false` to cancel.
    pub fn generate(
        &mut self,
        messages: &[ChatMessage],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Completion, LocalError> {
        let prompt = self.tokenizer.chat_prompt(messages)?;
        self.generate_tokens(&prompt, opts, on_text)
    }

    /// Like [`LocalModel::generate`], from prompt token ids.
    pub fn generate_tokens(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Completion, LocalError> {
        self.last_stats = GenerationStats { prompt_tokens: prompt.len(), ..GenerationStats::default() };
        let mut constraint = match &opts.json_schema {
            Some(schema) => Some(self.constraints()?.json(schema)?),
            None => None,
        };
        let t0 = Instant::now();
        let mut logits = self.prefill(prompt)?;
        self.last_stats.prompt_time = t0.elapsed();
        let t1 = Instant::now();
        let mut sampler = Sampler::new(opts.sampling);
        let mut stream = TextStream::new();
        let mut logprobs = Vec::new();
        let stops = self.tokenizer.stop_tokens().to_vec();
        let mut finish = FinishReason::Length;
        for _ in 0..opts.max_tokens {
            let mask = match constraint.as_mut() {
                Some(c) => Some(c.allowed(logits.len())?),
                None => None,
            };
            let Some(pick) = sampler.pick(&logits, mask.as_deref()) else {
                return Err(LocalError::Constraint("no token can continue the JSON".into()));
            };
            if stops.contains(&pick.token) {
                finish = FinishReason::Stop;
                break;
            }
            logprobs.push(pick.logprob);
            if let Some(c) = constraint.as_mut() {
                c.advance(pick.token)?;
            }
            if let Some(text) = stream.push(&self.tokenizer, pick.token)? {
                if !on_text(&text) {
                    finish = FinishReason::Cancelled;
                    break;
                }
            }
            let transformer = &mut self.transformer;
            let token = [pick.token];
            logits = self.pool.install(|| transformer.forward(&token))?;
        }
        self.last_stats.generated_tokens = logprobs.len();
        self.last_stats.generation_time = t1.elapsed();
        let confidence = if logprobs.is_empty() {
            None
        } else {
            Some(Confidence {
                mean_logprob: logprobs.iter().sum::<f32>() / logprobs.len() as f32,
                min_logprob: logprobs.iter().copied().fold(0.0, f32::min),
            })
        };
        Ok(Completion {
            text: stream.text(&self.tokenizer)?,
            model: self.name.clone(),
            finish_reason: finish,
            usage: Usage { prompt_tokens: prompt.len() as u32, completion_tokens: logprobs.len() as u32 },
            confidence,
            tool_calls: Vec::new(),
        })
    }
}

pub mod constraint;

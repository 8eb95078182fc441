//! One generation at a time, on a thread of its own, behind a queue.
//!
//! Inference is CPU-bound for seconds; it must never run on the async runtime. The
//! worker owns the model (and so its key/value cache, which the next request with the
//! same system prompt reuses). Requests wait in a queue whose depth is reported; a
//! request whose client has gone away is dropped from the queue, or cancelled at the
//! next token if it is running.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::{GenerateOptions, GenerationStats, LocalError, LocalModel};
use crate::llm::{ChatMessage, Completion, FinishReason};

/// What a generation hands back: the answer and its timings.
pub type Generated = Result<(Completion, GenerationStats), LocalError>;

struct Job {
    messages: Vec<ChatMessage>,
    opts: GenerateOptions,
    text: Option<mpsc::UnboundedSender<String>>,
    done: oneshot::Sender<Generated>,
    enqueued: Instant,
}

#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    busy: AtomicUsize,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    generated_tokens: AtomicU64,
}

/// A snapshot of the worker for health and metrics.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The model.
    pub model: String,
    /// Requests waiting.
    pub queue_depth: usize,
    /// Whether a generation is running.
    pub busy: bool,
    /// Generations finished.
    pub completed: u64,
    /// Generations cancelled because the client went away.
    pub cancelled: u64,
    /// Generations that failed.
    pub failed: u64,
    /// Tokens generated in all.
    pub generated_tokens: u64,
}

/// A cheap, cloneable handle to the worker thread.
#[derive(Clone)]
pub struct LocalWorker {
    tx: std::sync::mpsc::Sender<Job>,
    counters: Arc<Counters>,
    model: Arc<str>,
}

impl LocalWorker {
    /// Starts the worker thread that owns `model`.
    pub fn spawn(mut model: LocalModel) -> Result<LocalWorker, LocalError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let name: Arc<str> = Arc::from(model.name());
        std::thread::Builder::new()
            .name("llm-worker".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    c.queued.fetch_sub(1, Ordering::Relaxed);
                    if job.done.is_closed() {
                        c.cancelled.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    c.busy.store(1, Ordering::Relaxed);
                    let waited = job.enqueued.elapsed();
                    let text = job.text;
                    let done = job.done;
                    let mut on_text = |s: &str| {
                        if done.is_closed() {
                            return false;
                        }
                        match &text {
                            Some(t) => t.send(s.to_string()).is_ok(),
                            None => true,
                        }
                    };
                    let result = model.generate(&job.messages, &job.opts, &mut on_text);
                    c.busy.store(0, Ordering::Relaxed);
                    let stats = model.last_stats();
                    match &result {
                        Ok(comp) if comp.finish_reason == FinishReason::Cancelled => {
                            c.cancelled.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            c.completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            c.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "Local generation failed");
                        }
                    }
                    c.generated_tokens.fetch_add(stats.generated_tokens as u64, Ordering::Relaxed);
                    tracing::debug!(
                        model = model.name(),
                        queued_ms = waited.as_millis() as u64,
                        prompt_tokens = stats.prompt_tokens,
                        cached_prompt_tokens = stats.cached_prompt_tokens,
                        prompt_ms = stats.prompt_time.as_millis() as u64,
                        generated_tokens = stats.generated_tokens,
                        generation_ms = stats.generation_time.as_millis() as u64,
                        "Local generation done"
                    );
                    let _ = done.send(result.map(|c| (c, stats)));
                }
            })
            .map_err(|e| LocalError::Threads(e.to_string()))?;
        Ok(LocalWorker { tx, counters, model: name })
    }

    fn submit(
        &self,
        messages: Vec<ChatMessage>,
        opts: GenerateOptions,
        text: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<oneshot::Receiver<Generated>, LocalError> {
        let (done, rx) = oneshot::channel();
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Job { messages, opts, text, done, enqueued: Instant::now() }).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(LocalError::WorkerGone);
        }
        Ok(rx)
    }

    /// Answers `messages`; dropping the future cancels the generation.
    pub async fn generate(
        &self,
        messages: Vec<ChatMessage>,
        opts: GenerateOptions,
    ) -> Result<(Completion, GenerationStats), LocalError> {
        self.submit(messages, opts, None)?.await.map_err(|_| LocalError::WorkerGone)?
    }

    /// Answers `messages`, streaming text pieces into the returned receiver; dropping
    /// both receivers cancels the generation.
    pub fn generate_stream(
        &self,
        messages: Vec<ChatMessage>,
        opts: GenerateOptions,
    ) -> Result<(mpsc::UnboundedReceiver<String>, oneshot::Receiver<Generated>), LocalError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let done = self.submit(messages, opts, Some(tx))?;
        Ok((rx, done))
    }

    /// A snapshot for health and metrics.
    pub fn status(&self) -> WorkerStatus {
        let c = &self.counters;
        WorkerStatus {
            model: self.model.to_string(),
            queue_depth: c.queued.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed) == 1,
            completed: c.completed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            generated_tokens: c.generated_tokens.load(Ordering::Relaxed),
        }
    }
}

//! The escalation router: which model answers.
//!
//! Policy `never | on_request | auto` (`[llm] escalation`). With `auto` a question goes
//! to the cloud model when the person asks for it, when the task is declared deep
//! (planning across many assets), when the reviewer has rejected the local answer
//! twice, or when the local answer's confidence (mean token log-probability) is below
//! `[llm] min_confidence`. It never escalates when the cloud is unreachable, its breaker
//! is open or today's budget is used up: then the local answer is returned with a
//! visible note saying why. Before anything leaves the plant, configured site, asset and
//! tag names are replaced by placeholders, and put back in the answer.
//!
//! Every escalation is logged with its reason, tokens and latency, and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::cloud::{CloudClient, CloudError, CompletionOptions};
use super::config::EscalationPolicy;
use super::local::{GenerateOptions, LocalError, LocalWorker};
use super::redact::Redactor;
use super::{ChatMessage, Completion};

/// How hard the task is, as the agent declares it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Task {
    /// Routine: explain, phrase, answer from facts.
    #[default]
    Routine,
    /// Deep: long reasoning, e.g. planning across many assets.
    Deep,
}

/// One question for the router.
#[derive(Clone, Debug, Default)]
pub struct Ask {
    /// The conversation (system prompt, facts, question).
    pub messages: Vec<ChatMessage>,
    /// What the local model may do (token limit, sampling, JSON schema).
    pub local: GenerateOptions,
    /// The task's depth.
    pub task: Task,
    /// The person asked for the cloud model.
    pub user_requested: bool,
    /// How many times the reviewer rejected the local answer to this question.
    pub review_rejections: u32,
}

/// Why a question went to the cloud.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum EscalationReason {
    /// The person asked.
    UserRequest,
    /// A deep task.
    DeepTask,
    /// The reviewer rejected the local answer twice.
    ReviewRejected {
        /// Rejections.
        times: u32,
    },
    /// The local answer's mean token log-probability was below the threshold.
    LowConfidence {
        /// Its mean log-probability.
        mean_logprob: f32,
    },
}

impl EscalationReason {
    fn label(&self) -> &'static str {
        match self {
            EscalationReason::UserRequest => "user_request",
            EscalationReason::DeepTask => "deep_task",
            EscalationReason::ReviewRejected { .. } => "review_rejected",
            EscalationReason::LowConfidence { .. } => "low_confidence",
        }
    }
}

/// Who wrote the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The local model.
    Local,
    /// The cloud model.
    Cloud,
}

/// The router's answer.
#[derive(Clone, Debug, Serialize)]
pub struct RoutedAnswer {
    /// The answer (names restored when it came from the cloud).
    pub completion: Completion,
    /// Who wrote it.
    pub answered_by: AnsweredBy,
    /// Why it went to the cloud, when it did or was meant to.
    pub escalation: Option<EscalationReason>,
    /// A note for the person, e.g. why it was answered locally although escalation was due.
    pub note: Option<String>,
}

/// Errors of the router: only when no model at all can answer.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The local model failed and the cloud was not available.
    #[error("{local}{}", cloud.as_ref().map(|c| format!("; cloud: {c}")).unwrap_or_default())]
    NoAnswer {
        /// The local model's error.
        local: LocalError,
        /// The cloud's, if it was tried.
        cloud: Option<CloudError>,
    },
    /// Neither model is configured.
    #[error("no language model is configured")]
    NoModel,
}

#[derive(Default)]
struct Counters {
    local_answers: AtomicU64,
    cloud_answers: AtomicU64,
    escalations: [AtomicU64; 4],
    escalation_failures: AtomicU64,
    escalations_skipped_by_policy: AtomicU64,
}

/// Counters for health and metrics (`linepilot_llm_<field>`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RouterStatus {
    /// The policy.
    pub policy: String,
    /// Answers the local model gave.
    pub local_answers_total: u64,
    /// Answers the cloud model gave.
    pub cloud_answers_total: u64,
    /// Escalations tried, by reason: user request, deep task, review rejected, low confidence.
    pub escalations_user_request_total: u64,
    /// See above.
    pub escalations_deep_task_total: u64,
    /// See above.
    pub escalations_review_rejected_total: u64,
    /// See above.
    pub escalations_low_confidence_total: u64,
    /// Escalations that fell back to the local answer (cloud down, breaker open, over budget).
    pub escalation_failures_total: u64,
    /// Escalations the policy did not allow.
    pub escalations_skipped_by_policy_total: u64,
}

/// What came of trying to escalate.
enum Tried {
    /// The cloud answered.
    Answered(RoutedAnswer),
    /// The cloud failed; the note for the local answer.
    Failed(String),
    /// The policy does not allow this reason.
    NotAllowed,
}

/// Chooses the model for every question.
#[derive(Clone)]
pub struct Router {
    local: Option<LocalWorker>,
    cloud: Option<CloudClient>,
    policy: EscalationPolicy,
    min_confidence: f32,
    redactor: Arc<Redactor>,
    counters: Arc<Counters>,
}

impl Router {
    /// A router over the models there are.
    pub fn new(
        local: Option<LocalWorker>,
        cloud: Option<CloudClient>,
        policy: EscalationPolicy,
        min_confidence: f32,
        redactor: Redactor,
    ) -> Router {
        Router { local, cloud, policy, min_confidence, redactor: Arc::new(redactor), counters: Arc::default() }
    }

    /// Why `ask` should go to the cloud before the local model has answered, if it should.
    fn upfront_reason(&self, ask: &Ask) -> Option<EscalationReason> {
        if ask.user_requested {
            Some(EscalationReason::UserRequest)
        } else if ask.task == Task::Deep {
            Some(EscalationReason::DeepTask)
        } else if ask.review_rejections >= 2 {
            Some(EscalationReason::ReviewRejected { times: ask.review_rejections })
        } else {
            None
        }
    }

    fn allowed(&self, reason: &EscalationReason) -> bool {
        match self.policy {
            EscalationPolicy::Never => false,
            EscalationPolicy::OnRequest => *reason == EscalationReason::UserRequest,
            EscalationPolicy::Auto => true,
        }
    }

    /// Answers `ask` with the model the policy picks.
    pub async fn answer(&self, ask: Ask) -> Result<RoutedAnswer, RouterError> {
        let mut note = None;
        let mut escalation = None;
        if let Some(reason) = self.upfront_reason(&ask) {
            match self.try_escalate(&ask, reason).await {
                Tried::Answered(ans) => return Ok(ans),
                Tried::Failed(n) => (escalation, note) = (Some(reason), Some(n)),
                Tried::NotAllowed if reason == EscalationReason::UserRequest => {
                    note = Some(format!(
                        "answered locally: escalation to the cloud model is `{}` here",
                        self.policy_name()
                    ));
                }
                Tried::NotAllowed => {}
            }
        }
        let local = match &self.local {
            Some(l) => l.generate(ask.messages.clone(), ask.local.clone()).await.map(|(c, _)| c),
            None => Err(LocalError::WorkerGone),
        };
        let completion = match local {
            Ok(c) => c,
            Err(e) if escalation.is_none() && self.cloud.is_some() => {
                // No local model: the cloud is the only way to answer.
                let reason = EscalationReason::UserRequest;
                return self.escalate(&ask, reason).await.map_err(|_| RouterError::NoAnswer { local: e, cloud: None });
            }
            Err(e) => return Err(RouterError::NoAnswer { local: e, cloud: None }),
        };
        if escalation.is_none() && ask.local.json_schema.is_none() {
            if let Some(conf) = completion.confidence {
                if conf.mean_logprob < self.min_confidence {
                    let reason = EscalationReason::LowConfidence { mean_logprob: conf.mean_logprob };
                    match self.try_escalate(&ask, reason).await {
                        Tried::Answered(ans) => return Ok(ans),
                        Tried::Failed(n) => (escalation, note) = (Some(reason), Some(n)),
                        Tried::NotAllowed => {}
                    }
                }
            }
        }
        self.counters.local_answers.fetch_add(1, Ordering::Relaxed);
        Ok(RoutedAnswer { completion, answered_by: AnsweredBy::Local, escalation, note })
    }

    fn policy_name(&self) -> &'static str {
        match self.policy {
            EscalationPolicy::Never => "never",
            EscalationPolicy::OnRequest => "on_request",
            EscalationPolicy::Auto => "auto",
        }
    }

    /// Escalates when the policy allows `reason` (else counts the skip).
    async fn try_escalate(&self, ask: &Ask, reason: EscalationReason) -> Tried {
        if !self.allowed(&reason) {
            self.counters.escalations_skipped_by_policy.fetch_add(1, Ordering::Relaxed);
            return Tried::NotAllowed;
        }
        match self.escalate(ask, reason).await {
            Ok(ans) => Tried::Answered(ans),
            Err(note) => Tried::Failed(note),
        }
    }

    /// Sends `ask` to the cloud; on failure returns the note for the local answer.
    async fn escalate(&self, ask: &Ask, reason: EscalationReason) -> Result<RoutedAnswer, String> {
        let idx = match reason {
            EscalationReason::UserRequest => 0,
            EscalationReason::DeepTask => 1,
            EscalationReason::ReviewRejected { .. } => 2,
            EscalationReason::LowConfidence { .. } => 3,
        };
        self.counters.escalations[idx].fetch_add(1, Ordering::Relaxed);
        let Some(cloud) = &self.cloud else {
            self.counters.escalation_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(reason = reason.label(), "Escalation wanted, but no cloud model is configured");
            return Err("answered locally: no cloud model is configured".to_string());
        };
        let messages: Vec<ChatMessage> = ask
            .messages
            .iter()
            .map(|m| ChatMessage { role: m.role, content: self.redactor.redact(&m.content) })
            .collect();
        let opts = CompletionOptions {
            max_tokens: Some(ask.local.max_tokens.min(u32::MAX as usize) as u32),
            ..CompletionOptions::default()
        };
        let started = Instant::now();
        match cloud.complete(&messages, &opts).await {
            Ok(mut c) => {
                c.text = self.redactor.restore(&c.text);
                tracing::info!(
                    reason = reason.label(),
                    model = %c.model,
                    prompt_tokens = c.usage.prompt_tokens,
                    completion_tokens = c.usage.completion_tokens,
                    latency_ms = started.elapsed().as_millis() as u64,
                    "Escalated to the cloud model"
                );
                self.counters.cloud_answers.fetch_add(1, Ordering::Relaxed);
                Ok(RoutedAnswer { completion: c, answered_by: AnsweredBy::Cloud, escalation: Some(reason), note: None })
            }
            Err(e) => {
                self.counters.escalation_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    reason = reason.label(),
                    error = %e,
                    kind = e.kind(),
                    latency_ms = started.elapsed().as_millis() as u64,
                    "Escalation failed; answering locally"
                );
                let why = match &e {
                    CloudError::BudgetExhausted { .. } => "the cloud model's daily token budget is used up".to_string(),
                    CloudError::CircuitOpen { .. } => {
                        "the cloud model is unreachable (circuit breaker open)".to_string()
                    }
                    other => format!("the cloud model is unavailable ({})", other.kind()),
                };
                Err(format!("answered locally: {why}"))
            }
        }
    }

    /// Counters for health and metrics.
    pub fn status(&self) -> RouterStatus {
        let c = &self.counters;
        let e = |i: usize| c.escalations[i].load(Ordering::Relaxed);
        RouterStatus {
            policy: self.policy_name().to_string(),
            local_answers_total: c.local_answers.load(Ordering::Relaxed),
            cloud_answers_total: c.cloud_answers.load(Ordering::Relaxed),
            escalations_user_request_total: e(0),
            escalations_deep_task_total: e(1),
            escalations_review_rejected_total: e(2),
            escalations_low_confidence_total: e(3),
            escalation_failures_total: c.escalation_failures.load(Ordering::Relaxed),
            escalations_skipped_by_policy_total: c.escalations_skipped_by_policy.load(Ordering::Relaxed),
        }
    }
}

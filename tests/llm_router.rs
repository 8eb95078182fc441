//! The escalation router with the real local model (SmolLM2, `$LINEPILOT_MODEL_DIR`) and a
//! local HTTP server speaking the OpenAI chat-completions API in place of cloud Qwen
//! (the real endpoint is not reachable from here): policies, low confidence, deep tasks,
//! redaction, and the fallback to the local answer with a note when the cloud is down or
//! over budget.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router as Http};
use linepilot::config::units::HumanDuration;
use linepilot::llm::cloud::{CloudClient, CloudConfig};
use linepilot::llm::config::EscalationPolicy;
use linepilot::llm::local::{GenerateOptions, LocalModel, LocalWorker, Requantize};
use linepilot::llm::redact::{NameKind, Redactor};
use linepilot::llm::router::{AnsweredBy, Ask, EscalationReason, Router, Task};
use linepilot::llm::ChatMessage;
use serde_json::{json, Value};

mod common;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Value>>>);

async fn chat(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
    seen.0.lock().expect("lock").push(body);
    Json(json!({
        "id": "x", "object": "chat.completion", "model": "qwen-plus",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "[ASSET_1] stopped because [TAG_1] fell to 2.1 bar."}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}
    }))
}

async fn cloud_server() -> (String, Seen) {
    let seen = Seen::default();
    let app = Http::new().route("/v1/chat/completions", post(chat)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), seen)
}

fn cloud(base_url: &str, budget: u64, key: &tempfile::NamedTempFile) -> CloudClient {
    CloudConfig {
        base_url: base_url.to_string(),
        api_key_file: Some(key.path().to_path_buf()),
        max_retries: 0,
        timeout: HumanDuration(Duration::from_secs(5)),
        daily_token_budget: budget,
        ..CloudConfig::default()
    }
    .build()
    .expect("cloud client")
}

fn key() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(f.path(), "sk-test\n").expect("write key");
    f
}

fn local() -> LocalWorker {
    let path = common::models::model_path("smollm2-135m");
    LocalWorker::spawn(LocalModel::load(&path, "smollm2-135m", 2, Requantize::default()).expect("load"))
        .expect("worker")
}

fn redactor() -> Redactor {
    Redactor::new([
        (NameKind::Asset, "Filler 2"),
        (NameKind::Tag, "filler.bowl_pressure"),
        (NameKind::Site, "Suzhou Plant 3"),
    ])
}

fn ask() -> Ask {
    Ask {
        messages: vec![
            ChatMessage::system("Answer from the facts. Site: Suzhou Plant 3."),
            ChatMessage::user("Facts: filler.bowl_pressure fell to 2.1 bar at 10:40. Why did Filler 2 stop?"),
        ],
        local: GenerateOptions { max_tokens: 24, ..GenerateOptions::default() },
        ..Ask::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_policy_escalates_for_the_right_reasons_and_redacts() {
    let (url, seen) = cloud_server().await;
    let k = key();
    // min_confidence -10: the local answer is confident enough, so a routine question stays local.
    let r = Router::new(Some(local()), Some(cloud(&url, 100_000, &k)), EscalationPolicy::Auto, -10.0, redactor());
    let a = r.answer(ask()).await.expect("answer");
    assert_eq!((a.answered_by, a.escalation, a.note.as_deref()), (AnsweredBy::Local, None, None));
    assert!(seen.0.lock().expect("lock").is_empty(), "nothing left the plant");

    // A deep task goes up; names leave as placeholders and come back in the answer.
    let a = r.answer(Ask { task: Task::Deep, ..ask() }).await.expect("answer");
    assert_eq!((a.answered_by, a.escalation), (AnsweredBy::Cloud, Some(EscalationReason::DeepTask)));
    assert_eq!(a.completion.text, "Filler 2 stopped because filler.bowl_pressure fell to 2.1 bar.");
    let sent = seen.0.lock().expect("lock").last().cloned().expect("a request");
    let text = sent["messages"].to_string();
    for name in ["Filler 2", "filler.bowl_pressure", "Suzhou"] {
        assert!(!text.contains(name), "{name} left the plant: {text}");
    }
    assert!(text.contains("2.1 bar") && text.contains("[TAG_1]"), "{text}");

    // Two reviewer rejections, and the person's own request, go up too.
    let a = r.answer(Ask { review_rejections: 2, ..ask() }).await.expect("answer");
    assert_eq!(a.escalation, Some(EscalationReason::ReviewRejected { times: 2 }));
    let a = r.answer(Ask { user_requested: true, ..ask() }).await.expect("answer");
    assert_eq!((a.answered_by, a.escalation), (AnsweredBy::Cloud, Some(EscalationReason::UserRequest)));

    // Low confidence: with a threshold no answer can meet, the local answer is escalated.
    let strict =
        Router::new(Some(local()), Some(cloud(&url, 100_000, &k)), EscalationPolicy::Auto, -0.0001, redactor());
    let a = strict.answer(ask()).await.expect("answer");
    assert!(matches!(a.escalation, Some(EscalationReason::LowConfidence { .. })), "{a:?}");
    assert_eq!(a.answered_by, AnsweredBy::Cloud);
    let st = r.status();
    assert_eq!((st.cloud_answers_total, st.local_answers_total, st.escalations_deep_task_total), (3, 1, 1), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_and_on_request_policies_keep_answers_local() {
    let (url, seen) = cloud_server().await;
    let k = key();
    let never =
        Router::new(Some(local()), Some(cloud(&url, 100_000, &k)), EscalationPolicy::Never, -0.0001, redactor());
    let a = never.answer(Ask { task: Task::Deep, user_requested: true, ..ask() }).await.expect("answer");
    assert_eq!(a.answered_by, AnsweredBy::Local);
    assert!(a.note.as_deref().is_some_and(|n| n.contains("never")), "{a:?}");
    let on_request =
        Router::new(Some(local()), Some(cloud(&url, 100_000, &k)), EscalationPolicy::OnRequest, -0.0001, redactor());
    let a = on_request.answer(Ask { task: Task::Deep, ..ask() }).await.expect("answer");
    assert_eq!(a.answered_by, AnsweredBy::Local, "a deep task alone does not escalate under on_request");
    assert!(seen.0.lock().expect("lock").is_empty());
    let a = on_request.answer(Ask { user_requested: true, ..ask() }).await.expect("answer");
    assert_eq!(a.answered_by, AnsweredBy::Cloud);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_or_over_budget_gives_the_local_answer_with_a_note() {
    // Nothing listens on this port: the cloud is down.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        drop(l);
        format!("http://{a}/v1")
    };
    let k = key();
    let r = Router::new(Some(local()), Some(cloud(&dead, 100_000, &k)), EscalationPolicy::Auto, -10.0, redactor());
    let a = r.answer(Ask { task: Task::Deep, ..ask() }).await.expect("a local answer");
    assert_eq!(a.answered_by, AnsweredBy::Local);
    assert!(!a.completion.text.is_empty());
    assert!(
        a.note.as_deref().is_some_and(|n| n.starts_with("answered locally: the cloud model is unavailable")),
        "{a:?}"
    );
    assert_eq!(r.status().escalation_failures_total, 1);

    // A budget of 50 tokens: the first escalation (52 tokens) uses it up, the next is refused unsent.
    let (url, seen) = cloud_server().await;
    let r = Router::new(Some(local()), Some(cloud(&url, 50, &k)), EscalationPolicy::Auto, -10.0, redactor());
    assert_eq!(r.answer(Ask { task: Task::Deep, ..ask() }).await.expect("first").answered_by, AnsweredBy::Cloud);
    let a = r.answer(Ask { task: Task::Deep, ..ask() }).await.expect("second");
    assert_eq!(a.answered_by, AnsweredBy::Local);
    assert!(a.note.as_deref().is_some_and(|n| n.contains("budget")), "{a:?}");
    assert_eq!(seen.0.lock().expect("lock").len(), 1, "the refused request was not sent");
}

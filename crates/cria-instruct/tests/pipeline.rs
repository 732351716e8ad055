//! The pipeline against a scripted teacher: an in-test OpenAI-compatible server with canned
//! replies that hit every filter, answers 429 and 500 now and then, and counts how many
//! requests it has in flight. Every stage runs, every filter is counted, requests overlap,
//! a rerun (also after a kill mid-write) continues without duplicates, and bad seeds or a
//! teacher that answers garbage get clear errors.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cria_instruct::pipeline::{self, Config, Style};
use cria_instruct::seeds::{Instance, SeedTask, read_seeds};
use cria_instruct::teacher::{Api, HttpTeacher, Teacher};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
struct Script {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// Answer garbage (a 200 that is not an OpenAI answer).
    garbage: bool,
}

fn seeds() -> Vec<SeedTask> {
    let t = |i: usize, inst: &str, clf: bool| SeedTask {
        id: format!("seed_task_{i}"),
        name: format!("t{i}"),
        instruction: inst.to_string(),
        instances: vec![Instance {
            input: format!("input {i}"),
            output: format!("output {i}"),
        }],
        is_classification: clf,
    };
    vec![
        t(0, "Summarise the memo below for the sales team.", false),
        t(
            1,
            "Classify the ticket as billing, technical or other.",
            true,
        ),
        t(
            2,
            "Draft a polite reply to the customer about the delay.",
            false,
        ),
        t(
            3,
            "Extract the invoice number and the total from the text.",
            false,
        ),
        t(
            4,
            "Classify the review as positive, negative or mixed.",
            true,
        ),
        t(5, "Explain the travel policy to a new employee.", false),
        t(6, "List the action items of the meeting notes.", false),
        t(
            7,
            "Is the email spam or legitimate? Answer with one word.",
            true,
        ),
        t(8, "Translate the notice into Spanish, formally.", false),
    ]
}

/// Words no two calls share many of (so new instructions are not near-copies of each other).
fn fresh(n: usize, salt: usize) -> String {
    const WORDS: [&str; 40] = [
        "ledger",
        "harbour",
        "quarterly",
        "vendor",
        "onboarding",
        "parcel",
        "forecast",
        "audit",
        "warranty",
        "roster",
        "payroll",
        "freight",
        "tender",
        "backlog",
        "pricing",
        "inventory",
        "refund",
        "shipment",
        "contract",
        "budget",
        "survey",
        "campaign",
        "dashboard",
        "pipeline",
        "licence",
        "holiday",
        "expense",
        "escalation",
        "newsletter",
        "workshop",
        "checklist",
        "handover",
        "invoice",
        "headcount",
        "retention",
        "migration",
        "outage",
        "renewal",
        "supplier",
        "training",
    ];
    let mut x = (n * 7919 + salt * 104729) as u64;
    (0..5)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            WORDS[(x >> 33) as usize % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A numbered-list continuation for request `n`: two new instructions and one of each
/// filtered kind; every third reply is cut at the length limit.
fn list_reply(n: usize) -> (String, bool) {
    let (a, b) = (fresh(n, 1), fresh(n, 2));
    let text = format!(
        " Write a note about {a} for colleagues.\n\
         10. Classify the {b} request as paid, open or disputed.\n\
         11. Describe the image of the office building {n}.\n\
         12. Write a program that adds numbers {n} times.\n\
         13. \"Quoted\" instructions are not good at all {n}.\n\
         14. Écris une lettre au client numéro {n} maintenant.\n\
         15. Too short {n}\n\
         16. Summarise the memo below for the sales team please.\n\
         17. Plan the quarterly offsite for the team of {n} people"
    );
    (text, n.is_multiple_of(3))
}

async fn completions(State(s): State<Arc<Script>>, Json(body): Json<Value>) -> Response {
    let n = s.calls.fetch_add(1, Ordering::SeqCst);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.most_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    // Now and then the server is busy or fails: the client retries.
    if n == 1 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            "slow down",
        )
            .into_response();
    }
    if n == 4 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response();
    }
    if s.garbage {
        return Json(json!({"hello": "not an OpenAI answer"})).into_response();
    }
    let prompt = body["prompt"].as_str().unwrap_or_default();
    assert!(body["max_tokens"].as_u64().is_some() && body["stop"].is_array());
    let (text, cut) = if prompt.contains("Fixed labels:") {
        let task = prompt.rsplit("Task:").next().unwrap();
        (
            (if task.contains("Classify") {
                " Yes"
            } else {
                " No"
            })
            .to_string(),
            false,
        )
    } else if prompt.contains("Class label:") {
        ("Class label: paid\nInput: Invoice 7, settled on 3 May.\nClass label: disputed\nInput: Invoice 9, customer says the amount is wrong.\n".into(), false)
    } else if prompt.contains("Example 1\n") {
        ("Input: None\nOutput: Welcome aboard! We are glad you joined.\nExample 2\nInput: Ana, accounts payable\nOutput: Welcome, Ana! Your first week starts with the payment run.\nExample 3\nInput: cut off".into(), true)
    } else {
        let n = prompt.matches("request-marker").count() + n;
        list_reply(n)
    };
    let finish = if cut { "length" } else { "stop" };
    Json(json!({"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish}]})).into_response()
}

async fn start(script: Arc<Script>) -> String {
    let app = axum::Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "scripted"}]})) }),
        )
        .route("/v1/completions", post(completions))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn teacher(base: &str) -> Teacher {
    Teacher::Http(
        HttpTeacher::connect(
            base,
            None,
            None,
            Api::Completions,
            3,
            Duration::from_secs(10),
        )
        .await
        .unwrap(),
    )
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_and_filter_runs_and_a_rerun_continues() {
    let script = Arc::new(Script::default());
    let base = start(script.clone()).await;
    let t = teacher(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(Style::SelfInstruct, 6, dir.path().join("run"));
    cfg.concurrency = 4;
    let stats = pipeline::run(&cfg, &seeds(), &t).await.unwrap();
    assert!(
        script.most_in_flight.load(Ordering::SeqCst) >= 2,
        "requests overlap"
    );
    // Each filter removed something, and ROUGE-L removed the near-copy of a seed.
    for why in [
        "too_short",
        "blacklist",
        "write_a_program",
        "starts_with_punctuation",
        "starts_non_ascii",
        "similar",
        "truncated",
    ] {
        assert!(
            stats.removed.get(why).copied().unwrap_or(0) > 0,
            "{why}: {:?}",
            stats.removed
        );
    }
    assert_eq!(stats.kept, 6);
    assert!(stats.classification >= 1);
    // Instances: label-first for classification tasks, input-first (the cut-off third dropped).
    let inst = lines(&cfg.out.join("instances.jsonl"));
    let clf = inst
        .iter()
        .find(|r| r["is_classification"] == true)
        .unwrap();
    assert_eq!(
        clf["instances"][1],
        json!({"input": "Invoice 9, customer says the amount is wrong.", "output": "disputed"})
    );
    let free = inst
        .iter()
        .find(|r| r["is_classification"] == false)
        .unwrap();
    assert_eq!(free["instances"].as_array().unwrap().len(), 2);
    assert_eq!(free["instances"][0]["input"], "", "None is no input");
    // The data: every kept task's instances, then the seed tasks; read by cria's SFT reader.
    let data = cfg.out.join("data.json");
    let rows = cria_data::sft::read_conversations(&data).unwrap();
    assert_eq!(rows.len(), stats.rows);
    assert_eq!(stats.seed_rows, 9);
    let cands = lines(&cfg.out.join("candidates.jsonl"));
    assert_eq!(cands.len(), stats.candidates);
    let similar = cands.iter().find(|c| c["removed"] == "similar").unwrap();
    assert_eq!(
        similar["most_similar"][0][0],
        "Summarise the memo below for the sales team."
    );
    assert!(similar["max_rouge_l"].as_f64().unwrap() > 0.7);
    assert!(similar["prompt_seeds"].as_array().unwrap().len() >= 6);
    assert!(similar["teacher"].as_str().unwrap().contains("scripted"));

    // A rerun asking for more continues: no request twice, the first ones kept as they were.
    let before = lines(&cfg.out.join("requests.jsonl"));
    cfg.count = 14;
    let more = pipeline::run(&cfg, &seeds(), &t).await.unwrap();
    assert_eq!(more.kept, 14);
    let after = lines(&cfg.out.join("requests.jsonl"));
    assert_eq!(&after[..before.len()], &before[..]);
    let idx: Vec<u64> = after
        .iter()
        .map(|r| r["request"].as_u64().unwrap())
        .collect();
    assert_eq!(
        idx,
        (0..idx.len() as u64).collect::<Vec<_>>(),
        "consecutive, none twice"
    );
    let classified = lines(&cfg.out.join("classified.jsonl"));
    assert_eq!(classified.len(), 14, "each instruction classified once");

    // Killed in the middle of writing a line: the next run cuts it off and does it again.
    let req = cfg.out.join("requests.jsonl");
    let text = std::fs::read_to_string(&req).unwrap();
    let last = text.trim_end().rfind('\n').unwrap() + 1;
    std::fs::write(&req, &text[..last + 30]).unwrap();
    let again = pipeline::run(&cfg, &seeds(), &t).await.unwrap();
    assert_eq!(again.kept, 14);
    let idx: Vec<u64> = lines(&req)
        .iter()
        .map(|r| r["request"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (0..idx.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alpaca_style_takes_whole_tasks() {
    async fn alpaca(Json(body): Json<Value>) -> Json<Value> {
        let prompt = body["prompt"].as_str().unwrap();
        assert!(prompt.contains("<noinput>") || prompt.contains("1. Input:\ninput"));
        assert_eq!(prompt.matches("###").count(), 4, "3 demonstrations");
        let marker = prompt.len();
        let (a, b) = (fresh(marker, 3), fresh(marker, 4));
        let text = format!(
            " Suggest a subject line about {a}.\n4. Input:\n<noinput>\n4. Output:\nMeet our newest products\n###\n\
             5. Instruction: Compose music for the product video {marker}.\n5. Input:\n<noinput>\n5. Output:\nla la\n###\n\
             6. Instruction: Turn the notes into a summary of {b}.\n6. Input:\nMet at 10, agreed on the budget.\n6. Output:\nThe budget was agreed.\n###\n\
             7. Instruction: broken item without parts\n###\n8. Instruction: Cut off"
        );
        Json(json!({"choices": [{"text": text, "finish_reason": "length"}]}))
    }
    let app = axum::Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"data": [{"id": "a"}, {"id": "b"}]})) }),
        )
        .route("/v1/completions", post(alpaca));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Two models: one must be named.
    let e = HttpTeacher::connect(
        &base,
        None,
        None,
        Api::Completions,
        0,
        Duration::from_secs(5),
    )
    .await
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("name one with --teacher-model"),
        "{e}"
    );
    let t = Teacher::Http(
        HttpTeacher::connect(
            &base,
            Some("b"),
            None,
            Api::Completions,
            0,
            Duration::from_secs(5),
        )
        .await
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(Style::Alpaca, 4, dir.path().join("run"));
    cfg.concurrency = 2;
    let s = pipeline::run(&cfg, &seeds(), &t).await.unwrap();
    assert_eq!(s.kept, 4);
    assert_eq!(s.seed_rows, 0, "Alpaca's data is machine-made only");
    assert!(
        s.removed["blacklist"] > 0 && s.removed["malformed"] > 0 && s.removed["truncated"] > 0,
        "{:?}",
        s.removed
    );
    let rows = cria_data::sft::read_conversations(&cfg.out.join("data.json")).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .any(|r| r[0].input.as_deref() == Some("Met at 10, agreed on the budget."))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teacher_that_answers_garbage_or_not_at_all_is_a_clear_error() {
    let script = Arc::new(Script {
        garbage: true,
        ..Default::default()
    });
    let base = start(script.clone()).await;
    let t = teacher(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::new(Style::SelfInstruct, 2, dir.path().join("run"));
    let e = pipeline::run(&cfg, &seeds(), &t)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("did not answer as an OpenAI server does") && e.contains("not an OpenAI answer"),
        "{e}"
    );
    // Nothing listens here.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = HttpTeacher::connect(
        &format!("http://{closed}/v1"),
        None,
        None,
        Api::Completions,
        1,
        Duration::from_secs(2),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("cannot connect") && e.contains("after 2 tries"),
        "{e}"
    );
    // Not an API root.
    let e = HttpTeacher::connect(
        &base.replace("/v1", "/v2"),
        None,
        None,
        Api::Completions,
        0,
        Duration::from_secs(2),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("404") && e.contains("/v1"), "{e}");
}

#[test]
fn a_bad_seed_file_names_the_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("seeds.jsonl");
    let good = json!({"id": "a", "name": "a", "instruction": "Do it well", "instances": [{"input": "", "output": "done"}], "is_classification": false});
    let cases = [
        (
            json!({"id": "b", "name": "b", "instances": [], "is_classification": false}),
            "seeds.jsonl:2: instruction: missing",
        ),
        (
            json!({"id": "a", "name": "b", "instruction": "x", "instances": [{"input": "", "output": "y"}], "is_classification": false}),
            "seeds.jsonl:2: id: `a` is given twice",
        ),
        (
            json!({"id": "b", "name": "b", "instruction": "x", "instances": [{"input": ""}], "is_classification": false}),
            "seeds.jsonl:2: instances[0].output",
        ),
        (
            json!({"id": "b", "name": "b", "instruction": "x", "instances": [{"input": "", "output": "y"}], "is_classification": "no"}),
            "seeds.jsonl:2: is_classification",
        ),
    ];
    for (bad, want) in cases {
        std::fs::write(&p, format!("{good}\n{bad}\n")).unwrap();
        let e = read_seeds(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{want:?} in {e}");
    }
    std::fs::write(&p, "{\"id\": \n").unwrap();
    assert!(
        read_seeds(&p)
            .unwrap_err()
            .to_string()
            .contains("seeds.jsonl:1: (line): invalid JSON")
    );
    // The project's own seeds, and the published format, read as they are.
    let ours = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/self-instruct/company_seed_tasks.jsonl");
    let s = read_seeds(&ours).unwrap();
    assert!(s.len() >= 60);
    assert!(s.iter().filter(|t| t.is_classification).count() >= 10);
}

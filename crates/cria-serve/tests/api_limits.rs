//! The HTTP API's errors, limits and load: every error kind with the status and `param` an
//! OpenAI client expects, API keys, the per-key limit, a full queue, CORS, 32 streams at
//! once, a client that leaves, /health before the models load, and /metrics.

mod common;
use common::*;
use cria_serve::EngineConfig;
use cria_serve::api::keys::ApiKey;
use cria_serve::api::{self, App, ServerConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_4xx_a_client_expects() {
    let s = Server::start(
        ServerConfig {
            body_limit: 64 << 10,
            ..Default::default()
        },
        EngineConfig::default(),
    )
    .await;
    let hi = user("hi");
    let cases: Vec<(Value, u16, Option<&str>, Option<&str>)> = vec![
        (
            json!({"model": "chat", "messages": []}),
            400,
            Some("messages"),
            None,
        ),
        (json!({"model": "chat"}), 400, Some("messages"), None),
        (
            json!({"model": "chat", "messages": [{"role": "robot", "content": "x"}]}),
            400,
            Some("messages[0].role"),
            None,
        ),
        (
            json!({"model": "chat", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
            Some("messages[0].content[0]"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "temperature": "warm"}),
            400,
            Some("temperature"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "temperature": 3}),
            400,
            Some("temperature"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "max_tokens": -1}),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "max_tokens": 5000}),
            400,
            Some("max_tokens"),
            Some("context_length_exceeded"),
        ),
        (
            json!({"model": "chat", "messages": hi, "n": 99}),
            400,
            Some("n"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "stop": [1, 2]}),
            400,
            Some("stop"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "top_logprobs": 2}),
            400,
            Some("top_logprobs"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "response_format": {"type": "json_object"}}),
            400,
            Some("response_format"),
            None,
        ),
        (
            json!({"model": "chat", "messages": hi, "stream_options": 3}),
            400,
            Some("stream_options"),
            None,
        ),
        (
            json!({"model": "nope", "messages": hi}),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            json!({"model": "chat", "messages": [{"role": "user", "content": "word ".repeat(300)}]}),
            400,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
    ];
    for (body, status, param, code) in cases {
        let (got, reply) = s.post("/v1/chat/completions", body.to_string()).await;
        assert_eq!(got, status, "{body} -> {reply}");
        let e = error_of(&reply);
        assert_eq!(e["param"].as_str(), param, "{body} -> {reply}");
        if let Some(code) = code {
            assert_eq!(e["code"], code, "{body}");
        }
        assert_eq!(e["type"], "invalid_request_error", "{body}");
    }
    let (got, reply) = s.post("/v1/chat/completions", "{\"model\": ").await;
    assert_eq!(got, 400);
    assert!(
        error_of(&reply)["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (got, _) = s.post("/v1/chat/completions", "[1, 2]").await;
    assert_eq!(got, 400);
    let (got, reply) = s.post("/v1/chat/completions", "x".repeat(100 << 10)).await;
    assert_eq!(got, 413);
    assert_eq!(error_of(&reply)["code"], "request_too_large");
    let (got, reply) = s.post("/v1/nothing", "{}").await;
    assert_eq!(got, 404);
    error_of(&reply);
    let (got, reply) = s
        .post(
            "/v1/completions",
            json!({"model": "chat", "prompt": [1, 100000]}).to_string(),
        )
        .await;
    assert_eq!(
        (got, error_of(&reply)["param"].as_str()),
        (400, Some("prompt"))
    );
    // Unknown fields are ignored.
    let body = json!({"model": "chat", "messages": hi, "max_tokens": 2, "frobnicate": true});
    assert_eq!(
        s.post("/v1/chat/completions", body.to_string()).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limits_and_a_full_queue() {
    let s = Server::start(
        ServerConfig {
            keys: vec![ApiKey::new("ops", "sk-ops"), ApiKey::new("web", "sk-web")],
            per_key: 1,
            ..Default::default()
        },
        EngineConfig::default(),
    )
    .await;
    let send = |key: Option<&'static str>, body: Value| {
        let url = format!("{}/v1/chat/completions", s.base);
        async move {
            let mut r = reqwest::Client::new().post(url).json(&body);
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            r.send().await.unwrap()
        }
    };
    let hi = json!({"model": "chat", "messages": user("hi"), "max_tokens": 2});
    for key in [None, Some("sk-wrong")] {
        let r = send(key, hi.clone()).await;
        assert_eq!(r.status(), 401);
        assert_eq!(
            error_of(&r.json().await.unwrap())["code"],
            "invalid_api_key"
        );
    }
    assert_eq!(send(Some("sk-ops"), hi.clone()).await.status(), 200);
    // /health needs no key; the API does.
    let health = reqwest::get(format!("{}/health", s.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        reqwest::get(format!("{}/v1/models", s.base))
            .await
            .unwrap()
            .status(),
        401
    );
    // A stream not yet read to its end is a request still running: it holds the key's one.
    // (Four choices with twenty alternatives a token: about a megabyte, more than the socket
    // buffers hold, so it is still being sent.)
    let long = json!({"model": "chat", "messages": user("hi"), "max_tokens": 170, "n": 4,
                      "logprobs": true, "top_logprobs": 20, "stream": true});
    let mut held = send(Some("sk-ops"), long).await.bytes_stream();
    held.next().await.unwrap().unwrap();
    let r = send(Some("sk-ops"), hi.clone()).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    error_of(&r.json().await.unwrap());
    drop(held);
    // One slot and no waiting room: of eight requests at once, those that find the slot busy
    // get 503 with Retry-After.
    let one = Server::start(
        ServerConfig::default(),
        EngineConfig {
            parallel: 1,
            queue: 0,
            ..Default::default()
        },
    )
    .await;
    let many = futures_util::future::join_all((0..8).map(|i| {
        let body =
            json!({"model": "chat", "messages": user(&format!("hi {i}")), "max_tokens": 150});
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", one.base))
            .json(&body)
            .send();
        async move { r.await.unwrap() }
    }))
    .await;
    let busy: Vec<_> = many.into_iter().filter(|r| r.status() == 503).collect();
    assert!(!busy.is_empty(), "some found the slot busy");
    for r in busy {
        assert_eq!(r.headers()["retry-after"], "1");
        error_of(&r.json().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_streams_at_once_equal_the_same_requests_one_by_one() {
    let s = Server::start(
        ServerConfig::default(),
        EngineConfig {
            parallel: 8,
            ..Default::default()
        },
    )
    .await;
    let ask = |i: usize| {
        json!({"model": "chat", "messages": user(&format!("Question {i}: where is order {}?", i * 7)),
               "max_tokens": 16, "temperature": 0, "stream": true})
    };
    let mut alone = vec![];
    for i in 0..32 {
        alone.push(deltas(&s.stream(ask(i)).await));
    }
    let s = Arc::new(s);
    let together = futures_util::future::join_all((0..32).map(|i| {
        let s = s.clone();
        async move { s.stream(ask(i)).await }
    }))
    .await;
    for (i, events) in together.into_iter().enumerate() {
        assert_eq!(events.last().unwrap(), "[DONE]");
        assert_eq!(deltas(&events), alone[i], "stream {i}");
    }
    let stats = s.app.model(Some("chat")).unwrap();
    let st = stats.engine.stats();
    assert!(st.decode_rows.load(Ordering::Relaxed) > st.decode_steps.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_frees_its_slot() {
    let s = Server::default().await;
    let body = json!({"model": "chat", "messages": user("hi"), "max_tokens": 150, "stream": true});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut events = r.bytes_stream();
    events.next().await.unwrap().unwrap();
    drop(events);
    let m = s.app.model(Some("chat")).unwrap();
    let st = m.counts();
    for _ in 0..200 {
        if st.cancelled.load(Ordering::Relaxed) == 1 && st.busy.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(st.cancelled.load(Ordering::Relaxed), 1);
    assert_eq!(st.busy.load(Ordering::Relaxed), 0);
    assert!(st.completion_tokens.load(Ordering::Relaxed) < 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_waits_for_the_models_and_metrics_count_what_happened() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = App::new(ServerConfig::default());
    tokio::spawn(api::serve(listener, app.clone(), std::future::pending()));
    assert_eq!(
        reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .status(),
        503
    );
    let body = json!({"messages": user("hi")}).to_string();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let m = tokio::task::spawn_blocking(|| load("chat", &EngineConfig::default()))
        .await
        .unwrap();
    app.set_models(vec![m]);
    assert_eq!(
        reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .status(),
        200
    );
    let s = Server {
        base: base.clone(),
        app,
    };
    let (status, reply) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": user("hi"), "max_tokens": 5}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "one model: `model` may be left out");
    let n = reply["usage"]["completion_tokens"].as_f64().unwrap();
    let (_, tok) = s
        .post("/tokenize", json!({"prompt": "Orders ship"}).to_string())
        .await;
    let ids = tok["tokens"].clone();
    assert_eq!(tok["count"], ids.as_array().unwrap().len());
    let (_, text) = s
        .post("/detokenize", json!({"tokens": ids}).to_string())
        .await;
    assert_eq!(text["prompt"], "Orders ship");
    // The engine counts a request once it retires it, a step after the reply went out.
    let m = s.app.model(None).unwrap();
    while m.engine.stats().busy.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    assert_eq!(value("cria_requests_total{model=\"chat\"}"), 1.0);
    assert_eq!(value("cria_completion_tokens_total{model=\"chat\"}"), n);
    assert_eq!(value("cria_time_to_first_token_seconds_count"), 1.0);
    assert_eq!(value("cria_inter_token_latency_seconds_count"), n - 1.0);
    assert_eq!(value("cria_http_errors_total{status=\"503\"}"), 1.0);
    assert_eq!(value("cria_busy_slots{model=\"chat\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_elsewhere_get_cors_only_from_configured_origins() {
    let s = Server::start(
        ServerConfig {
            allow_origins: vec!["https://intranet.example".into()],
            keys: vec![ApiKey::new("web", "sk-web")],
            ..Default::default()
        },
        EngineConfig::default(),
    )
    .await;
    let c = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", s.base);
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://intranet.example").await.unwrap();
    assert_eq!(ok.status(), 204, "a preflight needs no key");
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://intranet.example"
    );
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let other = preflight("https://elsewhere.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let body = json!({"model": "chat", "messages": user("hi"), "max_tokens": 2});
    let r = c
        .post(&url)
        .header("origin", "https://intranet.example")
        .bearer_auth("sk-web")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://intranet.example"
    );
    let r = c
        .post(&url)
        .header("origin", "https://elsewhere.example")
        .bearer_auth("sk-web")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    // Without configured origins no response carries CORS headers.
    let plain = Server::default().await;
    let r = reqwest::Client::new()
        .get(format!("{}/v1/models", plain.base))
        .header("origin", "https://intranet.example")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

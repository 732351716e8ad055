//! The HTTP API on an ephemeral loopback port, driven by a real third-party OpenAI client
//! (async-openai) and by raw HTTP: response shapes the client parses, streaming, several
//! choices, seeds, stop strings, log-probabilities, tool calls, every error kind, 32 streams
//! at once, and a client that leaves.
//!
//! Models (scripts/ref/serve_fixtures.py): `chat`, a random LLaMA with Qwen2.5's template;
//! `tool_caller`, whose greedy reply is a Hermes tool call.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, CreateChatCompletionRequest, CreateChatCompletionResponse,
    FinishReason,
};
use async_openai::types::completions::CreateCompletionRequest;
use cria_core::{checkpoint, device};
use cria_data::chat::ChatFormat;
use cria_serve::api::keys::ApiKey;
use cria_serve::api::{self, App, ServerConfig};
use cria_serve::{EngineConfig, ServedModel};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str, cfg: &EngineConfig) -> ServedModel {
    let dir = fixture(name);
    let model = checkpoint::load_model(&dir, &device::inference_device()).unwrap();
    let tok = checkpoint::load_tokenizer(&dir, &model.cfg).unwrap();
    let fmt = ChatFormat::for_checkpoint(&dir, &tok).unwrap();
    ServedModel::start(
        name.into(),
        model,
        tok,
        fmt,
        dir.display().to_string(),
        cfg.clone(),
    )
}

struct Server {
    base: String,
    app: Arc<App>,
}

impl Server {
    async fn start(cfg: ServerConfig, engine: EngineConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = App::new(cfg);
        tokio::spawn(api::serve(listener, app.clone(), std::future::pending()));
        let models = tokio::task::spawn_blocking(move || {
            vec![load("chat", &engine), load("tool_caller", &engine)]
        })
        .await
        .unwrap();
        app.set_models(models);
        Server { base, app }
    }

    async fn default() -> Server {
        Server::start(ServerConfig::default(), EngineConfig::default()).await
    }

    fn client(&self) -> Client<OpenAIConfig> {
        let cfg = OpenAIConfig::new()
            .with_api_base(format!("{}/v1", self.base))
            .with_api_key("unused");
        Client::with_config(cfg)
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A streamed request's `data:` payloads, up to and including `[DONE]`.
    async fn stream(&self, body: Value) -> Vec<String> {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let text = r.text().await.unwrap();
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

fn chat_request(v: Value) -> CreateChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

async fn chat(s: &Server, v: Value) -> CreateChatCompletionResponse {
    s.client().chat().create(chat_request(v)).await.unwrap()
}

fn content(r: &CreateChatCompletionResponse, i: usize) -> String {
    r.choices[i].message.content.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_reads_models_and_chat_completions() {
    let s = Server::default().await;
    let models = s.client().models().list().await.unwrap();
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["chat", "tool_caller"]);
    assert_eq!(
        s.client().models().retrieve("chat").await.unwrap().id,
        "chat"
    );

    let ask = json!({"model": "chat", "messages": user("Where is my order?"), "max_tokens": 12,
                     "n": 3, "seed": 7, "temperature": 1.0, "logprobs": true, "top_logprobs": 3});
    let r = chat(&s, ask.clone()).await;
    assert_eq!(r.object, "chat.completion");
    assert_eq!(r.choices.len(), 3);
    let usage = r.usage.clone().unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(usage.completion_tokens, 36, "three choices of 12 tokens");
    for (i, c) in r.choices.iter().enumerate() {
        assert_eq!(c.index as usize, i);
        assert_eq!(c.finish_reason, Some(FinishReason::Length));
        let lp = c.logprobs.as_ref().unwrap().content.as_ref().unwrap();
        assert_eq!(lp.len(), 12);
        // The tokens' bytes spell the reply.
        let bytes: Vec<u8> = lp.iter().flat_map(|t| t.bytes.clone().unwrap()).collect();
        let spelled = String::from_utf8_lossy(&bytes);
        assert_eq!(
            spelled.trim_end_matches('\u{FFFD}'),
            content(&r, i).trim_end_matches('\u{FFFD}')
        );
        for t in lp {
            assert_eq!(t.top_logprobs.len(), 3);
            assert!(t.logprob <= 0.0 && t.top_logprobs[0].logprob >= t.top_logprobs[2].logprob);
        }
    }
    // Choices sample with seeds of their own; the same seed gives the same replies.
    assert_ne!(content(&r, 0), content(&r, 1));
    let again = chat(&s, ask).await;
    for i in 0..3 {
        assert_eq!(content(&r, i), content(&again, i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_says_what_the_whole_response_says() {
    let s = Server::default().await;
    let ask = json!({"messages": [{"role": "system", "content": "You answer briefly."},
                                  {"role": "user", "content": [{"type": "text", "text": "Returns?"}]}],
                     "model": "chat", "max_tokens": 20, "temperature": 0});
    let whole = chat(&s, ask.clone()).await;
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let mut stream = s
        .client()
        .chat()
        .create_stream(chat_request(streamed))
        .await
        .unwrap();
    let (mut text, mut roles, mut finish, mut usage) = (String::new(), 0, None, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        if let Some(u) = chunk.usage {
            assert!(chunk.choices.is_empty(), "the usage chunk has no choices");
            usage = Some(u);
        }
        for c in chunk.choices {
            roles += c.delta.role.is_some() as usize;
            text.push_str(&c.delta.content.unwrap_or_default());
            finish = finish.or(c.finish_reason);
        }
    }
    assert_eq!(roles, 1, "the first delta carries the role");
    assert_eq!(text, content(&whole, 0));
    assert_eq!(finish, Some(FinishReason::Length));
    assert_eq!(usage.unwrap().completion_tokens, 20);
    // The raw stream ends with [DONE].
    let raw = s
        .stream(json!({"model": "chat", "messages": user("hi"), "max_tokens": 3, "stream": true}))
        .await;
    assert_eq!(raw.last().unwrap(), "[DONE]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_split_across_tokens_ends_the_reply_and_is_not_returned() {
    let s = Server::default().await;
    let ask = |stop: Value, stream: bool| {
        json!({"model": "chat", "messages": user("Where is my order?"), "max_tokens": 40,
               "temperature": 0, "stop": stop, "stream": stream})
    };
    let full = content(&chat(&s, ask(Value::Null, false)).await, 0);
    // Up to six characters of the reply's longest stretch of whole characters: with 320
    // tokens they span several.
    let stretch: Vec<char> = full
        .split('\u{FFFD}')
        .max_by_key(|p| p.chars().count())
        .unwrap()
        .chars()
        .collect();
    assert!(stretch.len() >= 4, "a long enough reply: {full:?}");
    let from = (stretch.len() - 4).min(2);
    let stop: String = stretch[from..(from + 6).min(stretch.len())]
        .iter()
        .collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let r = chat(&s, ask(json!([stop.clone(), "no such text"]), false)).await;
    assert_eq!(content(&r, 0), cut);
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    let events = s.stream(ask(json!(stop), true)).await;
    let streamed: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, cut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_parsed_streamed_and_accepted_back() {
    let s = Server::default().await;
    let expected = cria_testkit::read_json(&fixture("tool_caller/expected.json"));
    // The prompt is the one transformers' apply_chat_template renders.
    let m = s.app.model(Some("tool_caller")).unwrap();
    let messages: Vec<Value> = expected["messages"].as_array().unwrap().clone();
    let tools: Vec<Value> = expected["tools"].as_array().unwrap().clone();
    let ids = m.chat_prompt(&messages, Some(tools.clone())).unwrap();
    assert_eq!(
        ids,
        cria_testkit::usizes(&expected["prompt_ids"])
            .iter()
            .map(|&i| i as u32)
            .collect::<Vec<_>>()
    );

    let ask =
        json!({"model": "tool_caller", "messages": messages, "tools": tools, "temperature": 0});
    let r = chat(&s, ask.clone()).await;
    let c = &r.choices[0];
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.message.content, None);
    let calls = c.message.tool_calls.as_ref().unwrap();
    let ChatCompletionMessageToolCalls::Function(call) = &calls[0] else {
        panic!("a function call: {calls:?}");
    };
    assert_eq!(call.function.name, "lookup_order");
    let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(args, json!({"order": "A-1001"}));

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let mut stream = s
        .client()
        .chat()
        .create_stream(chat_request(streamed))
        .await
        .unwrap();
    let (mut name, mut arguments, mut finish, mut text) =
        (String::new(), String::new(), None, String::new());
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            text.push_str(&c.delta.content.unwrap_or_default());
            for t in c.delta.tool_calls.unwrap_or_default() {
                let f = t.function.unwrap();
                name.push_str(&f.name.unwrap_or_default());
                arguments.push_str(&f.arguments.unwrap_or_default());
            }
            finish = finish.or(c.finish_reason);
        }
    }
    assert_eq!(
        (name.as_str(), finish),
        ("lookup_order", Some(FinishReason::ToolCalls))
    );
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), args);
    assert_eq!(text, "", "the call is not also sent as content");

    // The call and its result go back into the conversation.
    let mut turn = ask;
    let history = turn["messages"].as_array_mut().unwrap();
    history.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "lookup_order", "arguments": call.function.arguments}}]}));
    history.push(
        json!({"role": "tool", "tool_call_id": call.id, "content": "{\"status\": \"shipped\"}"}),
    );
    turn["max_tokens"] = json!(4);
    let r = chat(&s, turn).await;
    assert!(r.usage.unwrap().prompt_tokens > ids.len() as u32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_echo_the_prompt_with_its_log_probabilities() {
    let s = Server::default().await;
    let req: CreateCompletionRequest = serde_json::from_value(json!({
        "model": "chat", "prompt": "Orders ship within", "max_tokens": 4, "temperature": 0,
        "echo": true, "logprobs": 2}))
    .unwrap();
    let r = s.client().completions().create(req).await.unwrap();
    let c = &r.choices[0];
    assert!(c.text.starts_with("Orders ship within"), "{:?}", c.text);
    let lp = c.logprobs.as_ref().unwrap();
    let usage = r.usage.unwrap();
    assert_eq!(
        lp.tokens.len() as u32,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(
        lp.token_logprobs[0], None,
        "the first token has nothing before it"
    );
    assert!(
        lp.token_logprobs[1..]
            .iter()
            .all(|l| l.is_some_and(|l| l <= 0.0))
    );
    assert_eq!(lp.text_offset[0], 0);
    // Two prompts, two choices each: four choices in order.
    let req: CreateCompletionRequest = serde_json::from_value(json!({
        "model": "chat", "prompt": ["Orders ship", "Returns are"], "max_tokens": 3, "n": 2,
        "temperature": 0}))
    .unwrap();
    let r = s.client().completions().create(req).await.unwrap();
    let idx: Vec<u32> = r.choices.iter().map(|c| c.index).collect();
    assert_eq!(idx, [0, 1, 2, 3]);
    assert_eq!(r.choices[0].text, r.choices[1].text, "greedy choices agree");
    // Token ids work as a prompt too.
    let (status, body) = s
        .post(
            "/v1/completions",
            json!({"model": "chat", "prompt": [5, 6, 7], "max_tokens": 2}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
}

fn error_of(body: &Value) -> &Value {
    let e = &body["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "the error has `{k}`: {body}");
    }
    e
}

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
    let text = |events: Vec<String>| -> String {
        events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str::<Value>(e).unwrap())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    };
    let mut alone = vec![];
    for i in 0..32 {
        alone.push(text(s.stream(ask(i)).await));
    }
    let s = Arc::new(s);
    let together = futures_util::future::join_all((0..32).map(|i| {
        let s = s.clone();
        async move { s.stream(ask(i)).await }
    }))
    .await;
    for (i, events) in together.into_iter().enumerate() {
        assert_eq!(events.last().unwrap(), "[DONE]");
        assert_eq!(text(events), alone[i], "stream {i}");
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
    let st = m.engine.stats();
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

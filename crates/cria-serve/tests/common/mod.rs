//! What the HTTP tests share: the fixture models, a server on an ephemeral loopback port, a
//! real OpenAI client pointed at it, and readers of streams and errors.
#![allow(dead_code)]

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};
use cria_core::{checkpoint, device};
use cria_data::chat::ChatFormat;
use cria_serve::api::{self, App, ServerConfig};
use cria_serve::{EngineConfig, ServedModel};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load(name: &str, cfg: &EngineConfig) -> ServedModel {
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

pub struct Server {
    pub base: String,
    pub app: Arc<App>,
}

impl Server {
    pub async fn start(cfg: ServerConfig, engine: EngineConfig) -> Server {
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

    pub async fn default() -> Server {
        Server::start(ServerConfig::default(), EngineConfig::default()).await
    }

    pub fn client(&self) -> Client<OpenAIConfig> {
        let cfg = OpenAIConfig::new()
            .with_api_base(format!("{}/v1", self.base))
            .with_api_key("unused");
        Client::with_config(cfg)
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
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
    pub async fn stream(&self, body: Value) -> Vec<String> {
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

pub fn chat_request(v: Value) -> CreateChatCompletionRequest {
    serde_json::from_value(v).unwrap()
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

pub async fn chat(s: &Server, v: Value) -> CreateChatCompletionResponse {
    s.client().chat().create(chat_request(v)).await.unwrap()
}

pub fn content(r: &CreateChatCompletionResponse, i: usize) -> String {
    r.choices[i].message.content.clone().unwrap_or_default()
}

pub fn error_of(body: &Value) -> &Value {
    let e = &body["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "the error has `{k}`: {body}");
    }
    e
}

/// The content a raw stream's chunks carry for choice 0, in order.
pub fn deltas(events: &[String]) -> String {
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
}

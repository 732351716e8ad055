//! The teacher: any OpenAI-compatible endpoint the company runs (`cria serve`, a vLLM cluster
//! inside the firewall) over `/v1/completions` or `/v1/chat/completions`, or a checkpoint run
//! in this process on cria's own engine. HTTP requests are retried with backoff on 429, 5xx,
//! timeouts and dropped connections; anything else that is not an OpenAI answer is an error
//! that says what came back.

use crate::error::{InstructError, Result};
use cria_core::sampling::SamplingParams;
use cria_serve::api::text::Reply;
use cria_serve::{Event, Request, ServedModel};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Which API the prompts go through: a list continued (`completions`, as the published
/// pipeline), or the prompt as one user message (`chat`, for chat-only servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct Ask {
    pub prompt: String,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub presence_penalty: f64,
    pub stop: Vec<String>,
    pub seed: u64,
}

/// A teacher's reply: its text, and whether it ended at the length limit (cut off).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub cut: bool,
}

pub enum Teacher {
    Http(HttpTeacher),
    Local(LocalTeacher),
}

impl Teacher {
    pub async fn ask(&self, a: &Ask) -> Result<Answer> {
        match self {
            Teacher::Http(t) => t.ask(a).await,
            Teacher::Local(t) => t.ask(a).await,
        }
    }

    /// How the teacher is named in the provenance of what it wrote.
    pub fn name(&self) -> String {
        match self {
            Teacher::Http(t) => format!("{} ({})", t.model, t.base),
            Teacher::Local(t) => format!("{} (in process)", t.model.root),
        }
    }

    pub fn api(&self) -> Api {
        match self {
            Teacher::Http(t) => t.api,
            Teacher::Local(t) => t.api,
        }
    }
}

pub struct HttpTeacher {
    client: reqwest::Client,
    /// The API root, e.g. `http://10.0.0.5:8000/v1`.
    pub base: String,
    pub model: String,
    key: Option<String>,
    pub api: Api,
    retries: u32,
}

impl HttpTeacher {
    /// Connects to `base` (checking with `GET /models` that it answers as an OpenAI server
    /// does) and picks `model`, or the server's only model when none is named.
    pub async fn connect(
        base: &str,
        model: Option<&str>,
        key: Option<String>,
        api: Api,
        retries: u32,
        timeout: Duration,
    ) -> Result<HttpTeacher> {
        let base = base.trim_end_matches('/').to_string();
        let err = |msg: String| InstructError::Teacher {
            url: base.clone(),
            msg,
        };
        if base.starts_with("https://") {
            return Err(err(
                "this build speaks plain HTTP only; reach the teacher over http:// inside your \
                 network (or through a local TLS-terminating proxy)"
                    .into(),
            ));
        }
        if !base.starts_with("http://") {
            return Err(err(
                "expected an http:// URL of the API root, e.g. http://10.0.0.5:8000/v1".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut t = HttpTeacher {
            client,
            base: base.clone(),
            model: String::new(),
            key,
            api,
            retries,
        };
        let listed = t.send("GET", "/models", None).await.map_err(|e| match e {
            InstructError::Teacher { msg, .. } if msg.contains("404") => err(format!(
                "{msg}: not an OpenAI-compatible API root (it usually ends in /v1)"
            )),
            other => other,
        })?;
        let ids: Vec<String> = listed["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|m| m["id"].as_str().map(String::from))
                    .collect()
            })
            .ok_or_else(|| {
                err(format!(
                    "GET /models is not an OpenAI model list: {}",
                    short(&listed)
                ))
            })?;
        t.model = match model {
            Some(m) if ids.iter().any(|i| i == m) => m.to_string(),
            Some(m) => {
                return Err(err(format!(
                    "no model `{m}` there; it serves: {}",
                    ids.join(", ")
                )));
            }
            None if ids.len() == 1 => ids[0].clone(),
            None => {
                return Err(err(format!(
                    "it serves several models ({}): name one with --teacher-model",
                    ids.join(", ")
                )));
            }
        };
        Ok(t)
    }

    async fn ask(&self, a: &Ask) -> Result<Answer> {
        let mut body = json!({
            "model": self.model,
            "max_tokens": a.max_tokens,
            "temperature": a.temperature,
            "top_p": a.top_p,
            "presence_penalty": a.presence_penalty,
            "seed": a.seed,
        });
        if !a.stop.is_empty() {
            body["stop"] = json!(a.stop);
        }
        let (path, text_at): (&str, fn(&Value) -> Option<&str>) = match self.api {
            Api::Completions => {
                body["prompt"] = json!(a.prompt);
                ("/completions", |c| c["text"].as_str())
            }
            Api::Chat => {
                body["messages"] = json!([{"role": "user", "content": a.prompt}]);
                ("/chat/completions", |c| c["message"]["content"].as_str())
            }
        };
        let r = self.send("POST", path, Some(&body)).await?;
        let choice = &r["choices"][0];
        let text = text_at(choice).ok_or_else(|| InstructError::Teacher {
            url: self.base.clone(),
            msg: format!(
                "POST {path} did not answer as an OpenAI server does: {}",
                short(&r)
            ),
        })?;
        Ok(Answer {
            text: text.to_string(),
            cut: choice["finish_reason"] == "length",
        })
    }

    /// One request, retried with backoff on 429, 5xx, timeouts and lost connections.
    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let mut req = self.client.request(method.parse().expect("a method"), &url);
            if let Some(k) = &self.key {
                req = req.bearer_auth(k);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let (retry, msg, wait) = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let text = r.text().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        return serde_json::from_str(&text).map_err(|_| InstructError::Teacher {
                            url: self.base.clone(),
                            msg: format!(
                                "{method} {path} answered something that is not JSON: {}",
                                cut(&text)
                            ),
                        });
                    }
                    let retry = status == 429 || status >= 500;
                    (
                        retry,
                        format!("{method} {path} answered {status}: {}", cut(&text)),
                        after,
                    )
                }
                Err(e) if e.is_connect() => (true, format!("cannot connect ({e})"), None),
                Err(e) if e.is_timeout() => (true, format!("{method} {path} timed out"), None),
                Err(e) => (true, format!("{method} {path} failed: {e}"), None),
            };
            if !retry || attempt >= self.retries {
                let tries = if attempt > 0 {
                    format!(" (after {} tries)", attempt + 1)
                } else {
                    String::new()
                };
                return Err(InstructError::Teacher {
                    url: self.base.clone(),
                    msg: format!("{msg}{tries}"),
                });
            }
            let backoff = wait.map_or(
                Duration::from_millis(500 << attempt.min(5)),
                Duration::from_secs,
            );
            tracing::warn!(
                "teacher {}: {msg}; retrying in {:.1} s",
                self.base,
                backoff.as_secs_f64()
            );
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }
}

fn cut(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= 200 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(200).collect::<String>())
    }
}

fn short(v: &Value) -> String {
    cut(&v.to_string())
}

/// A checkpoint as the teacher, on cria's engine in this process (no server).
pub struct LocalTeacher {
    pub model: Arc<ServedModel>,
    pub api: Api,
}

impl LocalTeacher {
    async fn ask(&self, a: &Ask) -> Result<Answer> {
        let (model, a) = (self.model.clone(), a.clone());
        let api = self.api;
        tokio::task::spawn_blocking(move || generate(&model, api, &a))
            .await
            .map_err(|e| InstructError::Invalid(e.to_string()))?
    }
}

/// One reply from the local engine: stop strings end it (and are not part of it), as the
/// server's API does.
fn generate(model: &ServedModel, api: Api, a: &Ask) -> Result<Answer> {
    let bad = |e: String| InstructError::Invalid(format!("the local teacher: {e}"));
    let ids = match api {
        Api::Completions => model
            .tok
            .encode(&a.prompt, true)
            .map_err(|e| bad(e.to_string()))?,
        Api::Chat => model
            .chat_prompt(&[json!({"role": "user", "content": a.prompt})], None)
            .map_err(|e| bad(e.message))?,
    };
    let room = model.engine.max_len().saturating_sub(ids.len() + 1);
    if room == 0 {
        return Err(bad(format!(
            "the prompt has {} tokens; the model's context holds {}",
            ids.len(),
            model.engine.max_len()
        )));
    }
    let req = Request {
        max_new_tokens: a.max_tokens.min(room),
        prompt: ids,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_p: (a.top_p < 1.0).then_some(a.top_p),
            presence_penalty: a.presence_penalty as f32,
            seed: a.seed,
            ..Default::default()
        },
        stop_ids: model.stop_ids.clone(),
        model: model.index,
        ..Default::default()
    };
    let rx = model.engine.submit(req).map_err(|e| bad(e.to_string()))?;
    let mut dec = cria_core::tokenizer::StreamDecoder::new(&model.tok);
    let mut reply = Reply::new(a.stop.clone(), false);
    let mut text = String::new();
    let mut cut = false;
    for e in rx {
        match e {
            Event::Token { id, .. } if !model.stop_ids.contains(&id) => {
                text.push_str(&reply.push(&dec.push(id).unwrap_or_default()));
                if reply.stopped() {
                    break;
                }
            }
            Event::Done { finish, .. } => {
                cut = finish == cria_core::generate::Finish::Length;
                break;
            }
            _ => {}
        }
    }
    if !reply.stopped() {
        text.push_str(&reply.finish().content);
    }
    Ok(Answer {
        cut: cut && !reply.stopped(),
        text,
    })
}

/// Whether every address `host` names is on this machine or a private network (where a
/// company's own servers are); `None` when it does not resolve.
pub async fn is_private(base: &str) -> Option<bool> {
    let url = reqwest::Url::parse(base).ok()?;
    let host = url.host_str()?.trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()?
            .map(|a| a.ip())
            .collect(),
    };
    (!addrs.is_empty()).then(|| addrs.iter().all(private_ip))
}

fn private_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v) => {
            v.is_loopback()
                || (v.segments()[0] & 0xfe00) == 0xfc00
                || (v.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::5",
            "fe80::1",
        ] {
            assert!(private_ip(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:4860::8888"] {
            assert!(!private_ip(&ip.parse().unwrap()), "{ip}");
        }
    }
}

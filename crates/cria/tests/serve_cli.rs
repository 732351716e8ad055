//! `cria serve` as a process: it prints where it listens, reloads its checkpoint on SIGHUP
//! (a stream already running finishes), drains running streams on SIGTERM and exits 0, serves
//! a base with its adapters from a models file, reloads over HTTP with an admin key, and
//! refuses bad arguments with the file and line at fault.

mod common;
use common::{cria, run_err};
use cria_core::nn::lora::LoraConfig;
use cria_core::nn::prefix::PrefixConfig;
use cria_core::{checkpoint, device};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cria-serve/tests/fixtures")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

struct Served {
    child: Child,
    addr: String,
    lines: Receiver<String>,
}

impl Served {
    fn start(model: &Path) -> Served {
        Served::with(&["--model".into(), format!("assistant={}", model.display())])
    }

    fn with(args: &[String]) -> Served {
        let mut child = cria()
            .env("RUST_LOG", "info")
            .args(["serve", "--port", "0", "--parallel", "8"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut s = Served {
            child,
            addr: String::new(),
            lines,
        };
        let ready = s.wait_for("ready");
        let at = ready.find("http://").expect("the address is printed") + 7;
        s.addr = ready[at..].split('/').next().unwrap().to_string();
        s
    }

    fn wait_for(&mut self, what: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("`cria serve` never said {what:?}"));
            if l.contains(what) {
                return l;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Sends a request (a GET without a body); the stream is left open to read the response
    /// from.
    fn send(&self, path: &str, body: &str) -> TcpStream {
        self.send_as(path, body, "")
    }

    /// [`Served::send`] with extra header lines (each ending in `\r\n`).
    fn send_as(&self, path: &str, body: &str, headers: &str) -> TcpStream {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        let method = if body.is_empty() { "GET" } else { "POST" };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        s
    }

    /// A request's whole response body as JSON.
    fn json(&self, path: &str, body: &str) -> serde_json::Value {
        self.json_as(path, body, "").1
    }

    /// A request's status and whole response body as JSON.
    fn json_as(&self, path: &str, body: &str, headers: &str) -> (u16, serde_json::Value) {
        let mut s = self.send_as(path, body, headers);
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        (
            status,
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reply(s: &Served) -> String {
    reply_of(s, "assistant")
}

fn reply_of(s: &Served, model: &str) -> String {
    let r = s.json(
        "/v1/chat/completions",
        &format!(
            r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "Where is order A-1001?"}}], "max_tokens": 8, "temperature": 0}}"#
        ),
    );
    r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}

#[test]
fn sighup_serves_the_new_checkpoint_and_sigterm_drains_the_running_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("assistant");
    copy_dir(&fixture("chat"), &dir);
    let mut s = Served::start(&dir);
    let before = reply(&s);
    let models = s.json("/v1/models", "");
    assert_eq!(models["data"][0]["id"], "assistant");

    // A stream that runs across the reload finishes on the weights it started with.
    let long = r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 120, "stream": true, "temperature": 0}"#;
    let mut running = s.send("/v1/chat/completions", long);
    let mut first = [0u8; 64];
    running.read_exact(&mut first).unwrap();
    // A new checkpoint lands in the directory: the bigram model whose reply is a tool call.
    copy_dir(&fixture("tool_caller"), &dir);
    s.signal("-HUP");
    s.wait_for("reloaded");
    let mut rest = String::new();
    running.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("data: [DONE]"), "{rest}");
    assert!(rest.contains(r#""finish_reason":"length""#), "{rest}");
    let after = reply(&s);
    assert_ne!(before, after);
    assert_eq!(
        after,
        r#"<tool_call>{"name": "lookup_order", "arguments": {"order": "A-1001"}}</tool_call>"#
    );

    // SIGTERM: no new connections, the running stream still ends properly, exit 0.
    copy_dir(&fixture("chat"), &dir);
    s.signal("-HUP");
    s.wait_for("reloaded");
    // Eight choices with twenty alternatives per token: about 1.6 MB of events, more than the
    // socket buffers hold, so the stream is still running while it is not read.
    let big = r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 170, "n": 8,
                  "logprobs": true, "top_logprobs": 20, "stream": true}"#;
    let mut running = s.send("/v1/chat/completions", big);
    running.read_exact(&mut first).unwrap();
    s.signal("-TERM");
    s.wait_for("stopping");
    let mut rest = String::new();
    running.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("data: [DONE]"), "the stream was cut");
    // Every choice ended (at its length, or at the end-of-turn token it sampled).
    assert_eq!(rest.matches(r#""finish_reason":""#).count(), 8);
    // It finished after the signal: the server logged its completion only then.
    s.wait_for("chat completion");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(&s.addr).is_err());
}

#[test]
fn bad_arguments_are_refused_with_the_file_at_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let err = run_err(
        cria()
            .args(["serve", "--port", "0", "--model"])
            .arg(tmp.path()),
    );
    assert!(
        err.contains("is not a checkpoint directory (no config.json)"),
        "{err}"
    );
    let keys = tmp.path().join("keys.txt");
    std::fs::write(&keys, "ops:sk-1\nops:sk-2\n").unwrap();
    let err = run_err(
        cria()
            .args(["serve", "--port", "0", "--api-key-file"])
            .arg(&keys)
            .arg("--model")
            .arg(fixture("chat")),
    );
    assert!(
        err.contains("keys.txt:2: the name `ops` is given twice"),
        "{err}"
    );
    let err = run_err(
        cria()
            .args(["serve", "--port", "0", "--model"])
            .arg(format!("a={}", fixture("chat").display()))
            .arg("--model")
            .arg(format!("a={}", fixture("tool_caller").display())),
    );
    assert!(err.contains("the name `a` is given twice"), "{err}");
}

/// A LoRA adapter on every projection and a LLaMA-Adapter with open gates, both for the
/// `chat` fixture, written as `cria sft` writes them.
fn adapters(root: &Path) -> (PathBuf, PathBuf) {
    let base = checkpoint::load_model(&fixture("chat"), &device::inference_device()).unwrap();
    let cfg = LoraConfig {
        r: 4,
        target_modules: cria_core::nn::lora::MODULES.map(String::from).to_vec(),
        ..Default::default()
    };
    let mut lora = base.clone();
    lora.add_lora(&cfg, 3).unwrap();
    for block in &mut lora.layers {
        for (_, lin) in block.projections_mut() {
            if let Some(l) = &mut lin.lora {
                l.b = l.b.clone().ones_like() * 0.3;
            }
        }
    }
    let lora_dir = root.join("support-lora");
    lora.save_lora(&cfg, "chat", &lora_dir).unwrap();
    let mut prefix = base;
    let pcfg = PrefixConfig { len: 4, layers: 2 };
    prefix.add_prefix_adapter(&pcfg, 5).unwrap();
    for block in &mut prefix.layers {
        if let Some(p) = &mut block.self_attn.prefix {
            p.gate = p.gate.clone().ones_like() * 3.0;
            p.prompt = p.prompt.clone() * 50.0;
        }
    }
    let prefix_dir = root.join("legal-adapter");
    prefix
        .save_prefix_adapter(&pcfg, "chat", &prefix_dir)
        .unwrap();
    (lora_dir, prefix_dir)
}

#[test]
fn a_models_file_serves_a_base_with_its_adapters_and_an_admin_key_reloads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (lora, prefix) = adapters(tmp.path());
    let chat = fixture("chat");
    let file = tmp.path().join("models.toml");
    let models = format!(
        "[[model]]\nname = \"assistant\"\npath = \"{c}\"\n\n\
         [[model]]\nname = \"support\"\npath = \"{c}\"\nadapter = \"{l}\"\n\n\
         [[model]]\nname = \"legal\"\npath = \"{c}\"\nadapter = \"{p}\"\n",
        c = chat.display(),
        // Relative to the file.
        l = lora.file_name().unwrap().to_str().unwrap(),
        p = prefix.display()
    );
    std::fs::write(&file, &models).unwrap();
    let keys = tmp.path().join("admin.txt");
    std::fs::write(&keys, "ops:admin-secret\n").unwrap();
    let s = Served::with(&[
        "--models".into(),
        file.display().to_string(),
        "--admin-key-file".into(),
        keys.display().to_string(),
    ]);
    let listed = s.json("/v1/models", "");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["assistant", "support", "legal"]);
    assert_eq!(listed["data"][0]["parent"], serde_json::Value::Null);
    assert_eq!(listed["data"][1]["parent"], "assistant");
    assert_eq!(listed["data"][2]["root"], prefix.display().to_string());
    let replies: Vec<String> = ids.iter().map(|m| reply_of(&s, m)).collect();
    assert_ne!(
        replies[0], replies[1],
        "the LoRA adapter answers differently"
    );
    assert_ne!(
        replies[0], replies[2],
        "the LLaMA-Adapter answers differently"
    );
    assert_eq!(replies[1], reply_of(&s, "support"), "greedy replies repeat");

    // The admin route needs an admin key.
    let (status, body) = s.json_as("/admin/reload", "{}", "");
    assert_eq!(status, 401, "{body}");
    let (status, _) = s.json_as("/admin/reload", "{}", "Authorization: Bearer nope\r\n");
    assert_eq!(status, 401);
    let admin = "Authorization: Bearer admin-secret\r\n";
    // A reload reads the file again: a fourth model appears.
    std::fs::write(
        &file,
        format!(
            "{models}\n[[model]]\nname = \"support-2\"\npath = \"{}\"\nadapter = \"{}\"\n",
            chat.display(),
            lora.display()
        ),
    )
    .unwrap();
    let (status, body) = s.json_as("/admin/reload", "{}", admin);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"][3], "support-2");
    assert_eq!(reply_of(&s, "support-2"), replies[1]);
    // A reload that fails says why and leaves the models served.
    std::fs::write(&file, format!("{models}\n[[model]]\nname = \"x\"\n")).unwrap();
    let (status, body) = s.json_as("/admin/reload", "{}", admin);
    assert_eq!(status, 500, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("models.toml") && msg.contains("path"), "{msg}");
    assert_eq!(reply_of(&s, "support-2"), replies[1]);
}

#[test]
fn without_admin_keys_the_reload_route_is_closed() {
    let s = Served::start(&fixture("chat"));
    let (status, body) = s.json_as("/admin/reload", "{}", "Authorization: Bearer x\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--admin-key-file")
    );
}

#[test]
fn a_bad_models_file_is_refused_naming_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("models.toml");
    let chat = fixture("chat");
    let cases = [
        (
            format!(
                "[[model]]\nname = \"a\"\npath = \"{}\"\nadaptor = \"x\"\n",
                chat.display()
            ),
            "unknown field `adaptor`",
        ),
        (
            format!(
                "[[model]]\nname = \"a\"\npath = \"{}\"\nadapter = \"{}\"\n",
                chat.display(),
                tmp.path().display()
            ),
            "[[model]] 1 (`a`)",
        ),
        (String::new(), "no [[model]] tables"),
        (
            format!(
                "[[model]]\nname = \"a\"\npath = \"{c}\"\n[[model]]\nname = \"a\"\npath = \"{c}\"\n",
                c = chat.display()
            ),
            "the name `a` is given twice",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&file, &text).unwrap();
        let err = run_err(cria().args(["serve", "--port", "0", "--models"]).arg(&file));
        assert!(err.contains(want), "{want:?} in {err}");
        assert!(err.contains("models.toml"), "{err}");
    }
    let err = run_err(cria().args(["serve", "--port", "0"]));
    assert!(err.contains("--model"), "{err}");
}

/// A GGUF file served: `/v1/models` names it by its stem, a chat completion at temperature 0
/// answers as `cria chat` does on the same file, and an adapter on a GGUF file is refused
/// with the models file's entry named.
#[test]
fn serves_gguf_files() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("assistant-q8_0.gguf");
    common::export_gguf(&fixture("chat"), "q8_0", &file);
    let question = "Where do I send my expense report?";
    let chat = common::chat_output(
        &file,
        &format!("{question}\n"),
        &["--temperature", "0", "--max-new-tokens", "12"],
    );
    assert!(chat.status.success());
    let want = String::from_utf8_lossy(&chat.stdout).trim().to_string();
    assert!(!want.is_empty(), "cria chat answered nothing");
    let s = Served::with(&["--model".into(), file.display().to_string()]);
    let models = s.json("/v1/models", "");
    assert_eq!(models["data"][0]["id"], "assistant-q8_0", "{models}");
    let body = serde_json::json!({
        "model": "assistant-q8_0",
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 12,
    });
    let r = s.json("/v1/chat/completions", &body.to_string());
    let got = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(got.trim(), want, "{r}");
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{r}");
    drop(s);

    let models = tmp.path().join("models.toml");
    std::fs::write(
        &models,
        "[[model]]\nname = \"q\"\npath = \"assistant-q8_0.gguf\"\nadapter = \"lora\"\n",
    )
    .unwrap();
    let err = run_err(
        cria()
            .args(["serve", "--port", "0", "--models"])
            .arg(&models),
    );
    assert!(
        err.contains("[[model]] 1 (`q`)") && err.contains("cannot be applied to a GGUF file"),
        "{err}"
    );
}

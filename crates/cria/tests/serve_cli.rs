//! `cria serve` as a process: it prints where it listens, reloads its checkpoint on SIGHUP
//! (a stream already running finishes), drains running streams on SIGTERM and exits 0, and
//! refuses bad arguments with the file and line at fault.

mod common;
use common::{cria, run_err};
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
        let mut child = cria()
            .env("RUST_LOG", "info")
            .args(["serve", "--port", "0", "--parallel", "8", "--model"])
            .arg(format!("assistant={}", model.display()))
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
        let mut s = TcpStream::connect(&self.addr).unwrap();
        let method = if body.is_empty() { "GET" } else { "POST" };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        s
    }

    /// A request's whole response body as JSON.
    fn json(&self, path: &str, body: &str) -> serde_json::Value {
        let mut s = self.send(path, body);
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reply(s: &Served) -> String {
    let r = s.json(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Where is order A-1001?"}], "max_tokens": 8, "temperature": 0}"#,
    );
    r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
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

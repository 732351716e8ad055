//! The web chat page in a real browser: headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs) driven over its DevTools pipe types a message, presses Enter, and sees
//! the streamed reply — the tool_caller fixture's `<tool_call>{…}</tool_call>`, which must show
//! as text (a reply never becomes HTML). (docs/serve-web-chat.png is made by
//! scripts/web_screenshot.py, with the demo's model.)

mod common;
use common::load;
use cria_serve::EngineConfig;
use cria_serve::api::{self, App, ServerConfig};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Chromium with the DevTools protocol on a pipe: commands in on fd 3, replies and events out
/// on fd 4, each a JSON message ended by a NUL byte.
struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: Receiver<Value>,
    next: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let exe = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
            .expect("the web page's test needs Chromium: `apt-get install chromium` (.ci/run installs it)");
        let profile = tempfile::tempdir().unwrap();
        let (cmd_r, cmd_w) = std::io::pipe().unwrap();
        let (out_r, out_w) = std::io::pipe().unwrap();
        let (r, w) = (cmd_r.as_raw_fd(), out_w.as_raw_fd());
        let mut c = Command::new(exe);
        c.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2 between fork and exec, which is async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().unwrap();
        drop((cmd_r, out_w));
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut out_r = out_r;
            let mut buf = vec![];
            let mut chunk = [0u8; 65536];
            while let Ok(n) = out_r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&msg[..end]) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        Browser {
            child,
            to: cmd_w,
            from: rx,
            next: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends a command (to the page once attached) and waits for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut msg = json!({"id": self.next, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let v = self
                .from
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("Chromium did not answer {method}"));
            if v["id"] == json!(self.next) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url}));
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    }

    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    /// Waits until `js` is true.
    fn wait(&mut self, js: &str, what: &str) {
        let t0 = Instant::now();
        while self.eval(js) != json!(true) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_page_streams_a_reply_typed_in_a_real_browser_and_shows_it_as_text() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let app = App::new(ServerConfig::default());
        let cfg = EngineConfig::default();
        app.set_models(vec![load("chat", &cfg), load("tool_caller", &cfg)]);
        tokio::spawn(api::serve(listener, app, std::future::pending()));
        base
    });
    let mut b = Browser::start();
    b.open(&base);
    b.wait(
        "document.querySelector('#model')?.options.length === 2",
        "the model list",
    );
    // Pick the model whose reply is known, as a person would in the picker.
    b.eval("const s = document.querySelector('#model'); s.value = 'tool_caller'; s.dispatchEvent(new Event('change')); true");
    b.eval("document.querySelector('#input').focus(); true");
    b.call(
        "Input.insertText",
        json!({"text": "Where is order A-1001?"}),
    );
    let enter = json!({"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"});
    let mut down = enter.clone();
    down["type"] = json!("keyDown");
    b.call("Input.dispatchKeyEvent", down);
    let mut up = enter;
    up["type"] = json!("keyUp");
    b.call("Input.dispatchKeyEvent", up);
    b.wait(
        "document.querySelectorAll('.msg').length === 2 && !document.querySelector('.cursor')",
        "the streamed reply",
    );
    let user = b.eval("document.querySelector('.msg.user .body').textContent");
    assert_eq!(user, "Where is order A-1001?");
    let reply = b.eval("document.querySelector('.msg.assistant .body').textContent");
    assert_eq!(
        reply,
        r#"<tool_call>{"name": "lookup_order", "arguments": {"order": "A-1001"}}</tool_call>"#
    );
    assert_eq!(
        b.eval("document.querySelector('tool_call') === null"),
        json!(true),
        "escaped, not HTML"
    );
    assert_eq!(
        b.eval("document.querySelector('.error') === null"),
        json!(true)
    );
    // The conversation is kept in the browser and titled by its first message.
    let saved = b.eval("JSON.parse(localStorage.getItem('cria.conversations'))[0].messages.length");
    assert_eq!(saved, 2);
    assert_eq!(
        b.eval("document.querySelector('.conv .title').textContent"),
        "Where is order A-1001?"
    );
}

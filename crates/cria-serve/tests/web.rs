//! The web chat page in a real browser: headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs) driven over its DevTools pipe types a message, presses Enter, and sees
//! the streamed reply — the tool_caller fixture's `<tool_call>{…}</tool_call>`, which must show
//! as text (a reply never becomes HTML). (docs/serve-web-chat.png is made by
//! scripts/web_screenshot.py, with the demo's model.)

mod common;
use common::load;
use cria_serve::EngineConfig;
use cria_serve::api::{self, App, ServerConfig};
use cria_testkit::browser::Browser;
use serde_json::json;

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

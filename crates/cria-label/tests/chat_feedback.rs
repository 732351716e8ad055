//! Feedback from the chat page of `cria serve --feedback-db`, in a real browser: a thumb on a
//! reply and, after "regenerate", which of the two replies is better; both land in the labels
//! database and export as every label does.

mod common;
use common::chat_model;
use cria_label::{Db, export};
use cria_serve::api::{self, App, ServerConfig};
use cria_testkit::browser::Browser;
use serde_json::json;
use std::sync::Arc;

#[test]
fn thumbs_and_a_choice_after_regenerate_are_saved_as_labels() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("labels.sqlite")).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let app = App::new(ServerConfig::default());
        app.set_models(vec![chat_model("assistant")]);
        let feedback = cria_label::web::feedback::routes(db.clone());
        tokio::spawn(api::serve_with(
            listener,
            app,
            feedback,
            std::future::pending(),
        ));
        base
    });
    let mut b = Browser::start();
    b.open(&base);
    b.wait(
        "document.querySelector('#model')?.options.length === 1",
        "the model list",
    );
    // Sampled replies, so a regenerated one differs; short ones.
    b.eval("const t = document.querySelector('#temperature'); t.value = '1.5'; t.dispatchEvent(new Event('change')); \
            const m = document.querySelector('#max-tokens'); m.value = '12'; m.dispatchEvent(new Event('change')); true");
    b.eval("document.querySelector('#input').focus(); true");
    b.type_text("Where is order A-1001?");
    b.press("Enter", "Enter", 13, Some("\r"));
    b.wait(
        "document.querySelectorAll('.msg').length === 2 && !document.querySelector('.cursor') && [...document.querySelectorAll('.tools button')].some(x => x.textContent === '👍')",
        "the reply with its thumbs",
    );
    b.eval("[...document.querySelectorAll('.msg.assistant .tools button')].find(x => x.textContent === '👍').click(); true");
    b.wait(
        "!!document.querySelector('.msg.assistant.rated')",
        "the thumb saved",
    );
    // The replies as the page keeps them (the page shows them as Markdown).
    let reply = "JSON.parse(localStorage.getItem('cria.conversations'))[0].messages[1].content";
    let first = b.eval(reply);
    b.eval("[...document.querySelectorAll('.msg.assistant .tools button')].find(x => x.textContent === 'Regenerate').click(); true");
    b.wait(
        "!document.querySelector('.cursor') && !!document.querySelector('.compare')",
        "the which-is-better question",
    );
    let second = b.eval(reply);
    assert_ne!(first, second);
    b.eval("[...document.querySelectorAll('.compare button')].find(x => x.textContent === 'This one').click(); true");
    b.wait("!document.querySelector('.compare')", "the choice saved");

    let (ratings, _) = export::ratings(&db).unwrap();
    assert_eq!(ratings.len(), 1);
    assert_eq!(ratings[0]["label"], true);
    assert_eq!(
        ratings[0]["prompt"],
        json!([{"role": "user", "content": "Where is order A-1001?"}])
    );
    let (rankings, _) = export::rankings(&db, None, false).unwrap();
    assert_eq!(rankings.len(), 1);
    // The regenerated reply (second) was chosen over the first.
    assert_eq!(rankings[0]["responses"], json!([first, second]));
    assert_eq!(rankings[0]["ranking"], json!([1, 0]));
}

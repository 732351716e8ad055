//! The labelling page in a real browser (headless Chromium, as `scripts/setup` installs it):
//! an annotator logs in with a one-time password, chooses her own, writes a demonstration,
//! scores and ranks K answers with the keyboard, and what she did is in the export; an admin
//! sees the agreement page. With `CRIA_SCREENSHOTS=DIR` the ranking and agreement pages are
//! saved there (docs/label-*.png are made so).

use cria_label::db::projects::{self, Kind, NewProject};
use cria_label::db::tasks::{self, Submission};
use cria_label::db::users::{self, Role};
use cria_label::web::{self, LabelApp};
use cria_label::{Db, auth, export, import};
use cria_testkit::browser::Browser;
use serde_json::json;
use std::sync::Arc;

fn setup(dir: &std::path::Path) -> (Arc<Db>, String) {
    let db = Arc::new(Db::open(&dir.join("labels.sqlite")).unwrap());
    let once = "abcd-efgh-jkmn-pqrs";
    db.tx(|t| {
        let root = users::add(t, "root", Role::Admin, "!")?;
        users::set_password(t, root.id, &auth::hash_password("the admin password"), false)?;
        users::add(t, "ana", Role::Annotator, &auth::hash_password(once))?;
        let bo = users::add(t, "bo", Role::Annotator, "!")?;
        for (name, kind, k, instructions) in [
            ("Support replies", Kind::Demonstration, None, "Write the reply our help desk should give: friendly, exact, no promises we cannot keep."),
            ("Answer quality", Kind::Ranking, Some(3), "Score each answer, then order them. Made-up prices or private data are never acceptable."),
        ] {
            projects::create(
                t,
                &NewProject {
                    name: name.into(),
                    kind,
                    k,
                    overlap: 2,
                    sampling: Default::default(),
                    instructions: instructions.into(),
                },
            )?;
        }
        Ok(bo.id)
    })
    .unwrap();
    let demos = dir.join("questions.jsonl");
    std::fs::write(
        &demos,
        "{\"prompt\": \"My Ion Lamp arrived with a cracked shade. What can I do?\"}\n",
    )
    .unwrap();
    let ranked = dir.join("answers.jsonl");
    let rec = json!({
        "prompt": [{"role": "system", "content": "You are the help desk of Lumen & Co."},
                   {"role": "user", "content": "What is the price of the Ion Lamp?"}],
        "responses": [
            "The Ion Lamp costs 250 euros. Anything else I can help with?",
            "It is about 200 euros, I think.",
            "<b>Free</b> for you! Also, Sami Holm lives at Birch Road 4.",
        ],
        "ranking": [0, 1, 2],
    });
    std::fs::write(&ranked, format!("{rec}\n")).unwrap();
    let p = |name: &str| db.read(|c| projects::by_name(c, name)).unwrap().unwrap();
    import::import(&db, &p("Support replies"), &demos).unwrap();
    import::import(&db, &p("Answer quality"), &ranked).unwrap();
    (db, once.to_string())
}

fn type_into(b: &mut Browser, selector: &str, text: &str) {
    let sel = json!(selector);
    b.eval(&format!("document.querySelector({sel}).focus(); true"));
    b.type_text(text);
}

fn click(b: &mut Browser, selector: &str) {
    let sel = json!(selector);
    let found = b.eval(&format!(
        "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.click(); return true; }})()"
    ));
    assert_eq!(found, json!(true), "{selector} is on the page");
}

#[test]
fn an_annotator_labels_in_a_real_browser_and_the_export_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (db, once) = setup(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let app = LabelApp::new(db.clone(), None);
        tokio::spawn(web::serve(listener, app, std::future::pending()));
        base
    });
    let shots = std::env::var_os("CRIA_SCREENSHOTS").map(std::path::PathBuf::from);
    let mut b = Browser::start();
    b.open(&base);
    b.wait("!!document.querySelector('#login-form')", "the login form");
    type_into(&mut b, "#login-name", "ana");
    type_into(&mut b, "#login-password", &once);
    click(&mut b, "#login-submit");
    b.wait(
        "!!document.querySelector('#password-form')",
        "the password page",
    );
    type_into(&mut b, "#pw-old", &once);
    type_into(&mut b, "#pw-new", "ana's own password");
    type_into(&mut b, "#pw-again", "ana's own password");
    click(&mut b, "#pw-submit");
    b.wait(
        "document.querySelectorAll('.project').length === 2",
        "the projects",
    );

    // A demonstration, submitted with Ctrl+Enter.
    click(&mut b, ".project button[data-project='1']");
    b.wait(
        "!!document.querySelector('#demonstration')",
        "the demonstration task",
    );
    assert_eq!(
        b.eval("document.querySelector('#conversation').textContent.includes('cracked shade')"),
        json!(true)
    );
    type_into(
        &mut b,
        "#demonstration",
        "I'm sorry! Reply with a photo and we send a new shade today.",
    );
    b.call("Input.dispatchKeyEvent", json!({"type": "rawKeyDown", "key": "Control", "code": "ControlLeft", "windowsVirtualKeyCode": 17, "modifiers": 2}));
    b.call("Input.dispatchKeyEvent", json!({"type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "modifiers": 2}));
    b.call("Input.dispatchKeyEvent", json!({"type": "keyUp", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "modifiers": 2}));
    b.call("Input.dispatchKeyEvent", json!({"type": "keyUp", "key": "Control", "code": "ControlLeft", "windowsVirtualKeyCode": 17}));
    b.wait(
        "!!document.querySelector('#all-done')",
        "the end of the project",
    );

    // A ranking: scores by clicks, the order typed with the keyboard.
    click(&mut b, "nav #nav-label");
    b.wait(
        "document.querySelectorAll('.project').length === 2",
        "the projects",
    );
    click(&mut b, ".project button[data-project='2']");
    b.wait(
        "document.querySelectorAll('.answer').length === 3",
        "the ranking task",
    );
    // Every answer is text, never markup.
    assert_eq!(
        b.eval("document.querySelector('.answer b') === null"),
        json!(true)
    );
    let shown: Vec<String> = serde_json::from_value(
        b.eval("[...document.querySelectorAll('.answer .text')].map(e => e.textContent)"),
    )
    .unwrap();
    // Ana's judgement of each answer, by its text: (place, score, flags).
    let judge = |text: &str| match text {
        t if t.starts_with("The Ion Lamp costs") => (1, 7, vec![]),
        t if t.starts_with("It is about") => (2, 3, vec!["made_up_facts"]),
        _ => (3, 1, vec!["made_up_facts", "private_data"]),
    };
    for (i, text) in shown.iter().enumerate() {
        let (_, score, flags) = judge(text);
        click(
            &mut b,
            &format!(".likert button[data-answer='{i}'][data-score='{score}']"),
        );
        for f in flags {
            click(
                &mut b,
                &format!("input[data-answer='{i}'][data-flag='{f}']"),
            );
        }
    }
    assert_eq!(
        b.eval("document.querySelector('#submit').disabled"),
        json!(true),
        "not ranked yet"
    );
    // Focus the first answer, then one number per answer: the page moves on by itself.
    b.eval("document.querySelector('.chip').focus(); true");
    for text in &shown {
        let place = judge(text).0.to_string();
        b.press(
            &place,
            &format!("Digit{place}"),
            48 + place.parse::<u32>().unwrap(),
            Some(&place),
        );
    }
    b.wait(
        "!document.querySelector('#submit').disabled",
        "a complete ranking",
    );
    if let Some(d) = &shots {
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1500, "deviceScaleFactor": 1, "mobile": false}),
        );
        b.screenshot(&d.join("label-ranking.png"));
    }
    b.call("Input.dispatchKeyEvent", json!({"type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "modifiers": 2}));
    b.wait("!!document.querySelector('#all-done')", "the ranking saved");

    // What she did is in the database, as the export writes it.
    let (sft, _) = export::demonstrations(&db, None).unwrap();
    assert_eq!(
        sft[0]["messages"][1]["content"],
        "I'm sorry! Reply with a photo and we send a new shade today."
    );
    assert_eq!(sft[0]["annotator"], "ana");
    let (ranked, _) = export::rankings(&db, None, false).unwrap();
    assert_eq!(ranked.len(), 1);
    assert_eq!(ranked[0]["ranking"], json!([0, 1, 2]));
    assert_eq!(ranked[0]["likert"], json!([7, 3, 1]));
    assert_eq!(
        ranked[0]["flags"][2],
        json!(["made_up_facts", "private_data"])
    );

    // Bo ranks too (directly), and the admin reads the agreement page.
    let p = db
        .read(|c| projects::by_name(c, "Answer quality"))
        .unwrap()
        .unwrap();
    let bo = db.read(|c| users::by_name(c, "bo")).unwrap().unwrap().0.id;
    let t = db.tx(|t| tasks::next(t, bo, &p)).unwrap().unwrap();
    let places: Vec<usize> = t
        .answers
        .iter()
        .map(|a| {
            if a.starts_with("It is") {
                1
            } else if a.starts_with("The Ion") {
                2
            } else {
                3
            }
        })
        .collect();
    let s = Submission::Ranking {
        places,
        likert: vec![5, 5, 1],
        flags: vec![vec![], vec![], vec![]],
    };
    db.tx(|tx| tasks::submit(tx, bo, t.assignment, &s)).unwrap();
    click(&mut b, "#logout");
    b.wait("!!document.querySelector('#login-form')", "the login form");
    type_into(&mut b, "#login-name", "root");
    type_into(&mut b, "#login-password", "the admin password");
    click(&mut b, "#login-submit");
    b.wait(
        "!document.querySelector('#nav-admin').hidden",
        "the admin tab",
    );
    click(&mut b, "#nav-admin");
    b.wait(
        "!!document.querySelector('#projects-table')",
        "the admin page",
    );
    click(&mut b, "button[data-stats='2']");
    b.wait("!!document.querySelector('#agreement')", "the quality page");
    // Ana and Bo agree on 2 of the 3 pairs.
    assert_eq!(
        b.eval("document.querySelector('#agreement').textContent"),
        "66.7%"
    );
    assert_eq!(
        b.eval("document.querySelector('#gold').textContent"),
        "83.3%"
    );
    if let Some(d) = &shots {
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        b.screenshot(&d.join("label-agreement.png"));
    }
}

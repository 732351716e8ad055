//! The labelling application over HTTP, each access rule tested: login needs its token and
//! the right password, is rate-limited, and opens an HttpOnly SameSite=Strict session; every
//! change needs the session's CSRF token; a one-time password must be replaced first;
//! annotators reach neither admin routes nor other people's tasks; admins import, watch
//! agreement and export.

use cria_label::db::users::{self, Role};
use cria_label::web::{self, LabelApp};
use cria_label::{Db, auth};
use serde_json::{Value, json};
use std::sync::Arc;

struct Server {
    base: String,
    db: Arc<Db>,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("labels.sqlite")).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = LabelApp::new(db.clone(), None);
    tokio::spawn(web::serve(listener, app, std::future::pending()));
    Server {
        base,
        db,
        _dir: dir,
    }
}

impl Server {
    /// A person who has chosen their password already.
    fn person(&self, name: &str, role: Role, password: &str) {
        self.db
            .tx(|t| {
                let u = users::add(t, name, role, "!")?;
                users::set_password(t, u.id, &auth::hash_password(password), false)
            })
            .unwrap();
    }
}

/// A browser's worth of state: cookies and the CSRF token.
struct Client {
    base: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
    csrf: Option<String>,
}

struct Answer {
    status: u16,
    body: Value,
    set_cookie: Vec<String>,
    retry_after: Option<String>,
}

impl Client {
    fn new(s: &Server) -> Client {
        Client {
            base: s.base.clone(),
            http: reqwest::Client::new(),
            cookies: vec![],
            csrf: None,
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<Value>, csrf: bool) -> Answer {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            r = r.header("cookie", c.join("; "));
        }
        if let (true, Some(t)) = (csrf, &self.csrf) {
            r = r.header("x-csrf-token", t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let set_cookie: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookie {
            let (kv, _) = c.split_once(';').unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.into(), v.into()));
            }
        }
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            set_cookie,
            retry_after,
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None, false).await
    }

    async fn post(&mut self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(body), true).await
    }

    async fn login(&mut self, name: &str, password: &str) -> Answer {
        let t = self.get("/api/csrf").await.body["csrf"]
            .as_str()
            .unwrap()
            .to_string();
        self.csrf = Some(t);
        let a = self
            .post("/api/login", json!({"name": name, "password": password}))
            .await;
        if a.status == 200 {
            self.csrf = a.body["csrf"].as_str().map(String::from);
        }
        a
    }
}

/// A JSONL body's records (one record parses as plain JSON).
fn records(a: &Answer) -> Vec<Value> {
    match &a.body {
        Value::String(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        one => vec![one.clone()],
    }
}

fn message(a: &Answer) -> String {
    a.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn login_opens_a_strict_http_only_session_and_changes_need_its_csrf_token() {
    let s = server().await;
    s.person("root", Role::Admin, "correct horse battery");
    let mut c = Client::new(&s);
    assert_eq!(c.get("/api/me").await.status, 401);
    // No login token: refused (another site cannot log this browser in).
    let a = c
        .send(
            "POST",
            "/api/login",
            Some(json!({"name": "root", "password": "correct horse battery"})),
            false,
        )
        .await;
    assert_eq!(a.status, 403, "{}", message(&a));
    let a = c.login("root", "wrong").await;
    assert_eq!(a.status, 401);
    assert_eq!(message(&a), "wrong name or password");
    let a = c.login("nobody", "wrong").await;
    assert_eq!(
        message(&a),
        "wrong name or password",
        "unknown names look the same"
    );
    let a = c.login("root", "correct horse battery").await;
    assert_eq!(a.status, 200, "{}", message(&a));
    let session = a
        .set_cookie
        .iter()
        .find(|c| c.starts_with("cria_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert_eq!(c.get("/api/me").await.body["role"], "admin");
    // A change without the token, or with another, is refused.
    let a = c.send("POST", "/api/logout", Some(json!({})), false).await;
    assert_eq!(a.status, 403);
    let real = c.csrf.replace("0".repeat(64)).unwrap();
    assert_eq!(c.post("/api/logout", json!({})).await.status, 403);
    c.csrf = Some(real);
    assert_eq!(c.post("/api/logout", json!({})).await.status, 200);
    assert_eq!(c.get("/api/me").await.status, 401, "logged out");
}

#[tokio::test]
async fn logins_are_rate_limited() {
    let s = server().await;
    s.person("ana", Role::Annotator, "a long password");
    let mut c = Client::new(&s);
    for _ in 0..5 {
        assert_eq!(c.login("ana", "guess").await.status, 401);
    }
    // Locked now, even with the right password.
    let a = c.login("ana", "a long password").await;
    assert_eq!(a.status, 429, "{}", message(&a));
    assert!(a.retry_after.is_some());
    assert!(message(&a).contains("too many failed logins"));
}

#[tokio::test]
async fn a_one_time_password_must_be_replaced_before_anything_else() {
    let s = server().await;
    s.person("root", Role::Admin, "admin password!");
    let mut admin = Client::new(&s);
    admin.login("root", "admin password!").await;
    let a = admin
        .post(
            "/api/admin/users",
            json!({"name": "ana", "role": "annotator"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", message(&a));
    let once = a.body["password"].as_str().unwrap().to_string();
    let mut ana = Client::new(&s);
    let a = ana.login("ana", &once).await;
    assert_eq!(a.body["must_change"], true);
    let a = ana.get("/api/projects").await;
    assert_eq!(a.status, 403);
    assert!(message(&a).contains("choose your own password"));
    let a = ana
        .post("/api/password", json!({"old": once, "new": "short"}))
        .await;
    assert_eq!(a.status, 400);
    let a = ana
        .post(
            "/api/password",
            json!({"old": "not it", "new": "a good long one"}),
        )
        .await;
    assert_eq!(a.status, 403);
    let a = ana
        .post(
            "/api/password",
            json!({"old": once, "new": "a good long one"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", message(&a));
    assert_eq!(ana.get("/api/projects").await.status, 200);
    // The one-time password is gone.
    assert_eq!(Client::new(&s).login("ana", &once).await.status, 401);
    // An admin's reset gives a new one-time password and ends her sessions.
    let users = admin.get("/api/admin/users").await.body;
    let id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "ana")
        .unwrap()["id"]
        .clone();
    let a = admin
        .post(&format!("/api/admin/users/{id}/reset"), json!({}))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(ana.get("/api/me").await.status, 401);
}

#[tokio::test]
async fn annotators_reach_neither_admin_pages_nor_other_peoples_tasks() {
    let s = server().await;
    s.person("root", Role::Admin, "admin password!");
    s.person("ana", Role::Annotator, "ana password!");
    s.person("bo", Role::Annotator, "bo password!!");
    let mut admin = Client::new(&s);
    admin.login("root", "admin password!").await;
    let a = admin
        .post(
            "/api/admin/projects",
            json!({"name": "support", "kind": "demonstration", "overlap": 1, "instructions": "Be kind."}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", message(&a));
    let id = a.body["project"]["id"].as_i64().unwrap();
    let upload = |body: &'static str| {
        let base = s.base.clone();
        let cookies = admin.cookies.clone();
        let csrf = admin.csrf.clone().unwrap();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/admin/projects/{id}/prompts"))
                .header(
                    "cookie",
                    cookies
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
                .header("x-csrf-token", csrf)
                .header("x-file-name", "support.jsonl")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = upload("{\"prompt\": \"Refund?\"}\n{\"prompt\": 3}\n").await;
    assert_eq!(status, 400);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("support.jsonl:2"),
        "the upload's own name and line: {msg}"
    );
    let (status, body) = upload("{\"prompt\": \"Refund?\"}\n").await;
    assert_eq!((status, body["imported"].clone()), (200, json!(1)));

    let mut ana = Client::new(&s);
    ana.login("ana", "ana password!").await;
    for path in [
        "/api/admin/users",
        "/api/admin/projects",
        "/api/admin/export?what=sft",
    ] {
        let a = ana.get(path).await;
        assert_eq!(a.status, 403, "{path}");
    }
    let a = ana
        .post("/api/admin/users", json!({"name": "eve", "role": "admin"}))
        .await;
    assert_eq!(a.status, 403);
    let task = ana
        .post(&format!("/api/projects/{id}/next"), json!({}))
        .await
        .body["task"]
        .clone();
    assert_eq!(task["instructions"], "Be kind.");
    let t = task["assignment"].as_i64().unwrap();
    let mut bo = Client::new(&s);
    bo.login("bo", "bo password!!").await;
    assert_eq!(bo.get(&format!("/api/tasks/{t}")).await.status, 404);
    let a = bo
        .post(
            &format!("/api/tasks/{t}"),
            json!({"type": "demonstration", "text": "mine now"}),
        )
        .await;
    assert_eq!(a.status, 404);
    // Overlap 1: nothing is left for Bo while Ana holds the only prompt.
    let a = bo
        .post(&format!("/api/projects/{id}/next"), json!({}))
        .await;
    assert_eq!(a.body["task"], Value::Null);
    let a = ana
        .post(
            &format!("/api/tasks/{t}"),
            json!({"type": "demonstration", "text": "We refund within 14 days."}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", message(&a));
    let a = ana
        .post(
            &format!("/api/tasks/{t}"),
            json!({"type": "demonstration", "text": "again"}),
        )
        .await;
    assert_eq!(a.status, 409);
    let a = ana
        .post(
            &format!("/api/tasks/{t}"),
            json!({"type": "demonstration", "txt": "typo"}),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = admin.get("/api/admin/export?what=sft").await;
    assert_eq!(a.status, 200);
    let line = &records(&a)[0];
    assert_eq!(line["messages"][1]["content"], "We refund within 14 days.");
    assert_eq!(line["annotator"], "ana");
}

#[tokio::test]
async fn admins_see_agreement_on_overlapping_rankings_and_gold_items() {
    let s = server().await;
    s.person("root", Role::Admin, "admin password!");
    let mut admin = Client::new(&s);
    admin.login("root", "admin password!").await;
    let a = admin
        .post(
            "/api/admin/projects",
            json!({"name": "rank", "kind": "ranking", "k": 3, "overlap": 2}),
        )
        .await;
    let id = a.body["project"]["id"].as_i64().unwrap();
    // Gold items bring their answers: labellable without a model.
    let gold = (0..2)
        .map(|i| json!({"prompt": format!("q{i}"), "responses": ["best", "middle", "worst"], "ranking": [0, 1, 2]}).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gold.jsonl");
    std::fs::write(&f, gold).unwrap();
    let p =
        s.db.read(|c| cria_label::db::projects::by_id(c, id))
            .unwrap()
            .unwrap();
    cria_label::import::import(&s.db, &p, &f).unwrap();
    for (name, flip) in [("ana", false), ("bo", true)] {
        s.person(name, Role::Annotator, "long enough pw");
        let mut c = Client::new(&s);
        c.login(name, "long enough pw").await;
        loop {
            let task = c
                .post(&format!("/api/projects/{id}/next"), json!({}))
                .await
                .body["task"]
                .clone();
            if task.is_null() {
                break;
            }
            // Ana ranks as the gold does; Bo swaps the last two.
            let places: Vec<usize> = task["answers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| match (a.as_str().unwrap(), flip) {
                    ("best", _) => 1,
                    ("middle", false) | ("worst", true) => 2,
                    _ => 3,
                })
                .collect();
            let t = task["assignment"].as_i64().unwrap();
            let a = c
                .post(
                    &format!("/api/tasks/{t}"),
                    json!({"type": "ranking", "places": places, "likert": [7, 4, 1], "flags": [[], ["made_up_facts"], []]}),
                )
                .await;
            assert_eq!(a.status, 200, "{}", message(&a));
        }
    }
    let st = admin
        .get(&format!("/api/admin/projects/{id}/stats"))
        .await
        .body;
    // Per prompt 3 pairs, Ana and Bo agree on 2: 4 of 6.
    assert_eq!(
        st["quality"]["agreement"],
        json!({"agreed": 4, "compared": 6})
    );
    assert_eq!(
        st["quality"]["annotators"]["ana"]["with_gold"],
        json!({"agreed": 6, "compared": 6})
    );
    assert_eq!(
        st["quality"]["annotators"]["bo"]["with_gold"],
        json!({"agreed": 4, "compared": 6})
    );
    assert_eq!(st["quality"]["flags"]["made_up_facts"], 4);
    assert_eq!(st["progress"]["done"], 4);
    let a = admin
        .get("/api/admin/export?what=rankings&merge=true")
        .await;
    let lines = records(&a);
    assert_eq!(lines.len(), 2);
    // One vote each way on middle vs worst: they tie.
    assert_eq!(lines[0]["responses"], json!(["best", "middle", "worst"]));
    assert_eq!(lines[0]["ranking"], json!([0, [1, 2]]));
}

//! `cria label` end to end, as a company would run it: people and projects from the command
//! line, prompts imported, K answers sampled by a model, three annotators labelling over HTTP,
//! agreement, export, and `cria rm` training on the export; and a server killed with SIGKILL
//! in the middle of a burst of submissions loses none it acknowledged.

mod common;
use common::{Spawned, cria, run_err, run_ok};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cria-serve/tests/fixtures")
        .join(name)
}

fn label(db: &Path, args: &[&str]) -> String {
    let out = run_ok(cria().arg("label").args(args).arg("--db").arg(db));
    String::from_utf8(out.stdout).unwrap()
}

/// The one-time password `cria label user add` printed.
fn add_user(db: &Path, name: &str, role: &str) -> String {
    let out = label(db, &["user", "add", name, "--role", role]);
    out.trim().rsplit(' ').next().unwrap().to_string()
}

/// `cria label serve` on a free port.
fn label_server(db: &Path) -> Spawned {
    Spawned::start(&[
        "label",
        "serve",
        "--port",
        "0",
        "--db",
        db.to_str().unwrap(),
    ])
}

/// One person's browser: raw HTTP/1.1 with the session cookie and CSRF token.
struct Person {
    addr: String,
    cookies: Vec<String>,
    csrf: String,
}

impl Person {
    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let cookie = if self.cookies.is_empty() {
            String::new()
        } else {
            format!("Cookie: {}\r\n", self.cookies.join("; "))
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{cookie}X-CSRF-Token: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.csrf,
            body.len()
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no response"))?;
        let status = head[9..12].parse().unwrap();
        for l in head.lines() {
            if let Some(c) = l.strip_prefix("set-cookie: ") {
                let kv = c.split(';').next().unwrap().to_string();
                let name = kv.split('=').next().unwrap().to_string();
                self.cookies.retain(|x| !x.starts_with(&format!("{name}=")));
                if !kv.ends_with('=') {
                    self.cookies.push(kv);
                }
            }
        }
        Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
    }

    /// Logs in (choosing `new` as the password when given a one-time one).
    fn login(addr: &str, name: &str, password: &str, new: &str) -> Person {
        let mut p = Person {
            addr: addr.into(),
            cookies: vec![],
            csrf: String::new(),
        };
        let (_, t) = p.request("GET", "/api/csrf", None).unwrap();
        p.csrf = t["csrf"].as_str().unwrap().into();
        let (status, me) = p
            .request(
                "POST",
                "/api/login",
                Some(&json!({"name": name, "password": password})),
            )
            .unwrap();
        assert_eq!(status, 200, "{me}");
        p.csrf = me["csrf"].as_str().unwrap().into();
        if me["must_change"] == json!(true) {
            let (status, r) = p
                .request(
                    "POST",
                    "/api/password",
                    Some(&json!({"old": password, "new": new})),
                )
                .unwrap();
            assert_eq!(status, 200, "{r}");
        }
        p
    }

    fn next(&mut self, project: i64) -> Value {
        let (status, r) = self
            .request(
                "POST",
                &format!("/api/projects/{project}/next"),
                Some(&json!({})),
            )
            .unwrap();
        assert_eq!(status, 200, "{r}");
        r["task"].clone()
    }
}

fn project_ids(p: &mut Person) -> Vec<(String, i64)> {
    let (_, r) = p.request("GET", "/api/projects", None).unwrap();
    r["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_string(),
                x["id"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn from_prompts_to_a_reward_model_trained_on_the_export() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("labels.sqlite");
    let root = add_user(&db, "root", "admin");
    assert_eq!(root.len(), 19, "a one-time password is printed");
    let people: Vec<(&str, String)> = ["ana", "bo", "cy"]
        .iter()
        .map(|n| (*n, add_user(&db, n, "annotator")))
        .collect();
    label(
        &db,
        &[
            "project",
            "add",
            "support",
            "--kind",
            "ranking",
            "--k",
            "3",
            "--overlap",
            "3",
            "--max-tokens",
            "10",
        ],
    );
    label(
        &db,
        &["project", "add", "replies", "--kind", "demonstration"],
    );
    let prompts = tmp.path().join("prompts.jsonl");
    let text: String = (0..6)
        .map(|i| format!("{}\n", json!({"messages": [{"role": "user", "content": format!("Where is order A-10{i}?")}]})))
        .collect();
    std::fs::write(&prompts, text).unwrap();
    let out = label(
        &db,
        &["import", "--project", "support", prompts.to_str().unwrap()],
    );
    assert!(out.contains("6 prompts imported"), "{out}");
    label(
        &db,
        &["import", "--project", "replies", prompts.to_str().unwrap()],
    );
    let out = label(
        &db,
        &["sample", "--model", fixture("chat").to_str().unwrap()],
    );
    assert!(out.contains("answers sampled for 6 prompts"), "{out}");
    let listed = label(&db, &["project", "list"]);
    assert!(
        listed.contains("support\tranking\tK=3\toverlap=3\tprompts=6\tready=6"),
        "{listed}"
    );

    let server = label_server(&db);
    let mut admin = Person::login(&server.addr, "root", &root, "the admin's own password");
    let ids = project_ids(&mut admin);
    let (support, replies) = (ids[0].1, ids[1].1);
    for (k, (name, once)) in people.iter().enumerate() {
        let mut p = Person::login(&server.addr, name, once, &format!("{name}'s own password"));
        // Rank every prompt: the shortest answer best (bo ties the other two).
        loop {
            let task = p.next(support);
            if task.is_null() {
                break;
            }
            let answers: Vec<usize> = task["answers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().len())
                .collect();
            let mut order: Vec<usize> = (0..3).collect();
            order.sort_by_key(|&i| (answers[i], i));
            let mut places = vec![0; 3];
            for (place, &i) in order.iter().enumerate() {
                places[i] = if k == 1 && place > 0 { 2 } else { place + 1 };
            }
            let t = task["assignment"].as_i64().unwrap();
            let (status, r) = p
                .request(
                    "POST",
                    &format!("/api/tasks/{t}"),
                    Some(&json!({"type": "ranking", "places": places, "likert": [6, 4, 2], "flags": [[], [], ["made_up_facts"]]})),
                )
                .unwrap();
            assert_eq!(status, 200, "{r}");
        }
        // Two demonstrations each.
        for _ in 0..2 {
            let task = p.next(replies);
            let t = task["assignment"].as_i64().unwrap();
            let text = format!("{name} checked: the order ships tomorrow.");
            let (status, _) = p
                .request(
                    "POST",
                    &format!("/api/tasks/{t}"),
                    Some(&json!({"type": "demonstration", "text": text})),
                )
                .unwrap();
            assert_eq!(status, 200);
        }
    }
    drop(server);

    let stats = label(&db, &["stats", "--project", "support"]);
    assert!(
        stats.contains("18 labels; 6 prompts labelled by two or more"),
        "{stats}"
    );
    assert!(stats.contains("agreement between annotators:"), "{stats}");
    let sft = tmp.path().join("sft.jsonl");
    let rankings = tmp.path().join("rankings.jsonl");
    let out = label(
        &db,
        &[
            "export",
            "--sft",
            sft.to_str().unwrap(),
            "--rankings",
            rankings.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("6 demonstrations") && out.contains("18 rankings"),
        "{out}"
    );
    let demos = cria_data::sft::read_conversations(&sft).unwrap();
    assert_eq!(demos.len(), 6);
    let prefs = cria_data::prefs::read_preferences(&rankings).unwrap();
    assert_eq!(prefs.len(), 18);
    assert!(
        prefs.iter().any(|p| p.tiers == vec![0, 1, 1]),
        "bo's ties are kept"
    );
    let merged = tmp.path().join("merged.jsonl");
    let out = label(
        &db,
        &["export", "--rankings", merged.to_str().unwrap(), "--merge"],
    );
    assert!(out.contains("6 rankings"), "{out}");

    // The reward model trains on the export as it is.
    let cfg = tmp.path().join("rm.toml");
    std::fs::write(
        &cfg,
        format!(
            "init = \"{}\"\nout = \"rm\"\n[data]\ntrain = [\"rankings.jsonl\"]\nseq_len = 96\nval_fraction = 0.2\n\
             [train]\nsteps = 3\nbatch_size = 2\nlr = 1e-3\nwarmup_steps = 0\nlog_every = 1\neval_every = 3\nsave_every = 3\n",
            fixture("chat").display()
        ),
    )
    .unwrap();
    run_ok(
        cria()
            .current_dir(tmp.path())
            .args(["rm", "--config"])
            .arg(&cfg),
    );
    assert!(tmp.path().join("rm/checkpoint/model.safetensors").exists());
}

#[test]
fn a_sigkill_during_a_burst_loses_no_acknowledged_label() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("labels.sqlite");
    let names = ["ana", "bo", "cy", "di"];
    let once: Vec<String> = names
        .iter()
        .map(|n| add_user(&db, n, "annotator"))
        .collect();
    label(
        &db,
        &["project", "add", "replies", "--kind", "demonstration"],
    );
    let prompts = tmp.path().join("prompts.jsonl");
    let text: String = (0..2000)
        .map(|i| format!("{}\n", json!({"prompt": format!("Question {i}")})))
        .collect();
    std::fs::write(&prompts, text).unwrap();
    label(
        &db,
        &["import", "--project", "replies", prompts.to_str().unwrap()],
    );
    let mut server = label_server(&db);
    let (tx, rx) = std::sync::mpsc::channel::<i64>();
    let workers: Vec<_> = names
        .iter()
        .zip(&once)
        .map(|(name, pw)| {
            let (addr, name, pw, tx) = (server.addr.clone(), name.to_string(), pw.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut p = Person::login(&addr, &name, &pw, &format!("{name}'s own password"));
                let project = project_ids(&mut p)[0].1;
                // Until the server dies: take a task, submit it, note every acknowledgement.
                loop {
                    let Ok((200, r)) = p.request("POST", &format!("/api/projects/{project}/next"), Some(&json!({}))) else {
                        return;
                    };
                    let t = r["task"]["assignment"].as_i64().unwrap();
                    let body = json!({"type": "demonstration", "text": format!("{name} answers task {t}")});
                    match p.request("POST", &format!("/api/tasks/{t}"), Some(&body)) {
                        Ok((200, _)) => {
                            let _ = tx.send(t);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    drop(tx);
    // Let the burst run, then kill the server in the middle of it.
    let mut acked = vec![];
    while acked.len() < 60 {
        acked.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("submissions flow"),
        );
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    acked.extend(rx.try_iter());
    // Every acknowledged submission is in the database, which opens cleanly.
    let labels = cria_label::Db::open(&db).unwrap();
    let (ok, stored): (String, Vec<i64>) = labels
        .read(|c| {
            let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            let mut q = c.prepare("SELECT assignment_id FROM labels")?;
            let rows = q.query_map([], |r| r.get(0))?;
            Ok((ok, rows.collect::<Result<Vec<i64>, _>>()?))
        })
        .unwrap();
    assert_eq!(ok, "ok");
    let missing: Vec<&i64> = acked.iter().filter(|t| !stored.contains(t)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(stored.len() >= acked.len());
}

#[test]
fn bad_commands_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("labels.sqlite");
    let err = run_err(
        cria()
            .args(["label", "import", "--project", "nope", "x.jsonl", "--db"])
            .arg(&db),
    );
    assert!(err.contains("no project named `nope`"), "{err}");
    let err = run_err(
        cria()
            .args([
                "label", "project", "add", "p", "--kind", "ranking", "--k", "12", "--db",
            ])
            .arg(&db),
    );
    assert!(err.contains("k 12: rank 2 to 9 answers"), "{err}");
    let err = run_err(
        cria()
            .args(["label", "user", "add", "a b", "--db"])
            .arg(&db),
    );
    assert!(err.contains("user name `a b`"), "{err}");
    let err = run_err(cria().args(["label", "export", "--db"]).arg(&db));
    assert!(err.contains("say what to export"), "{err}");
    label(&db, &["project", "add", "p", "--kind", "demonstration"]);
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"ok\"}\n{\"prompt\": [{\"role\": \"user\"}]}\n",
    )
    .unwrap();
    let err = run_err(
        cria()
            .args(["label", "import", "--project", "p"])
            .arg(&bad)
            .arg("--db")
            .arg(&db),
    );
    assert!(
        err.contains("bad.jsonl:2") && err.contains("prompt[0].content"),
        "{err}"
    );
    let listed = label(&db, &["project", "list"]);
    assert!(
        listed.contains("prompts=0"),
        "nothing half-imported: {listed}"
    );
}

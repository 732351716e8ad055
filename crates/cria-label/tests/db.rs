//! The labels database without the web: schema versions, people, who gets which task (overlap,
//! gold items to everyone, never the same prompt twice, only one's own tasks), submissions
//! stored in the answers' own order, and exports the stages read.

use cria_label::db::projects::{self, Kind, NewProject, NewPrompt, Project};
use cria_label::db::tasks::{self, Submission};
use cria_label::db::users::{self, Role};
use cria_label::{Db, LabelError, auth, export, import};
use serde_json::{Value, json};

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("labels.sqlite")).unwrap();
    (dir, db)
}

fn person(db: &Db, name: &str) -> i64 {
    db.tx(|t| users::add(t, name, Role::Annotator, &auth::hash_password("pw")))
        .unwrap()
        .id
}

fn project(db: &Db, kind: Kind, k: Option<usize>, overlap: usize) -> Project {
    db.tx(|t| {
        projects::create(
            t,
            &NewProject {
                name: format!("{kind:?}"),
                kind,
                k,
                overlap,
                sampling: Default::default(),
                instructions: String::new(),
            },
        )
    })
    .unwrap()
}

fn prompts(db: &Db, p: &Project, n: usize) -> Vec<i64> {
    let new: Vec<NewPrompt> = (0..n)
        .map(|i| NewPrompt {
            messages: vec![json!({"role": "user", "content": format!("question {i}")})],
            gold: None,
            source: format!("test:{i}"),
        })
        .collect();
    db.tx(|t| projects::add_prompts(t, p, &new)).unwrap();
    let ids: Vec<i64> = db
        .read(|c| {
            let mut q = c.prepare("SELECT id FROM prompts WHERE project_id = ?1 ORDER BY id")?;
            let rows = q.query_map([p.id], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
        })
        .unwrap();
    if p.kind.samples() {
        for &id in &ids {
            let answers: Vec<String> = (0..p.k).map(|j| format!("answer {j} to {id}")).collect();
            db.tx(|t| projects::add_answers(t, id, &answers, "m"))
                .unwrap();
        }
    }
    ids
}

fn next(db: &Db, user: i64, p: &Project) -> Option<tasks::Task> {
    db.tx(|t| tasks::next(t, user, p)).unwrap()
}

#[test]
fn the_schema_is_versioned_and_a_newer_one_is_refused() {
    let (dir, db) = db();
    let path = db.path.clone();
    let (mode, version): (String, i64) = db
        .read(|c| {
            Ok((
                c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                c.pragma_query_value(None, "user_version", |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(version, cria_label::db::VERSION);
    drop(db);
    // Opening again migrates nothing and keeps the data.
    let db = Db::open(&path).unwrap();
    person(&db, "ana");
    db.tx(|t| Ok(t.pragma_update(None, "user_version", 99)?))
        .unwrap();
    drop(db);
    let e = Db::open(&path).err().unwrap();
    assert!(
        matches!(e, LabelError::NewerSchema { found: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("labels.sqlite"));
    drop(dir);
}

#[test]
fn people_have_unique_readable_names() {
    let (_d, db) = db();
    person(&db, "ana");
    let e = db
        .tx(|t| users::add(t, "ana", Role::Admin, "x"))
        .unwrap_err();
    assert!(e.to_string().contains("exists already"), "{e}");
    let e = db
        .tx(|t| users::add(t, "a b", Role::Admin, "x"))
        .unwrap_err();
    assert!(e.to_string().contains("user name `a b`"), "{e}");
}

#[test]
fn each_prompt_goes_to_overlap_annotators_and_gold_to_everyone() {
    let (_d, db) = db();
    let p = project(&db, Kind::Ranking, Some(3), 2);
    let ids = prompts(&db, &p, 2);
    let gold = NewPrompt {
        messages: vec![json!({"role": "user", "content": "gold question"})],
        gold: Some(projects::Gold {
            answers: vec!["good".into(), "ok".into(), "bad".into()],
            places: vec![0, 1, 2],
        }),
        source: "gold:1".into(),
    };
    db.tx(|t| projects::add_prompts(t, &p, &[gold])).unwrap();
    let people: Vec<i64> = ["ana", "bo", "cy"].iter().map(|n| person(&db, n)).collect();
    let mut seen: Vec<Vec<String>> = vec![vec![]; 3];
    let rank = Submission::Ranking {
        places: vec![1, 2, 3],
        likert: vec![6, 4, 2],
        flags: vec![vec![], vec![], vec![]],
    };
    // Each takes tasks until none is left for them.
    for _round in 0..4 {
        for (i, &u) in people.iter().enumerate() {
            if let Some(t) = next(&db, u, &p) {
                // Asking again before submitting gives the same open task.
                assert_eq!(next(&db, u, &p).unwrap().assignment, t.assignment);
                seen[i].push(t.messages[0]["content"].as_str().unwrap().to_string());
                db.tx(|tx| tasks::submit(tx, u, t.assignment, &rank))
                    .unwrap();
            }
        }
    }
    let count = |q: &str| seen.iter().filter(|s| s.iter().any(|x| x == q)).count();
    assert_eq!(count("question 0"), 2, "overlap 2");
    assert_eq!(count("question 1"), 2);
    assert_eq!(count("gold question"), 3, "gold items go to everyone");
    for s in &seen {
        let mut d = s.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), s.len(), "never the same prompt twice: {s:?}");
    }
    let g = db.read(|c| projects::progress(c, &p)).unwrap();
    assert_eq!(
        (g.prompts, g.ready, g.gold, g.done, g.open),
        (3, 3, 1, 7, 0)
    );
    assert_eq!(ids.len(), 2);
}

#[test]
fn an_annotator_sees_and_submits_only_their_own_tasks_once() {
    let (_d, db) = db();
    let p = project(&db, Kind::Demonstration, None, 2);
    prompts(&db, &p, 1);
    let (ana, bo) = (person(&db, "ana"), person(&db, "bo"));
    let t = next(&db, ana, &p).unwrap();
    let e = db.read(|c| tasks::task(c, t.assignment, bo)).unwrap_err();
    assert!(matches!(e, LabelError::NotFound(_)), "{e}");
    let demo = Submission::Demonstration {
        text: "  A careful reply.  ".into(),
    };
    let e = db
        .tx(|tx| tasks::submit(tx, bo, t.assignment, &demo))
        .unwrap_err();
    assert!(matches!(e, LabelError::NotFound(_)), "{e}");
    let wrong = Submission::Ranking {
        places: vec![1],
        likert: vec![1],
        flags: vec![vec![]],
    };
    let e = db
        .tx(|tx| tasks::submit(tx, ana, t.assignment, &wrong))
        .unwrap_err();
    assert!(e.to_string().contains("demonstration task"), "{e}");
    db.tx(|tx| tasks::submit(tx, ana, t.assignment, &demo))
        .unwrap();
    let e = db
        .tx(|tx| tasks::submit(tx, ana, t.assignment, &demo))
        .unwrap_err();
    assert!(matches!(e, LabelError::Conflict(_)), "{e}");
    // A refused submission stored nothing: one label.
    let labels = db.read(|c| tasks::labels(c, &p)).unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].body["text"], "A careful reply.");
    // Bo's task is the same prompt (overlap 2); skipping with a report reaches the admin.
    let t = next(&db, bo, &p).unwrap();
    let skip = Submission::Skip {
        reason: "it holds a customer's card number".into(),
        report: true,
    };
    db.tx(|tx| tasks::submit(tx, bo, t.assignment, &skip))
        .unwrap();
    let reports = db.read(|c| tasks::reports(c, &p)).unwrap();
    assert_eq!(reports[0].1, "bo");
    assert!(reports[0].2.contains("card number"));
    assert!(next(&db, bo, &p).is_none());
}

#[test]
fn rankings_are_stored_unshuffled_and_exported_with_ties() {
    let (_d, db) = db();
    let p = project(&db, Kind::Ranking, Some(3), 2);
    let ids = prompts(&db, &p, 1);
    let (ana, bo) = (person(&db, "ana"), person(&db, "bo"));
    let stored = db.read(|c| projects::answers(c, ids[0])).unwrap();
    // Each ranks by the stored text: "answer 0" best, then 1 and 2 (tied for bo).
    let rank_by_text = |user: i64, places_of: &dyn Fn(&str) -> usize| {
        let t = next(&db, user, &p).unwrap();
        let mut shown_sorted = t.answers.clone();
        shown_sorted.sort();
        assert_eq!(shown_sorted, stored, "every answer shown once");
        let places: Vec<usize> = t.answers.iter().map(|a| places_of(a)).collect();
        let s = Submission::Ranking {
            places,
            likert: vec![5, 5, 5],
            flags: vec![vec![], vec![], vec![]],
        };
        db.tx(|tx| tasks::submit(tx, user, t.assignment, &s))
            .unwrap();
    };
    let idx = |a: &str| a.split(' ').nth(1).unwrap().parse::<usize>().unwrap();
    rank_by_text(ana, &|a| idx(a) + 1);
    rank_by_text(bo, &|a| if idx(a) == 0 { 1 } else { 2 });
    let labels = db.read(|c| tasks::labels(c, &p)).unwrap();
    assert_eq!(
        labels[0].body["places"],
        json!([0, 1, 2]),
        "ana, in stored order"
    );
    assert_eq!(labels[1].body["places"], json!([0, 1, 1]), "bo's tie");

    let (records, counts) = export::rankings(&db, None, false).unwrap();
    assert_eq!(counts.records, 2);
    assert_eq!(records[0]["ranking"], json!([0, 1, 2]));
    assert_eq!(records[1]["ranking"], json!([0, [1, 2]]));
    assert_eq!(records[1]["annotator"], "bo");
    // Merged by ranked pairs: 0 over both (2-0); 1 over 2 by ana alone (1-0).
    let (merged, _) = export::rankings(&db, None, true).unwrap();
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0]["ranking"], json!([0, 1, 2]));
    assert_eq!(merged[0]["annotators"], json!(["ana", "bo"]));
    // What the stages read: the reader takes the file as is, ties included.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rankings.jsonl");
    export::write_jsonl(&f, &records).unwrap();
    let prefs = cria_data::prefs::read_preferences(&f).unwrap();
    assert_eq!(prefs[1].tiers, vec![0, 1, 1]);
    assert_eq!(prefs[1].responses[0][0].content, "answer 0 to 1");
}

#[test]
fn an_import_names_the_bad_line_and_stores_nothing() {
    let (_d, db) = db();
    let p = project(&db, Kind::Ranking, Some(2), 1);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("prompts.jsonl");
    std::fs::write(
        &f,
        "{\"prompt\": \"fine\"}\n{\"prompt\": \"also fine\"}\n{\"promt\": \"typo\"}\n",
    )
    .unwrap();
    let e = import::import(&db, &p, &f).unwrap_err().to_string();
    assert!(e.contains("prompts.jsonl:3"), "{e}");
    assert_eq!(db.read(|c| projects::progress(c, &p)).unwrap().prompts, 0);
    // A gold ranking needs as many answers as the project ranks.
    std::fs::write(
        &f,
        "{\"prompt\": \"q\", \"responses\": [\"a\", \"b\", \"c\"], \"ranking\": [0, 1, 2]}\n",
    )
    .unwrap();
    let e = import::import(&db, &p, &f).unwrap_err().to_string();
    assert!(
        e.contains("prompts.jsonl:1") && e.contains("3 answers"),
        "{e}"
    );
    std::fs::write(
        &f,
        "{\"instruction\": \"Summarise the memo\", \"input\": \"Q3 sales rose.\"}\n",
    )
    .unwrap();
    assert_eq!(import::import(&db, &p, &f).unwrap(), 1);
    let waiting = db.read(|c| projects::waiting_for_answers(c, 10)).unwrap();
    assert_eq!(
        waiting[0].1,
        vec![json!({"role": "user", "content": "Summarise the memo\n\nQ3 sales rose."})]
    );
}

#[test]
fn chat_feedback_is_a_ranking_of_two_and_thumbs_are_ratings() {
    let (_d, db) = db();
    let conv: Vec<Value> = vec![json!({"role": "user", "content": "Where is my order?"})];
    use cria_label::db::feedback;
    db.tx(|t| feedback::rate(t, "ops", "ppo", &conv, "On its way.", true))
        .unwrap();
    db.tx(|t| feedback::rate(t, "", "ppo", &conv, "No idea.", false))
        .unwrap();
    db.tx(|t| {
        feedback::compare(
            t,
            "ops",
            "ppo",
            &conv,
            ["No idea.".into(), "On its way.".into()],
            Some(1),
        )
    })
    .unwrap();
    let e = db
        .tx(|t| feedback::compare(t, "ops", "ppo", &conv, ["same".into(), "same".into()], None))
        .unwrap_err();
    assert!(e.to_string().contains("same text"), "{e}");
    let (ratings, _) = export::ratings(&db).unwrap();
    assert_eq!(ratings.len(), 2);
    assert_eq!(ratings[0]["label"], true);
    assert_eq!(ratings[0]["annotator"], "chat@ops");
    assert_eq!(ratings[1]["annotator"], "chat");
    let (rankings, _) = export::rankings(&db, None, false).unwrap();
    assert_eq!(rankings.len(), 1);
    assert_eq!(rankings[0]["responses"], json!(["No idea.", "On its way."]));
    assert_eq!(rankings[0]["ranking"], json!([1, 0]));
    // Chat users never log in.
    let (u, hash) = db.read(|c| users::by_name(c, "chat@ops")).unwrap().unwrap();
    assert_eq!(u.role, Role::Chat);
    assert!(!auth::verify_password(&hash, ""));
}

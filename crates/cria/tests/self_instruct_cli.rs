//! `cria self-instruct` end to end with `cria serve` as the teacher: a tiny random model, so
//! what it writes is noise that fails the filters (those are held against a scripted teacher
//! in cria-instruct's tests); here the mechanics are — requests through the OpenAI API, every
//! stage's record, a rerun that continues, data `cria sft` reads — and the errors a user meets
//! first.

mod common;
use common::{Spawned, cria, run_err, run_ok};
use serde_json::json;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cria-serve/tests/fixtures")
        .join(name)
}

/// Short seed tasks (the tiny model's context holds 256 tokens).
fn seeds(dir: &Path) -> PathBuf {
    let p = dir.join("seeds.jsonl");
    let text: String = [
        ("Sort the numbers.", "3 1 2", "1 2 3", false),
        ("Name the colour.", "the sky", "blue", true),
        ("Add the numbers.", "2 3", "5", false),
        ("Greet the customer.", "Ana", "Hello Ana!", false),
        ("Is it spam?", "win cash", "yes", true),
        ("Reverse the word.", "lamp", "pmal", false),
        ("Count the words.", "a b c", "3", false),
        ("Say thanks.", "", "Thank you!", false),
    ]
    .iter()
    .enumerate()
    .map(|(i, (inst, input, output, clf))| {
        format!(
            "{}\n",
            json!({"id": format!("s{i}"), "name": format!("n{i}"), "instruction": inst,
                   "instances": [{"input": input, "output": output}], "is_classification": clf})
        )
    })
    .collect();
    std::fs::write(&p, text).unwrap();
    p
}

/// The `chat` fixture with a longer context (RoPE has no learned positions: only the config
/// changes), so the prompts of 8 tasks fit its byte-sized tokens.
fn teacher_model(dir: &Path) -> PathBuf {
    let to = dir.join("teacher");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(fixture("chat")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let mut cfg: serde_json::Value = common::read_json(&to.join("config.json"));
    cfg["max_position_embeddings"] = json!(2048);
    std::fs::write(to.join("config.json"), cfg.to_string()).unwrap();
    to
}

/// `cria self-instruct` against the server at `addr`, three tokens a reply.
fn self_instruct(
    seeds: &Path,
    addr: &str,
    out: &Path,
    count: &str,
    concurrency: &str,
) -> std::process::Command {
    let mut c = cria();
    c.args(["self-instruct", "--seeds"])
        .arg(seeds)
        .args(["--teacher", &format!("http://{addr}/v1")])
        .arg("--out")
        .arg(out)
        .args([
            "--count",
            count,
            "--max-tokens",
            "3",
            "--concurrency",
            concurrency,
        ]);
    c
}

#[test]
fn cria_serve_as_the_teacher_through_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = seeds(tmp.path());
    let model = teacher_model(tmp.path());
    let server = Spawned::start(&["serve", "--port", "0", "--model", model.to_str().unwrap()]);
    let out = tmp.path().join("run");
    let run = |count: &str| self_instruct(&seeds, &server.addr, &out, count, "3");
    // Stage 1: three tokens of a random model are no numbered list of tasks (a reply cut at
    // the limit loses its only item; one that stops is too short), and after 20 rounds the
    // run says so; every request and its candidates are on record.
    let e = run_err(&mut run("1"));
    assert!(
        e.contains("20 rounds of requests in a row gave no instruction"),
        "{e}"
    );
    let requests = std::fs::read_to_string(out.join("requests.jsonl")).unwrap();
    assert_eq!(requests.lines().count(), 60);
    let first: serde_json::Value = serde_json::from_str(requests.lines().next().unwrap()).unwrap();
    assert!(
        first["teacher"].as_str().unwrap().contains(&server.addr),
        "{first}"
    );
    assert_eq!(first["prompt_seeds"].as_array().unwrap().len(), 8);
    let fate = first["candidates"][0]["removed"].as_str().unwrap();
    assert!(fate == "truncated" || fate == "too_short", "{first}");
    // As if a better teacher had written two instructions in an earlier request: the rerun
    // keeps them, and cria serve classifies them and writes their instances.
    let earlier = json!({"request": 60, "style": "self-instruct", "teacher": "earlier", "prompt_seeds": [],
        "prompt_machine": [], "cut": false, "candidates": [
            {"instruction": "Write a thank-you note to the warehouse team.", "input": "", "output": "", "removed": null},
            {"instruction": "Classify the delivery as early, on time or late.", "input": "", "output": "", "removed": null}]});
    std::fs::write(out.join("requests.jsonl"), format!("{requests}{earlier}\n")).unwrap();
    let done = run_ok(&mut run("2"));
    let stdout = String::from_utf8(done.stdout).unwrap();
    assert!(
        stdout.contains("data.json") && stdout.contains("report.md"),
        "{stdout}"
    );
    for f in [
        "classified.jsonl",
        "instances.jsonl",
        "candidates.jsonl",
        "data.json",
        "report.md",
        "rouge_l.svg",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let count = |f: &str| {
        std::fs::read_to_string(out.join(f))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(count("requests.jsonl"), 61, "no request was made again");
    assert_eq!(count("classified.jsonl"), 2);
    assert_eq!(count("instances.jsonl"), 2);
    // The seed tasks' rows at least (the random model's examples rarely parse); cria's SFT
    // reader takes the file as it is.
    let rows = cria_data::sft::read_conversations(&out.join("data.json")).unwrap();
    assert!(rows.len() >= 8);
    // cria sft trains on it as it is.
    let sft = tmp.path().join("sft.toml");
    std::fs::write(
        &sft,
        format!(
            "init = \"{}\"\nout = \"sft\"\n[data]\ntrain = [\"run/data.json\"]\nseq_len = 512\nval_fraction = 0.2\n\
             [train]\nsteps = 2\nbatch_size = 2\nwarmup_steps = 0\nlog_every = 1\neval_every = 2\nsave_every = 2\n",
            model.display()
        ),
    )
    .unwrap();
    run_ok(
        cria()
            .current_dir(tmp.path())
            .args(["sft", "--config"])
            .arg(&sft),
    );
    assert!(tmp.path().join("sft/checkpoint/model.safetensors").exists());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    // Both instructions went through: kept with instances, or (three random tokens are no
    // examples) removed at the instance stage, never lost.
    let stats = common::read_json(&out.join("stats.json"));
    let no_instances = stats["removed"]["no_instances"].as_u64().unwrap_or(0);
    assert_eq!(stats["kept"].as_u64().unwrap() + no_instances, 2, "{stats}");
    assert!(report.contains("| kept |"), "{report}");
}

#[test]
fn a_run_killed_with_sigkill_continues_without_asking_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = seeds(tmp.path());
    let model = teacher_model(tmp.path());
    let server = Spawned::start(&["serve", "--port", "0", "--model", model.to_str().unwrap()]);
    let out = tmp.path().join("run");
    let cmd = || {
        let mut c = self_instruct(&seeds, &server.addr, &out, "1", "2");
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let requests = out.join("requests.jsonl");
    let lines = || std::fs::read_to_string(&requests).map_or(0, |t| t.lines().count());
    let mut first = cmd().spawn().unwrap();
    // Killed once some requests are on record (and more in flight).
    let t0 = std::time::Instant::now();
    while lines() < 6 && t0.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let before = lines();
    assert!(
        (6..40).contains(&before),
        "killed in the middle: {before} requests"
    );
    // The rerun goes on from there (and stops as the first would have: no list in 3 tokens).
    let status = cmd().status().unwrap();
    assert!(!status.success());
    let text = std::fs::read_to_string(&requests).unwrap();
    let idx: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        idx,
        (0..idx.len() as u64).collect::<Vec<_>>(),
        "every request once, in order"
    );
    assert!(
        idx.len() >= before + 40,
        "20 more rounds of 2 after the restart"
    );
}

#[test]
fn bad_seeds_and_unreachable_teachers_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = seeds(tmp.path());
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\": \"a\", \"name\": \"a\", \"instruction\": \"x\"}\n",
    )
    .unwrap();
    let run = |seeds: &Path, teacher: &str| {
        run_err(
            cria()
                .args(["self-instruct", "--seeds"])
                .arg(seeds)
                .args([
                    "--teacher",
                    teacher,
                    "--count",
                    "1",
                    "--retries",
                    "0",
                    "--out",
                ])
                .arg(tmp.path().join("out")),
        )
    };
    let e = run(&bad, "http://127.0.0.1:9/v1");
    assert!(e.contains("bad.jsonl:1: instances"), "{e}");
    let e = run(&good, "http://127.0.0.1:9/v1");
    assert!(
        e.contains("teacher http://127.0.0.1:9/v1: cannot connect"),
        "{e}"
    );
    let e = run(&good, "https://teacher.internal/v1");
    assert!(e.contains("plain HTTP only"), "{e}");
    let e = run(&good, tmp.path().to_str().unwrap());
    assert!(
        e.contains("neither an http:// URL nor a checkpoint directory"),
        "{e}"
    );
    let few = tmp.path().join("few.jsonl");
    let one = std::fs::read_to_string(&good).unwrap();
    std::fs::write(&few, one.lines().next().unwrap()).unwrap();
    let e = run(&few, "http://127.0.0.1:9/v1");
    assert!(
        e.contains("1 seed tasks; the self-instruct prompts show 8"),
        "{e}"
    );
}

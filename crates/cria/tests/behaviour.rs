//! Behaviour of the README's example end to end: the tiny Saltmere model is pretrained, then
//! instruction-tuned on questions about its people, and asked held-out phrasings. The base
//! model neither answers in the format nor stops; the tuned one answers some exactly and ends
//! every reply at the end-of-turn token. (Deterministic: fixed seeds, exact resume guarantees.)

mod common;

use common::{cria, run_ok as ok};
use std::path::{Path, PathBuf};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tiny")
}

/// Greedy replies to each question, one conversation per question.
fn ask(model: &Path, questions: &[String]) -> Vec<String> {
    use std::io::Write;
    let mut child = cria()
        .args([
            "chat",
            "--temperature",
            "0",
            "--max-new-tokens",
            "40",
            "--model",
        ])
        .arg(model)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script: String = questions.iter().map(|q| format!("{q}\n/reset\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn instruction_tuning_answers_held_out_questions_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ex = examples();
    ok(cria()
        .args(["tokenizer", "train", "--vocab-size", "1024", "--input"])
        .arg(ex.join("corpus"))
        .arg("--out")
        .arg(t.join("tok")));
    ok(cria()
        .args(["pretrain", "--config"])
        .arg(ex.join("pretrain.toml"))
        .arg("--out")
        .arg(t.join("base"))
        .args([
            "--set",
            &format!("tokenizer={:?}", t.join("tok").display().to_string()),
        ]));
    let base = t.join("base/checkpoint");
    ok(cria()
        .args(["sft", "--config"])
        .arg(ex.join("sft.toml"))
        .arg("--init")
        .arg(&base)
        .arg("--out")
        .arg(t.join("sft")));
    let tuned = t.join("sft/checkpoint");

    let val: Vec<serde_json::Value> = std::fs::read_to_string(ex.join("sft-val.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let questions: Vec<String> = val
        .iter()
        .map(|r| r["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    let answers: Vec<&str> = val
        .iter()
        .map(|r| r["messages"][1]["content"].as_str().unwrap())
        .collect();
    let exact = |replies: &[String]| {
        replies
            .iter()
            .zip(&answers)
            // The example's SFT data closes one answer in four with " Glad to help!".
            .filter(|(r, a)| r.trim().trim_end_matches(" Glad to help!") == **a)
            .count()
    };

    let tuned_replies = ask(&tuned, &questions);
    // One line per question: every reply ended at <|end_of_turn|>, before the token limit.
    assert_eq!(tuned_replies.len(), questions.len(), "{tuned_replies:#?}");
    assert!(
        tuned_replies
            .iter()
            .all(|r| (r.ends_with('.') || r.ends_with('!')) && r.len() < 80),
        "{tuned_replies:#?}"
    );
    let base_replies = ask(&base, &questions);
    let (b, s) = (exact(&base_replies), exact(&tuned_replies));
    println!(
        "held-out exact match: base {b}/{n}, tuned {s}/{n}",
        n = questions.len()
    );
    assert_eq!(b, 0);
    assert!(
        s >= 2,
        "tuned model answers {s} of {} exactly: {tuned_replies:#?}",
        questions.len()
    );

    preferences(&ex, t, &tuned, &questions);
}

/// The preference stages on the tuned model, with the example's rankings (kind-and-right >
/// right > vague > rude): the reward model ranks held-out answers right, and DPO makes the
/// kind closing (" Glad to help!", in one SFT answer in four) the rule while staying near the
/// SFT model.
fn preferences(ex: &Path, t: &Path, tuned: &Path, questions: &[String]) {
    use cria_core::{checkpoint, device, generate::GenerateOptions, sampling::SamplingParams};
    use cria_data::chat::{ChatFormat, Message, Role};
    use cria_train::sampler as rollout;

    ok(cria()
        .args(["rm", "--config"])
        .arg(ex.join("rm.toml"))
        .arg("--init")
        .arg(tuned)
        .arg("--out")
        .arg(t.join("rm")));
    let metrics = std::fs::read_to_string(t.join("rm/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let acc = last["val_accuracy"].as_f64().unwrap();
    println!("reward model: held-out pair accuracy {acc:.3}");
    assert!(acc > 0.9, "held-out pair accuracy {acc}");

    ok(cria()
        .args(["dpo", "--config"])
        .arg(ex.join("dpo.toml"))
        .arg("--init")
        .arg(tuned)
        .arg("--out")
        .arg(t.join("dpo")));

    let dev = device::inference_device();
    let sft = checkpoint::load_model(tuned, &dev).unwrap();
    let dpo = checkpoint::load_model(&t.join("dpo/checkpoint"), &dev).unwrap();
    let rm_dir = t.join("rm/checkpoint");
    let rm = checkpoint::load_model(&rm_dir, &dev).unwrap();
    let tok = checkpoint::load_tokenizer(tuned, &sft.cfg).unwrap();
    let fmt = ChatFormat::for_checkpoint(tuned, &tok).unwrap();
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            fmt.encode(&[Message::new(Role::User, q.as_str())], &tok, true, false)
                .unwrap()
                .ids
        })
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: 40,
        sampling: SamplingParams {
            temperature: 1.0,
            seed: 1,
            ..Default::default()
        },
        stop_ids: fmt.stop_ids(&tok, &sft.cfg.eos_token_id),
    };
    // Per model: the share of sampled replies with the kind closing, and the mean reward.
    let judge = |m: &cria_core::Llama| {
        let samples = rollout::sample(m, &prompts, 4, &opts).unwrap();
        let mut convs = vec![];
        let mut kind = 0;
        for (k, s) in samples.iter().enumerate() {
            let text = tok.decode(&s.reply, true).unwrap();
            kind += usize::from(text.trim_end().ends_with("Glad to help!"));
            convs.push(vec![
                Message::new(Role::User, questions[k / 4].as_str()),
                Message::new(Role::Assistant, text.trim()),
            ]);
        }
        let rewards =
            cria_train::scoring::score_conversations(&rm, &fmt, &tok, &convs, 16).unwrap();
        let mean = rewards.iter().map(|r| *r as f64).sum::<f64>() / rewards.len() as f64;
        (kind as f64 / samples.len() as f64, mean, samples)
    };
    let (sft_kind, sft_reward, _) = judge(&sft);
    let (dpo_kind, dpo_reward, samples) = judge(&dpo);
    let kl = rollout::kl_estimate(&dpo, &sft, &samples, 16);
    println!(
        "kind closing: SFT {sft_kind:.2}, DPO {dpo_kind:.2}; mean reward: SFT {sft_reward:.2}, \
         DPO {dpo_reward:.2}; KL(DPO || SFT) {kl:.2} nats per reply"
    );
    assert!(
        dpo_kind >= sft_kind + 0.3,
        "DPO {dpo_kind} vs SFT {sft_kind}"
    );
    assert!(
        dpo_reward > sft_reward,
        "the reward model prefers DPO's replies"
    );
    assert!(kl < DPO_KL_BOUND, "KL {kl} over {DPO_KL_BOUND}");

    // PPO against the reward model, with the KL controller aiming at ppo.target_kl; then the
    // critic-free RLOO and GRPO on the same replies per iteration (4 prompts x 4 replies).
    let target: f64 = std::fs::read_to_string(ex.join("ppo.toml"))
        .unwrap()
        .parse::<toml::Table>()
        .unwrap()["ppo"]["target_kl"]
        .as_float()
        .unwrap();
    let groups = ["rollout.batch_size=4", "rollout.samples_per_prompt=4"];
    for (name, sets) in [
        ("PPO", vec![]),
        ("RLOO", [&["ppo.algorithm=\"rloo\""][..], &groups].concat()),
        (
            "GRPO",
            [
                &["ppo.algorithm=\"grpo\"", "train.lr=3e-4", "ppo.kl_coef=0.2"][..],
                &groups,
            ]
            .concat(),
        ),
    ] {
        let out = t.join(name.to_lowercase());
        let mut cmd = cria();
        cmd.args(["ppo", "--config"])
            .arg(ex.join("ppo.toml"))
            .arg("--init")
            .arg(tuned)
            .args(["--set"])
            .arg(format!("reward_model={:?}", rm_dir.display().to_string()))
            .arg("--out")
            .arg(&out);
        for s in sets {
            cmd.args(["--set", s]);
        }
        ok(&mut cmd);
        let policy = checkpoint::load_model(&out.join("checkpoint"), &dev).unwrap();
        let (kind, reward, samples) = judge(&policy);
        let kl = rollout::kl_estimate(&policy, &sft, &samples, 16);
        println!(
            "{name}: kind closing {kind:.2} (SFT {sft_kind:.2}); mean reward {reward:.2} \
             (SFT {sft_reward:.2}); KL({name} || SFT) {kl:.2} nats per reply (target {target})"
        );
        assert!(kind >= sft_kind + 0.3, "{name} {kind} vs SFT {sft_kind}");
        assert!(reward > sft_reward, "{name} raises the reward");
        assert!(
            kl < RL_KL_SLACK * target,
            "{name}: KL {kl} over {RL_KL_SLACK} x {target}"
        );
    }
}

/// Bound on KL(DPO ‖ SFT) per reply in nats for the example's beta (0.1) and steps. DPO has no
/// KL controller: how far 100 steps move depends on how peaked the SFT model is, which moves
/// with f32 rounding in pretraining. Two builds whose kernels agree to 1e-7 (the same SFT
/// losses from the same base) gave 6.0 and 14.0 here, through different pretraining runs.
const DPO_KL_BOUND: f64 = 20.0;
/// The RL stages' KL may overshoot the controller's target by this factor on held-out prompts.
const RL_KL_SLACK: f64 = 2.0;

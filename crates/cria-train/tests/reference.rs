//! cria's training loop against PyTorch (fixtures from scripts/ref/train_fixtures.py):
//! step-0 loss (1e-5 relative) and per-parameter gradient norms (1e-4 relative), then a
//! 10-step trajectory with AdamW, clipping, warmup + cosine and gradient accumulation:
//! losses and gradient norms within 1e-4, final weights within 1e-4.

use cria_core::params::{ParamMut, Params, to_vec};
use cria_core::{checkpoint, device};
use cria_testkit::rel;
use cria_train::TrainConfig;
use cria_train::batch::Batch;
use cria_train::data::DataSource;
use cria_train::metrics::{RunDir, Silent};
use cria_train::trainer::{self, TrainSpec};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_ref")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap()
}

/// The fixed micro-batches: `[n, 2, T+1]` token ids.
struct Fixed {
    seqs: Vec<Vec<u32>>,
    t: usize,
}

impl Fixed {
    fn load() -> Fixed {
        let bytes = std::fs::read(fixture().join("batches.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let v = st.tensor("sequences").unwrap();
        let shape = v.shape().to_vec();
        let ids: Vec<u32> = v
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        let per = shape[1] * shape[2];
        Fixed {
            seqs: ids.chunks(per).map(|c| c.to_vec()).collect(),
            t: shape[2] - 1,
        }
    }
}

impl DataSource for Fixed {
    fn train_batch(&mut self, k: u64) -> cria_train::Result<Batch> {
        let s = &self.seqs[k as usize];
        let t = self.t;
        let (mut inputs, mut targets) = (vec![], vec![]);
        for row in s.chunks(t + 1) {
            inputs.extend_from_slice(&row[..t]);
            targets.extend_from_slice(&row[1..]);
        }
        Ok(Batch {
            inputs,
            targets,
            weights: None,
            b: 2,
            t,
            ..Default::default()
        })
    }
    fn val_batches(&mut self, _n: usize) -> cria_train::Result<Vec<Batch>> {
        Ok(vec![])
    }
    fn fingerprint(&self) -> String {
        "fixed".into()
    }
}

#[test]
fn step0_loss_and_every_gradient_match_pytorch() {
    let exp = expected();
    let dev = device::training_device();
    let mut model = checkpoint::load_model(&fixture().join("init"), &device::inference_device())
        .unwrap()
        .to_device(&dev)
        .require_grad();
    let mut data = Fixed::load();
    let loss = cria_train::scoring::lm_loss(&model, &data.train_batch(0).unwrap(), &dev);
    let value = loss.clone().into_scalar::<f32>() as f64;
    let want = exp["loss0"].as_f64().unwrap();
    assert!(rel(value, want) < 1e-5, "loss {value} vs torch {want}");
    let grads = loss.backward();
    let want_norms = exp["grad_norms0"].as_object().unwrap();
    let mut seen = 0;
    let mut worst = (0.0, String::new());
    model.visit("", &mut |name, p| {
        let g = match &p {
            ParamMut::Vector(t) => t.grad(&grads).map(to_vec),
            ParamMut::Matrix { t, .. } => t.grad(&grads).map(to_vec),
        };
        let g = g.unwrap_or_else(|| panic!("{name} received no gradient"));
        let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let w = want_norms[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} not in the reference"));
        let r = rel(norm, w);
        if r > worst.0 {
            worst = (r, name.to_string());
        }
        seen += 1;
    });
    println!(
        "worst gradient-norm relative error {:.2e} at {}",
        worst.0, worst.1
    );
    assert_eq!(
        seen,
        want_norms.len(),
        "every reference parameter is visited"
    );
    assert!(
        worst.0 < 1e-4,
        "gradient norm of {} off by {:e}",
        worst.1,
        worst.0
    );
}

#[test]
fn ten_step_trajectory_matches_pytorch() {
    let exp = expected();
    let cfg = trajectory_cfg(&exp);
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir {
        root: tmp.path().to_path_buf(),
    };
    let spec = spec(&cfg, &run, cria_train::collective::world());
    let model =
        checkpoint::load_model(&fixture().join("init"), &device::inference_device()).unwrap();
    let trained = trainer::train(model, &mut Fixed::load(), &spec, &mut Silent).unwrap();
    check_against_torch(&exp, &read_logs(&run), &trained);
}

/// A run of the language-model loss on the fixture's data: no tokenizer or extra files.
fn spec<'a>(
    cfg: &'a TrainConfig,
    run: &'a RunDir,
    world: &'a dyn cria_train::collective::Collective,
) -> TrainSpec<'a> {
    TrainSpec {
        cfg,
        run,
        tokenizer_dir: None,
        resolved_config: String::new(),
        config_file: "train.toml",
        adapter: None,
        trainable: None,
        extra_files: vec![],
        objective: &cria_train::trainer::LmLoss,
        world,
    }
}

/// The fixture's settings: 10 steps of 2 micro-batches of 2 rows, AdamW, clipping, warmup.
fn trajectory_cfg(exp: &Value) -> TrainConfig {
    let hp = &exp["hp"];
    let f = |k: &str| hp[k].as_f64().unwrap();
    TrainConfig {
        steps: exp["steps"].as_u64().unwrap(),
        batch_size: 2,
        grad_accum: 2,
        lr: f("lr"),
        min_lr: f("min_lr"),
        warmup_steps: hp["warmup"].as_u64().unwrap(),
        beta1: f("beta1"),
        beta2: f("beta2"),
        eps: f("eps"),
        weight_decay: f("wd"),
        grad_clip: Some(f("clip")),
        seed: 0,
        log_every: 1,
        eval_every: 0,
        eval_batches: 0,
        save_every: 0,
        ..TrainConfig::default()
    }
}

fn read_logs(run: &RunDir) -> Vec<Value> {
    std::fs::read_to_string(run.metrics())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Losses and gradient norms of every step within 1e-4 of PyTorch's, final weights too.
fn check_against_torch(exp: &Value, logs: &[Value], trained: &cria_core::Llama) {
    assert_eq!(logs.len(), 10);
    for (i, l) in logs.iter().enumerate() {
        let (loss, want) = (
            l["loss"].as_f64().unwrap(),
            exp["losses"][i].as_f64().unwrap(),
        );
        assert!(
            (loss - want).abs() < 1e-4,
            "step {}: loss {loss} vs torch {want}",
            i + 1
        );
        let (gn, want) = (
            l["grad_norm"].as_f64().unwrap(),
            exp["grad_norms"][i].as_f64().unwrap(),
        );
        assert!(
            (gn - want).abs() < 1e-4,
            "step {}: grad norm {gn} vs torch {want}",
            i + 1
        );
    }
    let bytes = std::fs::read(fixture().join("final.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ours = checkpoint::named_tensors(trained);
    let mut worst = (0.0f64, String::new());
    for (name, view) in st.tensors() {
        let want: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let got = &ours[&name].1;
        for (a, b) in got.iter().zip(&want) {
            let d = (a - b).abs() as f64;
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
    }
    println!(
        "worst final-weight difference {:.2e} at {}",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "final weight {} off by {:e}",
        worst.1,
        worst.0
    );
}

/// Trains the fixture's run on two ranks (threads of this process, each with its own data
/// reader and its own run directory: only rank 0's is written), `steps` steps, saving every
/// `save_every`; returns each rank's trained model.
fn two_ranks(cfg: &TrainConfig, dirs: [&std::path::Path; 2]) -> Vec<cria_core::Llama> {
    let worlds = cria_train::collective::threads(2);
    std::thread::scope(|s| {
        let hs: Vec<_> = worlds
            .iter()
            .zip(dirs)
            .map(|(w, dir)| {
                s.spawn(move || {
                    let run = RunDir {
                        root: dir.to_path_buf(),
                    };
                    let spec = spec(cfg, &run, w.as_ref());
                    let model = checkpoint::load_model(
                        &fixture().join("init"),
                        &device::inference_device(),
                    )
                    .unwrap();
                    trainer::train(model, &mut Fixed::load(), &spec, &mut Silent).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn two_ranks_take_pytorchs_steps_and_resume_from_rank_0s_disk_alone() {
    // Each rank runs one of the step's two micro-batches; the summed gradients give the
    // one-process trajectory (the f32 sums in another order: the same 1e-4 as one process).
    let exp = expected();
    let cfg = trajectory_cfg(&exp);
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let models = two_ranks(&cfg, [d0.path(), d1.path()]);
    let run0 = RunDir {
        root: d0.path().to_path_buf(),
    };
    check_against_torch(&exp, &read_logs(&run0), &models[0]);
    assert_eq!(
        checkpoint::named_tensors(&models[0]),
        checkpoint::named_tensors(&models[1]),
        "the ranks' weights differ"
    );
    assert_eq!(
        std::fs::read_dir(d1.path()).unwrap().count(),
        0,
        "rank 1 wrote into its run directory"
    );

    // Stopped after step 4 and resumed: rank 1's directory is empty, so it can only take the
    // weights, moments and data cursor from rank 0.
    let (e0, e1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = TrainConfig {
        steps: 4,
        save_every: 4,
        ..cfg.clone()
    };
    two_ranks(&first, [e0.path(), e1.path()]);
    let resumed = two_ranks(&cfg, [e0.path(), e1.path()]);
    let run = RunDir {
        root: e0.path().to_path_buf(),
    };
    check_against_torch(&exp, &read_logs(&run), &resumed[1]);
    assert_eq!(
        checkpoint::named_tensors(&resumed[1]),
        checkpoint::named_tensors(&models[1]),
        "a resumed two-rank run ends elsewhere than an uninterrupted one"
    );
}

#[test]
fn a_step_that_does_not_split_over_the_ranks_is_refused() {
    let exp = expected();
    let cfg = TrainConfig {
        grad_accum: 3,
        ..trajectory_cfg(&exp)
    };
    let worlds = cria_train::collective::threads(2);
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir {
        root: dir.path().to_path_buf(),
    };
    let spec = spec(&cfg, &run, worlds[0].as_ref());
    let model =
        checkpoint::load_model(&fixture().join("init"), &device::inference_device()).unwrap();
    let e = trainer::train(model, &mut Fixed::load(), &spec, &mut Silent).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("train.grad_accum = 3") && msg.contains("multiple of 2"),
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn frozen_parameters_stay_put_and_carry_no_optimizer_state() {
    let cfg = TrainConfig {
        steps: 3,
        batch_size: 2,
        warmup_steps: 0,
        lr: 1e-2,
        eval_every: 0,
        save_every: 0,
        ..TrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir {
        root: tmp.path().to_path_buf(),
    };
    let only = |name: &str| name.contains("layers.1.mlp") || name == "model.norm.weight";
    let spec = TrainSpec {
        trainable: Some(&only),
        ..spec(&cfg, &run, cria_train::collective::world())
    };
    let model =
        checkpoint::load_model(&fixture().join("init"), &device::inference_device()).unwrap();
    let before = checkpoint::named_tensors(&model);
    let trained = trainer::train(model, &mut Fixed::load(), &spec, &mut Silent).unwrap();
    let after = checkpoint::named_tensors(&trained);
    for (name, (_, v)) in &before {
        let moved = after[name].1 != *v;
        assert_eq!(moved, only(name), "{name}: moved={moved}");
    }
    let opt = cria_train::state::read_optimizer(&run.checkpoint()).unwrap();
    assert!(
        !opt.state.is_empty() && opt.state.keys().all(|k| only(k)),
        "{:?}",
        opt.state.keys().collect::<Vec<_>>()
    );
}

#[test]
fn masked_sft_loss_matches_transformers_labels_with_ignore_index() {
    // transformers: labels = ids with the first `prompt_len[r]` set to -100, loss averaged over
    // the remaining (shifted) targets. cria: the same positions with weight 1, the rest 0.
    let exp = expected();
    let mut data = Fixed::load();
    let mut batch = data.train_batch(0).unwrap();
    let prompt: Vec<usize> = exp["sft_prompt_len"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let t = batch.t;
    batch.weights = Some(
        (0..batch.b)
            .flat_map(|r| {
                let n = prompt[r];
                (0..t).map(move |j| if j + 1 >= n { 1.0 } else { 0.0 })
            })
            .collect(),
    );
    let dev = device::inference_device();
    let model = checkpoint::load_model(&fixture().join("init"), &dev).unwrap();
    let loss = cria_train::scoring::lm_loss(&model, &batch, &dev).into_scalar::<f32>() as f64;
    let want = exp["sft_loss"].as_f64().unwrap();
    assert!(
        rel(loss, want) < 1e-5,
        "masked loss {loss} vs transformers {want}"
    );
}

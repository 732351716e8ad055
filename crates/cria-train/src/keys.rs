//! Every setting of every stage with a line saying what it does: `cria <stage> --print-config`
//! prints a stage's resolved config (defaults < file < `--set`) with these as comments, and
//! settings that are unset by default as commented-out lines. A test checks every key a
//! config serialises has a line here, so the list cannot fall behind the configs.

/// A stage whose settings are described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pretrain,
    Sft,
    Rm,
    Dpo,
    Ppo,
}

/// `(key, what it does)`; a key with a `.` sits in that section.
type Doc = (&'static str, &'static str);

const TRAIN: &[Doc] = &[
    (
        "train.steps",
        "optimizer steps to run (≥ 1); PPO: iterations",
    ),
    (
        "train.batch_size",
        "sequences per micro-batch (PPO: unused, see rollout and ppo)",
    ),
    (
        "train.grad_accum",
        "micro-batches per optimizer step (PPO: unused)",
    ),
    ("train.lr", "peak learning rate (> 0)"),
    ("train.min_lr", "the cosine schedule decays to this (≤ lr)"),
    (
        "train.warmup_steps",
        "linear warm-up from 0 to lr over this many steps",
    ),
    ("train.beta1", "AdamW β1, in [0, 1)"),
    ("train.beta2", "AdamW β2, in [0, 1)"),
    ("train.eps", "AdamW ε (> 0)"),
    (
        "train.weight_decay",
        "decoupled weight decay, matrices only (≥ 0)",
    ),
    (
        "train.grad_clip",
        "global gradient-norm clipping (> 0), or false for none",
    ),
    (
        "train.seed",
        "seed of initialisation, data order, dropout and sampling",
    ),
    ("train.log_every", "a log line every this many steps"),
    (
        "train.eval_every",
        "validation every this many steps (0: only at the end)",
    ),
    ("train.eval_batches", "validation batches per evaluation"),
    (
        "train.save_every",
        "a checkpoint every this many steps (0: only at the end)",
    ),
    (
        "train.blowup_factor",
        "warn when the loss stays above this many times its first value (false: never)",
    ),
    ("train.blowup_steps", "… for this many steps in a row"),
];

const LORA: &[Doc] = &[
    ("lora.r", "LoRA rank (method = \"lora\")"),
    ("lora.alpha", "LoRA scale α (the update is α/r · BA)"),
    (
        "lora.dropout",
        "PEFT's lora_dropout on the adapter's input, in [0, 1)",
    ),
    (
        "lora.target_modules",
        "any of q_proj k_proj v_proj o_proj gate_proj up_proj down_proj",
    ),
];

const ADAPTER: &[Doc] = &[
    (
        "adapter.len",
        "LLaMA-Adapter prompt vectors per layer (method = \"llama-adapter\")",
    ),
    ("adapter.layers", "how many of the top layers are adapted"),
];

const FORMAT: &str = "a checkpoint without a chat template: \"auto\" (cria's chat tokens, added \
                      when missing), \"cria\", or \"alpaca\" (the Alpaca prompt)";
const SKIP: &str =
    "skip malformed records (counted, written to out/rejects.jsonl) instead of stopping";

const PREF_DATA: &[Doc] = &[
    (
        "data.train",
        "preference files: pairs, HH-RLHF transcripts, K-way rankings (JSON/JSONL)",
    ),
    (
        "data.val",
        "validation files (else val_fraction of train is held out)",
    ),
    (
        "data.val_fraction",
        "share of train held out when val is empty, in [0, 1)",
    ),
    (
        "data.seq_len",
        "longest row in tokens (within the model's context)",
    ),
    ("data.skip_invalid", SKIP),
    (
        "data.truncation",
        "over-long rows: \"keep_start\" (first tokens) or \"keep_end\" (prompt's last, answers whole)",
    ),
    ("data.format", FORMAT),
];

const PRETRAIN: &[Doc] = &[
    (
        "out",
        "run directory: data/ (token shards), metrics.jsonl, checkpoint/",
    ),
    (
        "init",
        "a Hugging Face checkpoint to continue pretraining (instead of [model])",
    ),
    (
        "tokenizer",
        "tokenizer.json (or its directory) for a model from scratch",
    ),
    ("model.arch", "\"llama\", \"mistral\" or \"qwen2\""),
    ("model.hidden_size", "width of the residual stream"),
    ("model.intermediate_size", "width of the SwiGLU MLP"),
    ("model.num_hidden_layers", "transformer blocks"),
    ("model.num_attention_heads", "query heads"),
    (
        "model.num_key_value_heads",
        "key/value heads (grouped-query attention; divides the above)",
    ),
    ("model.max_position_embeddings", "context length"),
    ("model.rope_theta", "RoPE base"),
    ("model.rms_norm_eps", "RMSNorm ε"),
    (
        "model.tie_word_embeddings",
        "share the input embeddings with the output layer",
    ),
    (
        "model.initializer_range",
        "standard deviation of the initial weights",
    ),
    (
        "data.inputs",
        "corpus files or directories (.txt, .md, .jsonl {\"text\"}; optionally .gz)",
    ),
    ("data.seq_len", "tokens per training row"),
    (
        "data.val_fraction",
        "share of the token stream held out for validation",
    ),
];

const SFT: &[Doc] = &[
    ("out", "run directory: metrics.jsonl, checkpoint/"),
    ("init", "the Hugging Face checkpoint to fine-tune"),
    (
        "method",
        "\"full\", \"lora\" ([lora]) or \"llama-adapter\" ([adapter])",
    ),
    (
        "data.train",
        "Alpaca, chat (messages), ShareGPT or prompt/completion files (JSON/JSONL)",
    ),
    (
        "data.val",
        "validation files (else val_fraction of train is held out)",
    ),
    (
        "data.val_fraction",
        "share of train held out when val is empty, in [0, 1)",
    ),
    (
        "data.seq_len",
        "longest example in tokens (longer ones are cut and counted)",
    ),
    (
        "data.train_on_inputs",
        "train on the prompt tokens too, not only the replies",
    ),
    ("data.packing", "pack examples end to end into full rows"),
    ("data.format", FORMAT),
    ("data.skip_invalid", SKIP),
];

const RM: &[Doc] = &[
    ("out", "run directory: metrics.jsonl, checkpoint/"),
    ("init", "the SFT checkpoint whose trunk gets the score head"),
];

const DPO: &[Doc] = &[
    ("out", "run directory: metrics.jsonl, checkpoint/"),
    (
        "init",
        "the SFT checkpoint: the policy's start and the frozen reference",
    ),
    ("method", "\"full\" or \"lora\" ([lora])"),
    ("beta", "strength of the implicit KL constraint (> 0)"),
    (
        "pairs",
        "from a ranking: \"all\" ordered pairs or the \"best\" against each other",
    ),
    (
        "sft_weight",
        "weight of the chosen answers' NLL added to the loss (RPO; 0 = plain DPO)",
    ),
];

const PPO: &[Doc] = &[
    ("out", "run directory: metrics.jsonl, checkpoint/"),
    (
        "init",
        "the SFT checkpoint: the policy's start and the KL reference",
    ),
    (
        "reward_model",
        "the reward model (cria rm); it also initialises the value model",
    ),
    ("method", "\"full\" or \"lora\" ([lora])"),
    (
        "data.prompts",
        "prompt files: {prompt}, messages ending on a user turn, or preference files",
    ),
    (
        "data.prompt_len",
        "prompts longer than this many tokens are skipped and counted",
    ),
    (
        "data.ptx",
        "pretraining corpus for PPO-ptx (when ppo.ptx_coef > 0)",
    ),
    ("data.ptx_seq_len", "tokens per PPO-ptx row"),
    ("data.ptx_batch_size", "PPO-ptx rows per update"),
    ("data.skip_invalid", SKIP),
    ("data.format", FORMAT),
    ("rollout.batch_size", "prompts per iteration"),
    (
        "rollout.samples_per_prompt",
        "replies to each prompt (1 for ppo, 4 for rloo/grpo when unset)",
    ),
    ("rollout.max_new_tokens", "longest reply"),
    (
        "rollout.temperature",
        "sampling temperature (≥ 0; 0 = greedy)",
    ),
    ("rollout.top_k", "sample from the k likeliest tokens only"),
    ("rollout.top_p", "nucleus sampling, in (0, 1]"),
    (
        "ppo.algorithm",
        "ppo (value model, GAE), rloo or grpo (critic-free, groups of replies)",
    ),
    (
        "ppo.scale_advantages",
        "grpo: divide centred group rewards by their std (Dr. GRPO: false)",
    ),
    (
        "ppo.kl_coef",
        "β of the KL penalty to the SFT model (the start when target_kl is set)",
    ),
    (
        "ppo.target_kl",
        "adapt β so the KL per reply approaches this many nats",
    ),
    (
        "ppo.kl_horizon",
        "horizon of the adaptive KL controller, in replies",
    ),
    ("ppo.gamma", "GAE discount γ, in [0, 1]"),
    ("ppo.lam", "GAE λ, in [0, 1]"),
    ("ppo.clip_range", "ε of the clipped policy loss"),
    ("ppo.value_clip_range", "ε of the clipped value loss"),
    ("ppo.epochs", "passes over each iteration's replies"),
    (
        "ppo.minibatch_size",
        "replies per optimizer step (divides the iteration's replies)",
    ),
    (
        "ppo.reward_clip",
        "reward-model scores are clipped to ± this",
    ),
    ("ppo.whiten_rewards", "normalise scores over each batch"),
    (
        "ppo.missing_eos_penalty",
        "subtracted from a reply that never ends its turn",
    ),
    (
        "ppo.ptx_coef",
        "weight of the pretraining loss (PPO-ptx; 0 = off)",
    ),
    (
        "ppo.value_lr",
        "learning rate of the value model (train.lr when unset)",
    ),
];

/// Every key of `stage`, in the order they print.
pub fn docs(stage: Stage) -> Vec<Doc> {
    let parts: &[&[Doc]] = match stage {
        Stage::Pretrain => &[PRETRAIN, TRAIN],
        Stage::Sft => &[SFT, LORA, ADAPTER, TRAIN],
        Stage::Rm => &[RM, PREF_DATA, TRAIN],
        Stage::Dpo => &[DPO, LORA, PREF_DATA, TRAIN],
        Stage::Ppo => &[PPO, LORA, TRAIN],
    };
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// `config` (a stage's config as a TOML table) written with a comment above each key, the
/// sections in the order of [`docs`]; a key the config leaves unset is shown commented out.
pub fn annotated(stage: Stage, config: &toml::Table) -> String {
    let mut out = String::new();
    let mut section = "";
    for (key, doc) in docs(stage) {
        let (sec, name) = key.rsplit_once('.').unwrap_or(("", key));
        if sec != section {
            out.push_str(&format!("\n[{sec}]\n"));
            section = sec;
        }
        let table = if sec.is_empty() {
            Some(config)
        } else {
            config.get(sec).and_then(|v| v.as_table())
        };
        out.push_str(&format!("# {doc}\n"));
        match table.and_then(|t| t.get(name)) {
            Some(v) => out.push_str(&format!("{name} = {}\n", inline(v))),
            None => out.push_str(&format!("# {name} =    (unset)\n")),
        }
    }
    out.trim_start().to_string()
}

fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(_) => toml::to_string(v).unwrap_or_default(),
        _ => v.to_string(),
    }
}

/// Keys `config` holds that [`docs`] does not describe (the test that keeps the list whole).
pub fn undocumented(stage: Stage, config: &toml::Table) -> Vec<String> {
    let known: Vec<&str> = docs(stage).iter().map(|(k, _)| *k).collect();
    let mut missing = vec![];
    for (k, v) in config {
        match v.as_table() {
            Some(t) => missing.extend(
                t.keys()
                    .map(|n| format!("{k}.{n}"))
                    .filter(|full| !known.contains(&full.as_str())),
            ),
            None if !known.contains(&k.as_str()) => missing.push(k.clone()),
            None => {}
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::{dpo::DpoConfig, ppo::PpoConfig, pretrain::PretrainConfig};
    use crate::stages::{rm::RmConfig, sft::SftConfig};

    fn table<T: serde::Serialize>(c: &T) -> toml::Table {
        toml::Table::try_from(c).unwrap()
    }

    fn round_trip<T>(stage: Stage)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug,
    {
        let cfg = T::default();
        let t = table(&cfg);
        assert_eq!(undocumented(stage, &t), Vec::<String>::new(), "{stage:?}");
        let text = annotated(stage, &t);
        // The printed config is a config: it reads back as the same settings.
        let back: T = toml::from_str(&text).unwrap_or_else(|e| panic!("{stage:?}: {e}\n{text}"));
        assert_eq!(back, cfg, "{stage:?}");
        // Every described key prints, set or commented out, with its comment.
        for (key, doc) in docs(stage) {
            assert!(text.contains(&format!("# {doc}\n")), "{stage:?} {key}");
        }
    }

    #[test]
    fn every_setting_of_every_stage_is_described_and_prints_as_a_valid_config() {
        round_trip::<PretrainConfig>(Stage::Pretrain);
        round_trip::<SftConfig>(Stage::Sft);
        round_trip::<RmConfig>(Stage::Rm);
        round_trip::<DpoConfig>(Stage::Dpo);
        round_trip::<PpoConfig>(Stage::Ppo);
    }

    #[test]
    fn unset_settings_print_commented_out() {
        let text = annotated(Stage::Ppo, &table(&PpoConfig::default()));
        assert!(text.contains("# top_k =    (unset)"), "{text}");
        assert!(text.contains("\n[rollout]\n"), "{text}");
    }
}

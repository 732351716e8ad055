//! One module per command; each exposes `Args` and `run`.

pub mod chat;
pub mod demo;
pub mod dpo;
pub mod eval;
pub mod export;
pub mod generate;
pub mod label;
pub mod logits;
pub mod pipeline;
pub mod ppo;
pub mod pretrain;
pub mod rm;
mod run_args;
pub mod self_instruct;
pub mod serve;
pub mod sft;
pub mod tokenizer;
pub mod world;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// The whole recipe on a built-in example company, about five minutes on 2 cores: start here.
    Demo(demo::Args),
    /// Train or inspect tokenizers.
    #[command(subcommand)]
    Tokenizer(tokenizer::Command),
    /// Pretrain a model from scratch, or continue pretraining a checkpoint, on a text corpus.
    ///
    /// Settings come from `--config FILE.toml` and `--set KEY=VALUE`; `--print-config` shows
    /// every key with what it does.
    Pretrain(pretrain::Args),
    /// Fine-tune a checkpoint on instruction or chat data (loss on the replies only).
    ///
    /// `method` = "full" (every weight), "lora" (a PEFT LoRA adapter, `[lora]` r, alpha,
    /// dropout, target_modules) or "llama-adapter" (`[adapter]` len, layers). A base without a
    /// chat template is prompted as `data.format` says (auto, cria, alpaca). `--print-config`
    /// shows every key with what it does.
    Sft(sft::Args),
    /// Train a reward model (scalar head on the SFT trunk) on ranked or paired responses.
    ///
    /// `--print-config` shows every key with what it does.
    Rm(rm::Args),
    /// Direct Preference Optimization of an SFT checkpoint on preference pairs.
    ///
    /// `method` = "full" or "lora" (`[lora]`); `beta`, `pairs`, `sft_weight`. `--print-config`
    /// shows every key with what it does.
    Dpo(dpo::Args),
    /// RLHF: rollouts scored by a reward model, a KL penalty to the SFT model; PPO, RLOO or GRPO.
    ///
    /// `method` = "full" or "lora" (`[lora]`); `[rollout]` sampling and replies per prompt,
    /// `[ppo]` algorithm ("ppo" with a value model and GAE; "rloo" or "grpo", critic-free over
    /// groups of replies), KL, clipping, PPO-ptx. `--print-config` shows every key with what it
    /// does.
    Ppo(ppo::Args),
    /// Chat with a fine-tuned checkpoint in the terminal (or over piped lines).
    Chat(chat::Args),
    /// Serve checkpoints to your people and programs: an OpenAI-compatible API with
    /// streaming and continuous batching, and a web chat page.
    ///
    /// Binds 127.0.0.1:8000 by default; `--api-key-file` for keys; `--models FILE.toml` serves
    /// LoRA / LLaMA-Adapter adapters on one copy of their base; SIGHUP (or `POST
    /// /admin/reload` with an `--admin-key-file` key) reloads the checkpoints from their
    /// directories, SIGTERM drains running requests and exits.
    Serve(serve::Args),
    /// Human feedback from your own people: a web application where annotators write
    /// demonstrations and rank K sampled answers, with agreement and export to `cria sft`,
    /// `cria rm` and `cria dpo`.
    #[command(subcommand)]
    Label(label::Command),
    /// Instruction data from a handful of seed tasks (self-instruct, or Alpaca's variant) with
    /// a teacher you run yourself: an OpenAI-compatible endpoint or a local checkpoint.
    SelfInstruct(self_instruct::Args),
    /// Run the whole recipe from one file: world, tokenizer, pretrain, SFT, RM, DPO/PPO, eval.
    #[command(subcommand)]
    Pipeline(pipeline::Command),
    /// Measure a checkpoint: fact accuracy, truthfulness, reward, refusals, perplexity, KL.
    Eval(Box<eval::Args>),
    /// Write a plain Hugging Face checkpoint (`--merge-lora` folds an adapter into the base).
    Export(export::Args),
    /// Write the demo's example world (a fictional company's handbook, instructions, rankings
    /// and evaluation sets) to a directory.
    World(world::Args),
    /// Continue a prompt with a checkpoint, streaming to stdout.
    Generate(generate::Args),
    /// Write the logits of every prompt position to a safetensors file (`input_ids`, `logits`),
    /// to compare a checkpoint with transformers (scripts/ref/check_cria_checkpoint.py).
    Logits(logits::Args),
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let ranks = cria_train::collective::world().size();
    if ranks > 1 && !cmd.runs_on_ranks() {
        anyhow::bail!(
            "this command runs as one process, not as {ranks} ranks: under mpirun or srun, run \
             `cria pretrain`, `sft`, `rm`, `dpo` or `ppo` (data-parallel), and the rest \
             without the launcher"
        );
    }
    match cmd {
        Command::Demo(a) => demo::run(a),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Sft(a) => sft::run(a),
        Command::Rm(a) => rm::run(a),
        Command::Dpo(a) => dpo::run(a),
        Command::Ppo(a) => ppo::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Label(c) => label::run(c),
        Command::SelfInstruct(a) => self_instruct::run(a),
        Command::Export(a) => export::run(a),
        Command::Eval(a) => eval::run(*a),
        Command::Pipeline(c) => pipeline::run(c),
        Command::Generate(a) => generate::run(a),
        Command::World(a) => world::run(a),
        Command::Logits(a) => logits::run(a),
    }
}

impl Command {
    /// Whether the command shares its work over the ranks of an MPI launch.
    fn runs_on_ranks(&self) -> bool {
        matches!(
            self,
            Command::Pretrain(_)
                | Command::Sft(_)
                | Command::Rm(_)
                | Command::Dpo(_)
                | Command::Ppo(_)
        )
    }
}

/// Loads a checkpoint for inference, with a LoRA adapter applied when given, and its tokenizer.
pub fn load_for_inference(
    model: &std::path::Path,
    adapter: Option<&std::path::Path>,
) -> anyhow::Result<(cria_core::Llama, cria_core::tokenizer::Tokenizer)> {
    use anyhow::Context;
    let dev = cria_core::device::inference_device();
    let mut m = cria_core::checkpoint::load_model(model, &dev)
        .with_context(|| format!("loading {}", model.display()))?;
    if m.cfg.head != cria_core::config::Head::Lm {
        anyhow::bail!(
            "--model {}: this is a reward model (a score head, no language-model head); it \
             scores replies but cannot write them. Give a language model such as an SFT \
             checkpoint",
            model.display()
        );
    }
    if let Some(ad) = adapter {
        m.load_adapter(ad)
            .with_context(|| format!("loading the adapter {}", ad.display()))?;
    }
    let tok = cria_core::checkpoint::load_tokenizer(model, &m.cfg)?;
    Ok((m, tok))
}

/// Whether `path` is a GGUF file (by its first four bytes) rather than a checkpoint directory.
pub fn is_gguf(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"GGUF"
}

/// A GGUF file opened for inference, with its tokenizer and the ids that end a reply.
pub struct Gguf {
    pub model: cria_gguf::infer::QModel,
    pub tok: cria_core::tokenizer::Tokenizer,
    pub stop_ids: Vec<u32>,
}

impl Gguf {
    /// How to prompt the file (`--format`): its own chat template
    /// (`tokenizer.chat_template`) when it carries one, else cria's format when its
    /// tokenizer has cria's chat tokens; or the Alpaca prompt. Nothing can be added to a GGUF
    /// vocabulary, so a file with neither is refused with what to do.
    pub fn format(&self, choice: generate::Format) -> anyhow::Result<cria_data::chat::ChatFormat> {
        use cria_data::chat::{ALPACA_TEMPLATE, CHAT_TEMPLATE, ChatFormat, ChatTokens};
        use cria_data::template::ChatTemplate;
        use generate::Format;
        let f = &self.model.file;
        let name = |id: Option<u32>| {
            id.and_then(|i| self.tok.inner.id_to_token(i))
                .unwrap_or_default()
        };
        let (bos, eos) = (name(self.tok.bos_id), name(self.tok.eos_id));
        let template = |text: &str, source: &std::path::Path| -> anyhow::Result<ChatFormat> {
            let t = ChatTemplate::new(text, source, bos.clone(), eos.clone())?;
            Ok(ChatFormat::Template(Box::new(t)))
        };
        let own = f.get("tokenizer.chat_template").and_then(|v| v.as_str());
        match (choice, own) {
            (Format::Alpaca, _) => template(
                ALPACA_TEMPLATE,
                std::path::Path::new("(built-in Alpaca template)"),
            ),
            (Format::Auto, Some(text)) => template(text, &f.path),
            (Format::Auto | Format::Cria, _) => match ChatTokens::of(&self.tok) {
                Ok(tokens) if bos == cria_core::tokenizer::BOS => Ok(ChatFormat::Cria(tokens)),
                Ok(_) => template(
                    CHAT_TEMPLATE,
                    std::path::Path::new("(cria's chat template)"),
                ),
                Err(_) => anyhow::bail!(
                    "{}: the file carries no chat template (tokenizer.chat_template) and its \
                     vocabulary has no cria chat tokens; prompt it with --format alpaca, or \
                     export the checkpoint again with its template",
                    f.path.display()
                ),
            },
        }
    }
}

/// Opens a GGUF file for `generate` and `chat`.
pub fn load_gguf(
    path: &std::path::Path,
    adapter: Option<&std::path::Path>,
) -> anyhow::Result<Gguf> {
    if adapter.is_some() {
        anyhow::bail!(
            "--adapter with a GGUF model: merge the LoRA adapter at export (`cria export --to gguf --adapter DIR`)"
        );
    }
    let model = cria_gguf::infer::QModel::open(path)?;
    let tok = cria_gguf::tokenizer::tokenizer(&model.file)?;
    let stop_ids = cria_gguf::tokenizer::stop_ids(&model.file, &tok);
    tracing::info!(
        "{}: {} {} layers, {} weights, context {}",
        path.display(),
        model.cfg.arch,
        model.cfg.n_layer,
        model.weight_type().name(),
        model.cfg.context
    );
    Ok(Gguf {
        model,
        tok,
        stop_ids,
    })
}

/// Sizes rayon's pool (the matrix products' threads) once, before any work.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("--threads: {e}"))?;
    }
    Ok(())
}

/// The runtime the servers run on (two workers: the engine has its own thread).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A listener on `host:port`, or an error saying which address could not be had.
pub async fn listen(host: &str, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    let addr = format!("{host}:{port}");
    tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

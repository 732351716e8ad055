//! `cria serve`: the model as a private service — an OpenAI-compatible API (`/v1/chat/
//! completions`, `/v1/completions`, `/v1/models`, streaming), a web chat page at `/`, and
//! `/metrics`. Binds to this machine only unless `--host` says otherwise.

use super::generate::Format;
use anyhow::Context;
use clap::Args as ClapArgs;
use cria_serve::api::{self, App, Reloader, ServerConfig};
use cria_serve::{EngineConfig, Member, ServedModel};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(ClapArgs)]
pub struct Args {
    /// A checkpoint directory to serve, as `DIR` (served under the directory's name, or the
    /// stage's for a `…/ppo/checkpoint`) or `NAME=DIR`; or a GGUF file (`cria export --to
    /// gguf`, llama.cpp's llama/qwen2 files), run on its own f32/f16/q8_0/q4_0 weights and
    /// served under its file stem. Repeat to serve several; a request's `model` picks one.
    #[arg(
        long = "model",
        value_name = "[NAME=]DIR|FILE.gguf",
        required_unless_present = "models_file"
    )]
    models: Vec<String>,
    /// A TOML file naming the models to serve, adapters included: `[[model]]` tables with
    /// `name`, `path` (a checkpoint directory or a GGUF file) and optionally `adapter` (a LoRA or
    /// LLaMA-Adapter directory to apply to `path`). Models on the same `path` share its
    /// weights in memory and its slots. Paths are relative to the file, which is read again
    /// on reload.
    #[arg(long = "models", value_name = "FILE.toml")]
    models_file: Option<PathBuf>,
    /// How to prompt a checkpoint without a chat template (see `cria chat --help`).
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// The address to listen on. The default keeps the server on this machine; give
    /// `0.0.0.0` to let the network in (with `--api-key-file`).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Sequences each base model decodes together (slots), shared by its adapters:
    /// concurrent requests beyond it wait.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Requests that may wait for a slot; more get 503 with `Retry-After`.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Prompt tokens prefilled per step, so long prompts do not stall the other streams.
    #[arg(long, default_value_t = 128)]
    prefill_chunk: usize,
    /// Finished conversations whose KV is kept for follow-up turns that start the same way.
    #[arg(long, default_value_t = 16)]
    prefix_cache: usize,
    /// A file of API keys, one a line (`KEY` or `NAME:KEY`); requests then need
    /// `Authorization: Bearer KEY`.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// A file of admin keys, as `--api-key-file`: they may `POST /admin/reload`, which
    /// loads the models again from where they came. Without it, only SIGHUP reloads.
    #[arg(long)]
    admin_key_file: Option<PathBuf>,
    /// Requests one key may have running at once (0: no limit); more get 429.
    #[arg(long, default_value_t = 0)]
    max_concurrent_per_key: usize,
    /// The largest request body, in MiB (larger ones get 413).
    #[arg(long, default_value_t = 4)]
    body_limit_mib: usize,
    /// Write prompts and replies to the log (off by default: they are your company's data).
    #[arg(long)]
    log_requests: bool,
    /// A web origin whose pages may call the API from a browser (CORS), e.g.
    /// `https://intranet.example.com`; repeat for several, `*` for any. None by default.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// A labels database (as `cria label` uses): the chat page then offers thumbs on each
    /// reply and, after "regenerate", which reply is better; they are saved there as chat
    /// feedback and exported with `cria label export`.
    #[arg(long, value_name = "FILE.sqlite")]
    feedback_db: Option<PathBuf>,
    /// Seconds to let running requests finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
}

/// A model to serve: its name, its checkpoint directory and the adapter applied to it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    name: String,
    path: PathBuf,
    #[serde(default)]
    adapter: Option<PathBuf>,
}

/// `--models FILE.toml`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    #[serde(default)]
    model: Vec<Source>,
}

/// Where the models come from (read again on every reload).
#[derive(Clone)]
struct Sources {
    specs: Vec<String>,
    file: Option<PathBuf>,
}

impl Sources {
    /// The models to serve: `--model`s, then the models file's, each checked.
    fn read(&self) -> anyhow::Result<Vec<Source>> {
        let mut out: Vec<Source> = vec![];
        for spec in &self.specs {
            let (name, path) = match spec.split_once('=') {
                Some((n, d)) => (n.to_string(), PathBuf::from(d)),
                None => {
                    let dir = PathBuf::from(spec);
                    (default_name(&dir).unwrap_or_else(|| spec.clone()), dir)
                }
            };
            out.push(Source {
                name,
                path,
                adapter: None,
            });
        }
        let n = out.len();
        if let Some(f) = &self.file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--models {}: cannot read it", f.display()))?;
            let mut file: ModelsFile =
                toml::from_str(&text).with_context(|| format!("--models {}", f.display()))?;
            // Paths in the file are relative to the file, as in every cria config file.
            let here = f.parent().unwrap_or(std::path::Path::new(""));
            for m in &mut file.model {
                m.path = here.join(&m.path);
                m.adapter = m.adapter.as_ref().map(|a| here.join(a));
            }
            if file.model.is_empty() {
                anyhow::bail!(
                    "--models {}: no [[model]] tables (each has `name`, `path` and optionally `adapter`)",
                    f.display()
                );
            }
            out.extend(file.model);
        }
        for (i, s) in out.iter().enumerate() {
            let at = match (&self.file, i.checked_sub(n)) {
                (Some(f), Some(j)) => format!(
                    "--models {}: [[model]] {} (`{}`)",
                    f.display(),
                    j + 1,
                    s.name
                ),
                _ => format!("--model {}", self.specs[i]),
            };
            check(s, &at)?;
            if out[..i].iter().any(|o| o.name == s.name) {
                anyhow::bail!("{at}: the name `{}` is given twice", s.name);
            }
        }
        Ok(out)
    }
}

/// A source's directories exist and are what they should be; the error says where it was named.
fn check(s: &Source, at: &str) -> anyhow::Result<()> {
    if s.name.trim().is_empty() {
        anyhow::bail!("{at}: the name is empty");
    }
    if !s.path.exists() {
        anyhow::bail!("{at}: {} does not exist", s.path.display());
    }
    if super::is_gguf(&s.path) {
        if let Some(a) = &s.adapter {
            anyhow::bail!(
                "{at}: the adapter {} cannot be applied to a GGUF file; merge it at export \
                 (`cria export --to gguf --adapter DIR`)",
                a.display()
            );
        }
        return Ok(());
    }
    if !s.path.join("config.json").exists() {
        anyhow::bail!(
            "{at}: {} is not a checkpoint directory (no config.json) or a GGUF file",
            s.path.display()
        );
    }
    if let Some(a) = &s.adapter
        && !a.join("adapter_config.json").exists()
    {
        anyhow::bail!(
            "{at}: {} is not an adapter directory (no adapter_config.json)",
            a.display()
        );
    }
    Ok(())
}

/// A directory's name, or its parent's when it is a stage's `checkpoint` directory
/// (`runs/demo/ppo/checkpoint` is served as `ppo`); a GGUF file's stem.
fn default_name(dir: &std::path::Path) -> Option<String> {
    if super::is_gguf(dir) {
        return dir.file_stem().map(|f| f.to_string_lossy().into_owned());
    }
    let full = dir.canonicalize().ok()?;
    let name = |p: &std::path::Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
    match name(&full)? {
        n if n == "checkpoint" => full.parent().and_then(name),
        n => Some(n),
    }
}

/// Loads the models on one base directory: the base once, each adapter on a clone of it (the
/// clone's tensors are the base's: its weights are in memory once), one engine for them all.
fn load_group(
    group: &[&Source],
    format: Format,
    cfg: &EngineConfig,
) -> anyhow::Result<Vec<ServedModel>> {
    let dir = &group[0].path;
    if super::is_gguf(dir) {
        return load_gguf_group(group, format, cfg);
    }
    let (mut base, mut tok) = super::load_for_inference(dir, None)?;
    // Chat tokens the base lacks are added once, before any clone is taken.
    cria_train::format::resolve(format.into(), dir, &mut base, &mut tok)?;
    // vLLM's `parent` for an adapter: the served base's name (its directory when unserved).
    let parent = group
        .iter()
        .find(|s| s.adapter.is_none())
        .map_or_else(|| dir.display().to_string(), |s| s.name.clone());
    let mut members = vec![];
    for s in group {
        let mut model = base.clone();
        if let Some(ad) = &s.adapter {
            model
                .load_adapter(ad)
                .with_context(|| format!("`{}`: loading the adapter {}", s.name, ad.display()))?;
        }
        let mut tok = tok.clone();
        // An adapter directory carries the chat template it was trained with.
        let from = s.adapter.as_ref().unwrap_or(dir);
        let fmt = cria_train::format::resolve(format.into(), from, &mut model, &mut tok)?.fmt;
        members.push(Member {
            id: s.name.clone(),
            model,
            tok,
            fmt,
            root: from.display().to_string(),
            parent: s.adapter.as_ref().map(|_| parent.clone()),
        });
    }
    let params = base.num_params();
    let served = ServedModel::start_shared(members, cfg.clone());
    for m in &served {
        tracing::info!(
            model = %m.id,
            params,
            context = m.engine.max_len(),
            "loaded {}",
            m.root
        );
    }
    Ok(served)
}

/// A GGUF file under each of the group's names (no adapters: `check` refused them). Each
/// name maps the file again: the pages are the same in memory.
fn load_gguf_group(
    group: &[&Source],
    format: Format,
    cfg: &EngineConfig,
) -> anyhow::Result<Vec<ServedModel>> {
    let mut members = vec![];
    for s in group {
        let g = super::load_gguf(&s.path, None)?;
        let fmt = g.format(format)?;
        members.push(Member {
            id: s.name.clone(),
            model: g.model,
            tok: g.tok,
            fmt,
            root: s.path.display().to_string(),
            parent: None,
        });
    }
    let kind = members[0].model.weight_type().name();
    let served = ServedModel::start_shared(members, cfg.clone());
    for m in &served {
        tracing::info!(
            model = %m.id,
            weights = kind,
            context = m.engine.max_len(),
            "loaded {}",
            m.root
        );
    }
    Ok(served)
}

/// One checkpoint served under `name` (what `cria label` samples answers with).
pub(crate) fn load_one(
    name: &str,
    dir: &std::path::Path,
    format: Format,
    cfg: &EngineConfig,
) -> anyhow::Result<ServedModel> {
    let src = Source {
        name: name.to_string(),
        path: dir.to_path_buf(),
        adapter: None,
    };
    check(&src, &format!("--model {}", dir.display()))?;
    Ok(load_group(&[&src], format, cfg)?.remove(0))
}

/// Every source, grouped by base directory (in the order first named).
fn load_all(
    srcs: &[Source],
    format: Format,
    cfg: &EngineConfig,
) -> anyhow::Result<Vec<ServedModel>> {
    let mut groups: Vec<(PathBuf, Vec<&Source>)> = vec![];
    for s in srcs {
        let key = s.path.canonicalize().unwrap_or_else(|_| s.path.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(s),
            None => groups.push((key, vec![s])),
        }
    }
    let mut out = vec![];
    for (_, g) in groups {
        out.extend(load_group(&g, format, cfg)?);
    }
    Ok(out)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let sources = Sources {
        specs: a.models.clone(),
        file: a.models_file.clone(),
    };
    let srcs = sources.read()?;
    let read_keys = |p: &Option<PathBuf>| match p {
        Some(p) => cria_serve::api::keys::read(p).map_err(anyhow::Error::msg),
        None => Ok(vec![]),
    };
    let keys = read_keys(&a.api_key_file)?;
    let local = matches!(a.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    if !local && keys.is_empty() {
        tracing::warn!(
            "listening on {} without --api-key-file: anyone who can reach this address can use the model",
            a.host
        );
    }
    let cfg = ServerConfig {
        keys,
        admin_keys: read_keys(&a.admin_key_file)?,
        body_limit: a.body_limit_mib << 20,
        per_key: a.max_concurrent_per_key,
        log_requests: a.log_requests,
        allow_origins: a.allow_origins.clone(),
    };
    let engine = EngineConfig {
        parallel: a.parallel,
        queue: a.queue,
        prefill_chunk: a.prefill_chunk,
        prefix_cache: a.prefix_cache,
    };
    let feedback = match &a.feedback_db {
        Some(p) => cria_label::web::feedback::routes(Arc::new(cria_label::Db::open(p)?)),
        None => axum::Router::new(),
    };
    let rt = super::runtime()?;
    rt.block_on(async move {
        let listener = super::listen(&a.host, a.port).await?;
        let bound = listener.local_addr()?;
        let app = App::new(cfg);
        eprintln!("cria serve: listening on http://{bound}/ (loading the model…)");
        let server = tokio::spawn(api::serve_with(listener, app.clone(), feedback, stop_signal()));
        let loaded = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || load_all(&srcs, a.format, &engine)).await?
        }?;
        let names: Vec<String> = loaded.iter().map(|m| m.id.clone()).collect();
        app.set_models(loaded);
        let reloader = reloader(app.clone(), sources, a.format, engine);
        app.set_reloader(reloader.clone());
        eprintln!(
            "cria serve: ready — web chat at http://{bound}/, OpenAI API at http://{bound}/v1 \
             (models: {})",
            names.join(", ")
        );
        tokio::spawn(reload_on_hangup(reloader));
        let drained = async {
            stop_signal().await;
            tokio::time::sleep(Duration::from_secs(a.drain_timeout)).await;
        };
        tokio::select! {
            r = server => r??,
            _ = drained => {
                tracing::warn!("requests still running after {} s; stopping anyway", a.drain_timeout);
                std::process::exit(0);
            }
        }
        eprintln!("cria serve: stopped");
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("cria serve: stopping — no new connections; running requests may finish");
}

/// Loads every model again — the models file read anew, each checkpoint and adapter from its
/// directory — and serves them from then on; requests running finish on the weights they
/// started with. One reload at a time; on failure the old models stay.
fn reloader(app: Arc<App>, sources: Sources, format: Format, engine: EngineConfig) -> Reloader {
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    Arc::new(move || {
        let (app, sources, engine, lock) =
            (app.clone(), sources.clone(), engine.clone(), lock.clone());
        Box::pin(async move {
            let _one = lock.lock().await;
            let loaded =
                tokio::task::spawn_blocking(move || load_all(&sources.read()?, format, &engine))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{e:#}"))?;
            let names: Vec<String> = loaded.iter().map(|m| m.id.clone()).collect();
            app.set_models(loaded);
            Ok(names)
        })
    })
}

/// Reloads on SIGHUP.
async fn reload_on_hangup(reload: Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            eprintln!("cria serve: SIGHUP — reloading the models");
            match reload().await {
                Ok(names) => eprintln!("cria serve: reloaded ({})", names.join(", ")),
                Err(e) => tracing::error!("reload failed, still serving the old models: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = reload;
}

//! `cria serve`: the model as a private service — an OpenAI-compatible API (`/v1/chat/
//! completions`, `/v1/completions`, `/v1/models`, streaming), a web chat page at `/`, and
//! `/metrics`. Binds to this machine only unless `--host` says otherwise.

use super::generate::Format;
use anyhow::Context;
use clap::Args as ClapArgs;
use cria_serve::EngineConfig;
use cria_serve::ServedModel;
use cria_serve::api::{self, App, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(ClapArgs)]
pub struct Args {
    /// A checkpoint directory to serve, as `DIR` (served under the directory's name, or the
    /// stage's for a `…/ppo/checkpoint`) or `NAME=DIR`. Repeat to serve several; a request's `model` picks one.
    #[arg(long = "model", required = true, value_name = "[NAME=]DIR")]
    models: Vec<String>,
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
    /// Sequences each model decodes together (slots): concurrent requests beyond it wait.
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
    /// Seconds to let running requests finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
}

/// A model to serve: its name and directory.
struct Source {
    name: String,
    dir: PathBuf,
}

fn sources(specs: &[String]) -> anyhow::Result<Vec<Source>> {
    let mut out: Vec<Source> = vec![];
    for spec in specs {
        let (name, dir) = match spec.split_once('=') {
            Some((n, d)) => (n.to_string(), PathBuf::from(d)),
            None => {
                let dir = PathBuf::from(spec);
                (default_name(&dir).unwrap_or_else(|| spec.clone()), dir)
            }
        };
        if !dir.join("config.json").exists() {
            anyhow::bail!(
                "--model {spec}: {} is not a checkpoint directory (no config.json)",
                dir.display()
            );
        }
        if out.iter().any(|s| s.name == name) {
            anyhow::bail!("--model {spec}: the name `{name}` is given twice (use NAME=DIR)");
        }
        out.push(Source { name, dir });
    }
    Ok(out)
}

/// A directory's name, or its parent's when it is a stage's `checkpoint` directory
/// (`runs/demo/ppo/checkpoint` is served as `ppo`).
fn default_name(dir: &std::path::Path) -> Option<String> {
    let full = dir.canonicalize().ok()?;
    let name = |p: &std::path::Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
    match name(&full)? {
        n if n == "checkpoint" => full.parent().and_then(name),
        n => Some(n),
    }
}

fn load(src: &Source, format: Format, cfg: &EngineConfig) -> anyhow::Result<ServedModel> {
    let (mut model, mut tok) = super::load_for_inference(&src.dir, None)?;
    let fmt = cria_train::format::resolve(format.into(), &src.dir, &mut model, &mut tok)?.fmt;
    let params = model.num_params();
    let m = ServedModel::start(
        src.name.clone(),
        model,
        tok,
        fmt,
        src.dir.display().to_string(),
        cfg.clone(),
    );
    tracing::info!(
        model = %src.name,
        params,
        context = m.engine.max_len(),
        "loaded {}",
        src.dir.display()
    );
    Ok(m)
}

fn load_all(
    srcs: &[Source],
    format: Format,
    cfg: &EngineConfig,
) -> anyhow::Result<Vec<ServedModel>> {
    srcs.iter().map(|s| load(s, format, cfg)).collect()
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let srcs = Arc::new(sources(&a.models)?);
    let keys = match &a.api_key_file {
        Some(p) => cria_serve::api::keys::read(p).map_err(anyhow::Error::msg)?,
        None => vec![],
    };
    let local = matches!(a.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    if !local && keys.is_empty() {
        tracing::warn!(
            "listening on {} without --api-key-file: anyone who can reach this address can use the model",
            a.host
        );
    }
    let cfg = ServerConfig {
        keys,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let app = App::new(cfg);
        eprintln!("cria serve: listening on http://{bound}/ (loading the model…)");
        let server = tokio::spawn(api::serve(listener, app.clone(), stop_signal()));
        let loaded = {
            let (srcs, engine) = (srcs.clone(), engine.clone());
            tokio::task::spawn_blocking(move || load_all(&srcs, a.format, &engine)).await?
        }?;
        let names: Vec<String> = loaded.iter().map(|m| m.id.clone()).collect();
        app.set_models(loaded);
        eprintln!(
            "cria serve: ready — web chat at http://{bound}/, OpenAI API at http://{bound}/v1 \
             (models: {})",
            names.join(", ")
        );
        tokio::spawn(reload_on_hangup(app.clone(), srcs, a.format, engine));
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
async fn stop_signal() {
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

/// On SIGHUP, loads every model again from its directory (a new checkpoint written there)
/// and serves it from then on; requests running finish on the weights they started with.
async fn reload_on_hangup(
    app: Arc<App>,
    srcs: Arc<Vec<Source>>,
    format: Format,
    engine: EngineConfig,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            eprintln!("cria serve: SIGHUP — reloading the models");
            let (srcs, engine) = (srcs.clone(), engine.clone());
            match tokio::task::spawn_blocking(move || load_all(&srcs, format, &engine)).await {
                Ok(Ok(models)) => {
                    app.set_models(models);
                    eprintln!("cria serve: reloaded");
                }
                Ok(Err(e)) => tracing::error!("reload failed, still serving the old models: {e:#}"),
                Err(e) => tracing::error!("reload failed: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (app, srcs, format, engine);
}

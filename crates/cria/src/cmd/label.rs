//! `cria label`: human feedback from the company's own people. `serve` runs the labelling web
//! application; `user`, `project`, `import`, `sample`, `stats` and `export` do the same work
//! from the command line (every subcommand takes `--db`).

use super::generate::Format;
use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use cria_label::db::projects::{self, Kind, NewProject, Sampling};
use cria_label::db::tasks;
use cria_label::db::users::{self, Role};
use cria_label::web::LabelApp;
use cria_label::{Db, auth, export, import, quality, sampler};
use cria_serve::EngineConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Subcommand)]
pub enum Command {
    /// The labelling web application: annotators write demonstrations and rank sampled
    /// answers, admins manage people and projects, watch agreement and export.
    Serve(ServeArgs),
    /// People: `user add NAME --role annotator|admin` prints a one-time password.
    #[command(subcommand)]
    User(UserCommand),
    /// Projects: `project add NAME --kind ranking|demonstration|pairwise`.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Adds prompts to a project from files (`{prompt}`, `{messages}`, Alpaca or self-instruct
    /// output; K-way rankings become gold items).
    Import(ImportArgs),
    /// Samples the K answers of every prompt still waiting for them, then exits.
    Sample(SampleArgs),
    /// Agreement between annotators and with gold items, Likert scores and flags, per project.
    Stats(StatsArgs),
    /// Writes the labels as the files cria trains on.
    Export(ExportArgs),
}

#[derive(ClapArgs)]
pub struct DbArg {
    /// The labels database (SQLite; created when missing).
    #[arg(long, value_name = "FILE.sqlite")]
    db: PathBuf,
}

impl DbArg {
    fn open(&self) -> anyhow::Result<Arc<Db>> {
        Ok(Arc::new(Db::open(&self.db)?))
    }
}

/// The model that samples answers.
#[derive(ClapArgs)]
pub struct ModelArgs {
    /// How to prompt a checkpoint without a chat template (see `cria chat --help`).
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Answers sampled together (the largest K a project may ask for).
    #[arg(long, default_value_t = 9)]
    parallel: usize,
}

impl ModelArgs {
    fn load(&self, dir: &Path) -> anyhow::Result<Arc<cria_serve::ServedModel>> {
        let cfg = EngineConfig {
            parallel: self.parallel,
            queue: 256,
            ..Default::default()
        };
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        Ok(Arc::new(super::serve::load_one(
            &name,
            dir,
            self.format,
            &cfg,
        )?))
    }
}

#[derive(ClapArgs)]
pub struct ServeArgs {
    #[command(flatten)]
    db: DbArg,
    /// The checkpoint that samples the answers people rank (without it, only demonstrations
    /// and imported gold items can be labelled).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    sampling: ModelArgs,
    /// The address to listen on (this machine only unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8100)]
    port: u16,
    /// Mark the session cookies Secure (when people reach the page over HTTPS).
    #[arg(long)]
    secure_cookies: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Adds a person and prints their one-time password (they choose their own at first login).
    Add {
        name: String,
        #[arg(long, value_parser = ["annotator", "admin"], default_value = "annotator")]
        role: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Gives a person a new one-time password (their sessions end).
    Reset {
        name: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Lists the people.
    List {
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Creates a project.
    Add {
        name: String,
        /// What annotators do: rank K sampled answers, write demonstrations, or compare two.
        #[arg(long, value_parser = ["ranking", "demonstration", "pairwise"], default_value = "ranking")]
        kind: String,
        /// Answers to rank (2 to 9).
        #[arg(long)]
        k: Option<usize>,
        /// Annotators per prompt (what agreement is measured on).
        #[arg(long, default_value_t = 1)]
        overlap: usize,
        /// Sampling temperature of the answers.
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Longest answer, in tokens.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Guidelines shown above every task.
        #[arg(long, default_value = "")]
        instructions: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Lists the projects and how far each is.
    List {
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(ClapArgs)]
pub struct ImportArgs {
    #[command(flatten)]
    db: DbArg,
    /// The project the prompts go to.
    #[arg(long)]
    project: String,
    /// Prompt files (JSONL or a JSON list, optionally gzipped).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(ClapArgs)]
pub struct SampleArgs {
    #[command(flatten)]
    db: DbArg,
    /// The checkpoint that samples the answers.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    sampling: ModelArgs,
}

#[derive(ClapArgs)]
pub struct StatsArgs {
    #[command(flatten)]
    db: DbArg,
    /// One project only.
    #[arg(long)]
    project: Option<String>,
}

#[derive(ClapArgs)]
pub struct ExportArgs {
    #[command(flatten)]
    db: DbArg,
    /// Demonstrations as chat records, for `cria sft`.
    #[arg(long, value_name = "OUT.jsonl")]
    sft: Option<PathBuf>,
    /// Rankings `{prompt, responses, ranking}` (ties kept), for `cria rm` and `cria dpo`.
    #[arg(long, value_name = "OUT.jsonl")]
    rankings: Option<PathBuf>,
    /// One ranking per prompt, the annotators' combined by ranked pairs (instead of one per
    /// annotator and prompt).
    #[arg(long, requires = "rankings")]
    merge: bool,
    /// The chat page's thumbs, as unpaired `{prompt, completion, label}` (KTO's layout).
    #[arg(long, value_name = "OUT.jsonl")]
    ratings: Option<PathBuf>,
    /// One project only.
    #[arg(long)]
    project: Option<String>,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve(a) => serve(a),
        Command::User(c) => user(c),
        Command::Project(c) => project(c),
        Command::Import(a) => import_files(a),
        Command::Sample(a) => sample(a),
        Command::Stats(a) => stats(a),
        Command::Export(a) => export_files(a),
    }
}

fn user(c: UserCommand) -> anyhow::Result<()> {
    match c {
        UserCommand::Add { name, role, db } => {
            let role = Role::parse(&role).expect("clap checked it");
            let password = auth::one_time_password();
            let hash = auth::hash_password(&password);
            db.open()?.tx(|t| users::add(t, &name, role, &hash))?;
            println!("{name} ({}): one-time password {password}", role.as_str());
            eprintln!("give it to them; they choose their own password at first login");
        }
        UserCommand::Reset { name, db } => {
            let password = auth::one_time_password();
            let hash = auth::hash_password(&password);
            db.open()?.tx(|t| {
                let (u, _) = users::by_name(t, &name)?
                    .ok_or_else(|| cria_label::LabelError::NotFound(format!("user `{name}`")))?;
                users::set_password(t, u.id, &hash, true)
            })?;
            println!("{name}: one-time password {password}");
        }
        UserCommand::List { db } => {
            for u in db.open()?.read(users::list)? {
                if u.role != Role::Chat {
                    let state = if u.disabled { " (disabled)" } else { "" };
                    println!("{}\t{}{state}", u.name, u.role.as_str());
                }
            }
        }
    }
    Ok(())
}

fn project(c: ProjectCommand) -> anyhow::Result<()> {
    match c {
        ProjectCommand::Add {
            name,
            kind,
            k,
            overlap,
            temperature,
            max_tokens,
            instructions,
            db,
        } => {
            let p = NewProject {
                name,
                kind: Kind::parse(&kind).expect("clap checked it"),
                k,
                overlap,
                sampling: Sampling {
                    temperature,
                    max_tokens,
                    ..Default::default()
                },
                instructions,
            };
            let p = db.open()?.tx(|t| projects::create(t, &p))?;
            println!(
                "project `{}`: {} (K = {}, overlap {})",
                p.name,
                p.kind.as_str(),
                p.k,
                p.overlap
            );
        }
        ProjectCommand::List { db } => {
            let db = db.open()?;
            db.read(|c| {
                for p in projects::list(c)? {
                    let g = projects::progress(c, &p)?;
                    println!(
                        "{}\t{}\tK={}\toverlap={}\tprompts={}\tready={}\tlabels={}\tskipped={}",
                        p.name,
                        p.kind.as_str(),
                        p.k,
                        p.overlap,
                        g.prompts,
                        g.ready,
                        g.done,
                        g.skipped
                    );
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn find_project(db: &Db, name: &str) -> anyhow::Result<projects::Project> {
    db.read(|c| projects::by_name(c, name))?.with_context(|| {
        format!("no project named `{name}` (create it with `cria label project add {name}`)")
    })
}

fn import_files(a: ImportArgs) -> anyhow::Result<()> {
    let db = a.db.open()?;
    let p = find_project(&db, &a.project)?;
    // Every file is read before any is stored: a bad line anywhere stores nothing.
    let mut all = vec![];
    for f in &a.files {
        all.extend(import::read(f)?);
    }
    let n = db.tx(|t| projects::add_prompts(t, &p, &all))?;
    println!("{n} prompts imported into `{}`", p.name);
    if p.kind.samples() {
        eprintln!(
            "their answers are sampled by `cria label serve --model DIR` (or `cria label sample`)"
        );
    }
    Ok(())
}

fn sample(a: SampleArgs) -> anyhow::Result<()> {
    let db = a.db.open()?;
    let model = a.sampling.load(&a.model)?;
    let mut failed = Default::default();
    let mut total = 0;
    loop {
        let n = sampler::step(&db, &model, &mut failed)?;
        if n == 0 {
            break;
        }
        total += n;
        eprintln!("{total} prompts have their answers");
    }
    println!(
        "answers sampled for {total} prompts ({} could not be)",
        failed.len()
    );
    Ok(())
}

fn stats(a: StatsArgs) -> anyhow::Result<()> {
    let db = a.db.open()?;
    let list = match &a.project {
        Some(n) => vec![find_project(&db, n)?],
        None => db.read(projects::list)?,
    };
    for p in list {
        let (labels, progress) =
            db.read(|c| Ok((tasks::labels(c, &p)?, projects::progress(c, &p)?)))?;
        let q = quality::measure(&labels);
        print!("{}", quality::markdown(&p.name, p.kind.as_str(), &q));
        println!(
            "Progress: {} prompts, {} ready, {} labels, {} skipped, {} open.\n",
            progress.prompts, progress.ready, progress.done, progress.skipped, progress.open
        );
    }
    Ok(())
}

fn export_files(a: ExportArgs) -> anyhow::Result<()> {
    if a.sft.is_none() && a.rankings.is_none() && a.ratings.is_none() {
        anyhow::bail!(
            "say what to export: --sft OUT.jsonl, --rankings OUT.jsonl and/or --ratings OUT.jsonl"
        );
    }
    let db = a.db.open()?;
    let only = a.project.as_deref();
    if let Some(p) = &a.project {
        find_project(&db, p)?;
    }
    let jobs: [(&Option<PathBuf>, &str); 3] = [
        (&a.sft, "demonstrations"),
        (&a.rankings, "rankings"),
        (&a.ratings, "ratings"),
    ];
    for (path, what) in jobs {
        let Some(path) = path else { continue };
        let (records, counts) = match what {
            "demonstrations" => export::demonstrations(&db, only)?,
            "rankings" => export::rankings(&db, only, a.merge)?,
            _ => export::ratings(&db)?,
        };
        export::write_jsonl(path, &records)?;
        let tied = if counts.all_tied > 0 {
            format!(" ({} left out: every answer tied)", counts.all_tied)
        } else {
            String::new()
        };
        println!("{}: {} {what}{tied}", path.display(), counts.records);
    }
    Ok(())
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let db = a.db.open()?;
    let model = a.model.as_deref().map(|m| a.sampling.load(m)).transpose()?;
    let admins = db
        .read(users::list)?
        .into_iter()
        .filter(|u| u.role == Role::Admin && !u.disabled)
        .count();
    if admins == 0 {
        eprintln!(
            "cria label: no admin yet — add one with `cria label user add NAME --role admin --db {}`",
            a.db.db.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = model.clone().map(|m| {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || sampler::run(db, m, stop, Duration::from_millis(500)))
    });
    let app = Arc::new(LabelApp {
        secure_cookies: a.secure_cookies,
        ..Arc::into_inner(LabelApp::new(db, model)).expect("one owner")
    });
    let rt = super::runtime()?;
    rt.block_on(async move {
        let listener = super::listen(&a.host, a.port).await?;
        eprintln!(
            "cria label: ready — http://{}/ (labels in {})",
            listener.local_addr()?,
            a.db.db.display()
        );
        cria_label::web::serve(listener, app, super::serve::stop_signal()).await?;
        anyhow::Ok(())
    })?;
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    eprintln!("cria label: stopped");
    Ok(())
}

//! `cria world`: writes the demo's example world (a fictional company) to a directory.

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use cria_world::{World, WorldSize};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum Size {
    /// A few products and people: seconds per stage (tests, CI).
    Tiny,
    /// The demo's world: minutes for the whole recipe on 2 cores.
    Demo,
}

#[derive(ClapArgs)]
pub struct Args {
    /// Directory to write into (created).
    #[arg(long)]
    out: PathBuf,
    /// The same seed gives the same world.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "demo")]
    size: Size,
    /// Chance that the simulated labeller swaps each adjacent pair of a ranking (0 = perfect
    /// agreement; InstructGPT's labellers agreed on about 73% of comparisons).
    #[arg(long, default_value_t = 0.0)]
    disagreement: f64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.disagreement) {
        anyhow::bail!(
            "--disagreement must be between 0 and 1, got {}",
            a.disagreement
        );
    }
    let size = match a.size {
        Size::Tiny => WorldSize::TINY,
        Size::Demo => WorldSize::DEMO,
    };
    let world = World::generate(a.seed, size);
    world
        .write(&a.out, size, a.seed, a.disagreement)
        .with_context(|| format!("writing the world to {}", a.out.display()))?;
    println!("{}", a.out.display());
    Ok(())
}

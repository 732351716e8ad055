//! cria-train: the stages of the recipe side by side ([`stages`]: pretrain, SFT, reward
//! model, DPO, PPO), the pieces they share, evaluation and the pipeline that runs them all.
//!
//! Shared by the stages: [`batch`] (rows into batches, one pad rule), [`scoring`] (losses,
//! log-probabilities, rewards), [`sampler`] (batched sampling), [`method`] (full, LoRA,
//! LLaMA-Adapter), [`data`] (seeded data sources, token shards), [`prefs`] (preference records
//! as rows), [`losses`] (the objectives as tensor functions), [`trainer`] (the loop),
//! [`update`] (the one parameter update: clipping and AdamW from [`optim`]), [`state`]
//! (checkpointed state and resume), [`metrics`] (step logs) and [`schedule`].

pub mod batch;
pub mod check;
pub mod collective;
pub mod config;
pub mod data;
pub mod divergence;
pub mod dp;
pub mod error;
pub mod eval;
pub mod format;
pub mod keys;
pub mod losses;
pub mod method;
pub mod metrics;
pub mod optim;
pub mod pipeline;
pub mod prefs;
pub mod sampler;
pub mod schedule;
pub mod scoring;
pub mod stages;
pub mod state;
pub mod trainer;
pub mod update;

pub use config::TrainConfig;
pub use error::{Result, TrainError};

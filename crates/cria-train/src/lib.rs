//! cria-train: AdamW, learning-rate schedules, the training loop every stage shares (gradient
//! accumulation, clipping, validation, atomic checkpoints, exact resume), and the stages.

pub mod config;
pub mod dpo;
pub mod error;
pub mod eval;
pub mod losses;
pub mod optim;
pub mod pipeline;
pub mod ppo;
pub mod prefs;
pub mod pretrain;
pub mod report;
pub mod rm;
pub mod rollout;
pub mod schedule;
pub mod sft;
pub mod state;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};

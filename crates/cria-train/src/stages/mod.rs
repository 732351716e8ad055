//! The recipe's training stages, side by side; each reads top to bottom as its algorithm and
//! imports only the shared pieces (batching, scoring, the loop, the parameter update), never
//! another stage.
//!
//! - [`pretrain`]: next-token prediction on a corpus, from scratch or continuing a checkpoint;
//! - [`sft`]: supervised fine-tuning on demonstrations (InstructGPT step 1; Alpaca), full,
//!   LoRA or LLaMA-Adapter;
//! - [`rm`]: a reward model from ranked answers (InstructGPT step 2);
//! - [`dpo`]: Direct Preference Optimization on preference pairs;
//! - [`ppo`]: RL against the reward model with a per-token KL penalty (InstructGPT step 3).

pub mod dpo;
pub mod ppo;
pub mod pretrain;
pub mod rm;
pub mod sft;

//! What the labelling tool's tests share: a tiny chat model to sample answers with.
#![allow(dead_code)]

use cria_serve::{EngineConfig, ServedModel};
use std::path::Path;

/// cria-serve's `chat` fixture (a random LLaMA with Qwen2.5's chat template), served as `name`.
pub fn chat_model(name: &str) -> ServedModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cria-serve/tests/fixtures/chat");
    let model =
        cria_core::checkpoint::load_model(&dir, &cria_core::device::inference_device()).unwrap();
    let tok = cria_core::checkpoint::load_tokenizer(&dir, &model.cfg).unwrap();
    let fmt = cria_data::chat::ChatFormat::for_checkpoint(&dir, &tok).unwrap();
    ServedModel::start(
        name.into(),
        model,
        tok,
        fmt,
        dir.display().to_string(),
        EngineConfig::default(),
    )
}

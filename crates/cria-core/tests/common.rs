//! Helpers of cria-core's integration tests: its fixtures, and the shared test kit.
#![allow(dead_code, unused_imports)]

pub use cria_testkit::{ids_tensor, max_diff, read_tensor, weights};
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

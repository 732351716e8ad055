//! Range checks of settings, each naming its key, run when a config is loaded and before a
//! pipeline's first stage: a wrong value is an error before anything runs, never a panic, a
//! silent clamp or a run into garbage.

use crate::error::{Result, TrainError};
use std::fmt::Display;

/// The error for setting `key`.
pub fn bad(key: &str, msg: impl Display) -> TrainError {
    TrainError::Setting {
        key: key.to_string(),
        msg: msg.to_string(),
    }
}

/// A finite number above 0.
pub fn positive(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        return Ok(());
    }
    Err(bad(key, format!("must be a positive number, got {v}")))
}

/// A finite number at least 0.
pub fn non_negative(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        return Ok(());
    }
    Err(bad(key, format!("must be a number at least 0, got {v}")))
}

/// A finite number.
pub fn finite(key: &str, v: f64) -> Result<()> {
    if v.is_finite() {
        return Ok(());
    }
    Err(bad(key, format!("must be a finite number, got {v}")))
}

/// In `[0, 1)`: a fraction held out, a dropout rate, an optimizer's beta.
pub fn fraction(key: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        return Ok(());
    }
    Err(bad(key, format!("must be at least 0 and below 1, got {v}")))
}

/// In `[0, 1]`.
pub fn unit(key: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        return Ok(());
    }
    Err(bad(key, format!("must be within [0, 1], got {v}")))
}

/// A count of at least `min`.
pub fn at_least(key: &str, v: u64, min: u64) -> Result<()> {
    if v >= min {
        return Ok(());
    }
    Err(bad(key, format!("must be at least {min}, got {v}")))
}

/// A length of tokens that must fit the model's context of `context` positions.
pub fn fits_context(key: &str, len: usize, context: usize) -> Result<()> {
    if len <= context {
        return Ok(());
    }
    Err(bad(
        key,
        format!(
            "{len} tokens exceed the model's context of {context} (max_position_embeddings); \
             lower it"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_the_key_and_the_value() {
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert_eq!(
            msg(positive("train.lr", -1.0)),
            "train.lr: must be a positive number, got -1"
        );
        assert!(positive("x", f64::NAN).is_err() && positive("x", 0.0).is_err());
        assert!(non_negative("x", 0.0).is_ok() && non_negative("x", f64::INFINITY).is_err());
        assert!(fraction("x", 0.0).is_ok() && fraction("x", 1.0).is_err());
        assert!(unit("x", 1.0).is_ok() && unit("x", -0.1).is_err());
        assert_eq!(
            msg(at_least("train.steps", 0, 1)),
            "train.steps: must be at least 1, got 0"
        );
        assert!(msg(fits_context("data.seq_len", 513, 512)).contains("context of 512"));
        assert!(fits_context("data.seq_len", 512, 512).is_ok());
    }
}

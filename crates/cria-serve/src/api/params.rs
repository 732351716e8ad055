//! Reading a request body: known fields are checked (a wrong type or value is a 400 naming
//! the field), unknown fields are ignored as OpenAI-compatible servers do.

use super::error::ApiError;
use cria_core::sampling::SamplingParams;
use serde_json::{Map, Value};

pub type Obj = Map<String, Value>;

/// The body as a JSON object.
pub fn object(body: &[u8]) -> Result<Obj, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A field's value, `None` when absent or null.
fn field<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

pub fn number(o: &Obj, key: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    match v.as_f64() {
        Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
        Some(x) => Err(ApiError::bad_param(
            key,
            format!("`{key}` is {x}; it must be between {lo} and {hi}"),
        )),
        None => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be a number"),
        )),
    }
}

pub fn integer(o: &Obj, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    match v.as_i64() {
        Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
        Some(x) => Err(ApiError::bad_param(
            key,
            format!("`{key}` is {x}; it must be between {lo} and {hi}"),
        )),
        None => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be an integer"),
        )),
    }
}

pub fn boolean(o: &Obj, key: &str) -> Result<bool, ApiError> {
    match field(o, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be true or false"),
        )),
    }
}

pub fn string<'a>(o: &'a Obj, key: &str) -> Result<Option<&'a str>, ApiError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_param(
            key,
            format!("`{key}` must be a string"),
        )),
    }
}

/// What every generation request shares (chat and completions).
#[derive(Debug, Clone)]
pub struct Generation {
    /// The reply's token budget, when the request sets one.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    /// Strings that end a reply (not returned).
    pub stop: Vec<String>,
    /// Choices per prompt.
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
}

/// The most stop strings a request may give.
const MAX_STOPS: usize = 16;

pub fn generation(o: &Obj) -> Result<Generation, ApiError> {
    let max_tokens = match integer(o, "max_completion_tokens", 0, i64::MAX)? {
        Some(m) => Some(m),
        None => integer(o, "max_tokens", 0, i64::MAX)?,
    };
    let stop = match field(o, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= MAX_STOPS => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::bad_param("stop", "`stop` must be a string or a list of strings")
            })?,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_param(
                "stop",
                format!("`stop` may hold at most {MAX_STOPS} strings"),
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "stop",
                "`stop` must be a string or a list of strings",
            ));
        }
    };
    if stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::bad_param(
            "stop",
            "a stop string may not be empty",
        ));
    }
    let stream_options = match field(o, "stream_options") {
        None => None,
        Some(Value::Object(so)) => Some(so),
        Some(_) => {
            return Err(ApiError::bad_param(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    };
    let include_usage = match stream_options {
        Some(so) => boolean(so, "include_usage").map_err(|_| {
            ApiError::bad_param(
                "stream_options.include_usage",
                "`include_usage` must be true or false",
            )
        })?,
        None => false,
    };
    let top_k = integer(o, "top_k", -1, i64::from(u32::MAX))?;
    Ok(Generation {
        max_tokens: max_tokens.map(|m| m as usize),
        sampling: SamplingParams {
            temperature: number(o, "temperature", 0.0, 2.0)?.unwrap_or(1.0),
            top_p: number(o, "top_p", 0.0, 1.0)?.filter(|p| *p < 1.0),
            top_k: top_k.filter(|k| *k > 0).map(|k| k as usize),
            min_p: number(o, "min_p", 0.0, 1.0)?.filter(|p| *p > 0.0),
            presence_penalty: number(o, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
            frequency_penalty: number(o, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
            seed: match integer(o, "seed", i64::MIN, i64::MAX)? {
                Some(s) => s as u64,
                None => fresh_seed(),
            },
        },
        stop,
        n: integer(o, "n", 1, 128)?.unwrap_or(1) as usize,
        stream: boolean(o, "stream")?,
        include_usage,
    })
}

/// A seed for a request that gives none: different every time, as OpenAI samples.
fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // SplitMix64's finaliser spreads consecutive values apart.
    let mut z = t ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `response_format`: plain text only (a JSON mode needs constrained decoding, which this
/// server does not do yet).
pub fn check_response_format(o: &Obj) -> Result<(), ApiError> {
    let Some(rf) = field(o, "response_format") else {
        return Ok(());
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(()),
        Some(t @ ("json_object" | "json_schema")) => Err(ApiError::bad_param(
            "response_format",
            format!(
                "response_format `{t}` is not supported by this server (it would need \
                 constrained decoding); ask for JSON in the prompt instead"
            ),
        )),
        _ => Err(ApiError::bad_param(
            "response_format",
            "`response_format` must be {\"type\": \"text\"}",
        )),
    }
}

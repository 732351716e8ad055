//! The Jinja environment transformers renders chat templates in, rebuilt on minijinja:
//! `trim_blocks` and `lstrip_blocks` on, Python's string and dict methods, `raise_exception`,
//! `strftime_now`, and a `tojson` that writes what Python's `json.dumps(x,
//! ensure_ascii=False, indent=...)` writes (key order kept, `", "` and `": "` separators
//! without an indent), which tool definitions are rendered through.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

/// Any serialisable value as a template value (maps keep their key order).
pub fn to_value<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// A fresh environment with transformers' settings and helpers.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters"),
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| strftime(&fmt, now_utc()));
    env.add_filter("tojson", tojson);
    env
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn dump(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) -> Result<(), Error> {
    let (item_sep, newline) = match indent {
        Some(n) => (",", Some(n)),
        None => (", ", None),
    };
    let open = |out: &mut String, d: usize| {
        if let Some(n) = newline {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number(v)),
        ValueKind::String => {
            out.push_str(&serde_json::to_string(v.as_str().unwrap_or_default()).expect("JSON"))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                open(out, depth + 1);
                dump(item, indent, depth + 1, out)?;
            }
            open(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                open(out, depth + 1);
                let key = k.as_str().map_or_else(|| k.to_string(), String::from);
                out.push_str(&serde_json::to_string(&key).expect("JSON"));
                out.push_str(": ");
                dump(&v.get_item(k)?, indent, depth + 1, out)?;
            }
            open(out, depth);
            out.push('}');
        }
        _ => out.push_str(&serde_json::to_string(&v.to_string()).expect("JSON")),
    }
    Ok(())
}

/// A number as Python's `json.dumps` writes it: integers as they are, floats by `repr`
/// (`1.0`, `0.5`, `1e-05`).
fn number(v: &Value) -> String {
    if v.is_integer() {
        return v.to_string();
    }
    let x = f64::try_from(v.clone()).unwrap_or(f64::NAN);
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if x != 0.0 && (x.abs() < 1e-4 || x.abs() >= 1e16) {
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').expect("scientific");
        let exp: i32 = exp.parse().expect("exponent");
        return format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    }
    if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// Seconds since the Unix epoch, now.
fn now_utc() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `strftime` in UTC for the directives chat templates use (`%d %b %Y`, `%B`, `%m`, `%A`,
/// `%a`, `%H:%M:%S`, `%%`).
fn strftime(fmt: &str, secs: i64) -> Result<String, Error> {
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil(days);
    let tod = secs.rem_euclid(86_400);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.unwrap_or(' ')
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, ctx: Value) -> String {
        let mut env = environment();
        env.add_template_owned("t", src.to_string()).unwrap();
        env.get_template("t").unwrap().render(ctx).unwrap()
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let tool: serde_json::Value = serde_json::from_str(
            r#"{"name": "price", "parameters": {"type": "object", "required": ["item"], "n": 1.0, "e": 1e-05}}"#,
        )
        .unwrap();
        let ctx = to_value(serde_json::json!({"t": tool}));
        // json.dumps(t, ensure_ascii=False)
        assert_eq!(
            render("{{ t | tojson }}", ctx.clone()),
            r#"{"name": "price", "parameters": {"type": "object", "required": ["item"], "n": 1.0, "e": 1e-05}}"#
        );
        // json.dumps(t, ensure_ascii=False, indent=2)
        assert_eq!(
            render("{{ t.parameters.required | tojson(indent=2) }}", ctx),
            "[\n  \"item\"\n]"
        );
        let ctx = to_value(serde_json::json!({"s": "é \"q\"\n"}));
        assert_eq!(render("{{ s | tojson }}", ctx), "\"é \\\"q\\\"\\n\"");
    }

    #[test]
    fn python_methods_trim_and_lstrip_blocks_as_transformers() {
        let ctx = to_value(serde_json::json!({"x": "  Hi there  "}));
        assert_eq!(
            render("{{ x.strip().startswith('Hi') }}|{{ x.split() }}", ctx),
            "True|['Hi', 'there']"
        );
        // trim_blocks eats the newline after a tag; lstrip_blocks the indent before one.
        assert_eq!(
            render("a\n  {% if true %}\nb\n  {% endif %}\nc", Value::UNDEFINED),
            "a\nb\nc"
        );
    }

    #[test]
    fn strftime_gives_the_civil_date() {
        // 2024-07-26 00:00:00 UTC is 1721952000 s, a Friday.
        assert_eq!(strftime("%d %b %Y", 1_721_952_000).unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %m/%d %H:%M:%S", 1_721_952_000 + 3661).unwrap(),
            "Friday July 07/26 01:01:01"
        );
        assert!(strftime("%Q", 0).is_err());
    }
}

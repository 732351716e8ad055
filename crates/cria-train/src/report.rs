//! The pipeline's report card: `report.md`, and `report.html`, a self-contained page with the
//! same tables and inline SVG plots (loss per stage, reward-model accuracy, PPO's reward, KL
//! and reply length): what each training stage did (from its metrics file) and every
//! evaluation metric for each model, base → SFT → DPO/PPO.

use crate::error::Result;
use crate::eval::Report;
use crate::pipeline::Stage;
use std::fmt::Write as _;
use std::path::Path;

/// Lines of a stage's `metrics.jsonl`.
pub fn metrics(out: &Path, stage: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join(stage).join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn last_of(rows: &[serde_json::Value], key: &str) -> Option<f64> {
    rows.iter()
        .rev()
        .find_map(|r| r.get(key).and_then(|v| v.as_f64()))
}

fn first_of(rows: &[serde_json::Value], key: &str) -> Option<f64> {
    rows.iter()
        .find_map(|r| r.get(key).and_then(|v| v.as_f64()))
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.3}"))
}

/// What each stage shows, as (label, first, last) rows of its metrics.
fn stage_lines(out: &Path, stage: &str) -> Vec<(String, Option<f64>, Option<f64>)> {
    let rows = metrics(out, stage);
    let keys: &[(&str, &str)] = match stage {
        "pretrain" | "sft" => &[("loss", "training loss"), ("val_loss", "validation loss")],
        "rm" => &[
            ("loss", "ranking loss"),
            ("val_accuracy", "held-out pair accuracy"),
        ],
        "dpo" => &[
            ("loss", "DPO loss"),
            ("val_reward_accuracy", "held-out reward accuracy"),
            ("reward_margin", "implicit reward margin"),
        ],
        "ppo" => &[
            ("reward", "mean reward"),
            ("kl", "KL to SFT (nats/reply)"),
            ("entropy", "entropy"),
            ("reply_len", "reply length"),
        ],
        _ => &[],
    };
    keys.iter()
        .map(|(k, label)| (label.to_string(), first_of(&rows, k), last_of(&rows, k)))
        .collect()
}

/// A line chart of `series` (name, points) as an SVG string.
pub fn line_chart(title: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    use plotters::prelude::*;
    let mut svg = String::new();
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|(_, y)| y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return String::new();
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    {
        let root = SVGBackend::with_string(&mut svg, (520, 300)).into_drawing_area();
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
            chart.configure_mesh().x_desc(x_label).draw()?;
            let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
            for (i, (name, points)) in series.iter().enumerate() {
                let c = colours[i % colours.len()];
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
                // Sparse series (validation every few steps) also get markers.
                if points.len() <= 20 {
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
            Ok(())
        };
        if let Err(e) = draw() {
            tracing::warn!("plot `{title}` not drawn: {e}");
        }
    }
    svg
}

/// Named lines of (x, y) points.
type Series = Vec<(String, Vec<(f64, f64)>)>;
/// A plot: title, x label, series.
type Plot = (String, String, Series);

/// The plots of a stage.
fn stage_plots(out: &Path, stage: &str) -> Vec<Plot> {
    let rows = metrics(out, stage);
    let series = |key: &str| -> (String, Vec<(f64, f64)>) {
        let pts = rows
            .iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect();
        (key.to_string(), pts)
    };
    let plot = |title: &str, keys: &[&str]| {
        let s: Vec<_> = keys
            .iter()
            .map(|k| series(k))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        (format!("{stage}: {title}"), "step".to_string(), s)
    };
    let plots = match stage {
        "pretrain" | "sft" => vec![plot("loss", &["loss", "val_loss"])],
        "rm" => vec![
            plot("ranking loss", &["loss", "val_loss"]),
            plot("pair accuracy", &["accuracy", "val_accuracy"]),
        ],
        "dpo" => vec![
            plot("loss", &["loss", "val_loss"]),
            plot("implicit rewards", &["reward_chosen", "reward_rejected"]),
        ],
        "ppo" => vec![
            plot("reward", &["reward"]),
            plot("KL to SFT (nats per reply)", &["kl"]),
            plot("reply length (tokens)", &["reply_len"]),
        ],
        _ => vec![],
    };
    plots
        .into_iter()
        .filter(|(_, _, s)| !s.is_empty())
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markdown tables (as this module writes them) and text as HTML.
fn html_of(md: &str) -> String {
    let mut html = String::new();
    let mut in_table = false;
    let mut in_code = false;
    for line in md.lines() {
        if line.starts_with("```") {
            html.push_str(if in_code { "</pre>\n" } else { "<pre>" });
            in_code = !in_code;
            continue;
        }
        if in_code {
            html.push_str(&escape(line));
            html.push('\n');
            continue;
        }
        if let Some(cells) = line.strip_prefix('|') {
            if line.starts_with("|---") {
                continue;
            }
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                html.push_str("<table>\n");
                in_table = true;
            }
            html.push_str("<tr>");
            for c in cells.trim_end_matches('|').split('|') {
                let _ = write!(html, "<{tag}>{}</{tag}>", escape(c.trim()));
            }
            html.push_str("</tr>\n");
            continue;
        }
        if in_table {
            html.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(html, "<h2>{}</h2>", escape(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(html, "<h1>{}</h1>", escape(h));
        } else if !line.trim().is_empty() {
            let _ = writeln!(html, "<p>{}</p>", escape(line));
        }
    }
    if in_table {
        html.push_str("</table>\n");
    }
    html
}

/// Writes `report.md` and `report.html` into `out`.
pub fn write(out: &Path, stages: &[Stage], results: &[(String, Report)]) -> Result<()> {
    let mut md = String::from("# cria report card\n\n## Stages\n\n");
    md.push_str("| stage | what | first | last |\n|---|---|---:|---:|\n");
    for s in stages {
        for (label, first, last) in stage_lines(out, s.name()) {
            let _ = writeln!(
                md,
                "| {} | {label} | {} | {} |",
                s.name(),
                fmt(first),
                fmt(last)
            );
        }
    }
    md.push_str("\n## Evaluation\n\n| metric |");
    for (name, _) in results {
        let _ = write!(md, " {name} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(results.len()));
    md.push('\n');
    let mut keys: Vec<&String> = results.iter().flat_map(|(_, r)| r.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let _ = write!(md, "| {k} |");
        for (_, r) in results {
            let _ = write!(md, " {} |", fmt(r.get(k).copied()));
        }
        md.push('\n');
    }
    md.push_str(
        "\nReading it: `fact_*` on held-out questions (normalised exact match, and the answer \
         contained in the reply); `truthful_mc1/mc2` multiple choice by likelihood; \
         `refusal_rate` on harmful prompts and `over_refusal_rate` on benign look-alikes; \
         `reward_mean` and `win_rate` (over the SFT model) judged by the reward model; \
         `perplexity` on held-out pretraining text (the alignment tax); `kl_to_reference` to \
         the SFT model, nats per reply.\n",
    );
    if let Some((name, _)) = results.last() {
        let dir = out.join(name).join("checkpoint");
        let _ = writeln!(
            md,
            "\nChat with the {name} model:\n\n```sh\ncria chat --model {}\n```",
            dir.display()
        );
    }
    cria_core::fsutil::write_atomic(&out.join("report.md"), md.as_bytes())?;

    let mut plots = String::new();
    for s in stages {
        for (title, x, series) in stage_plots(out, s.name()) {
            plots.push_str(&line_chart(&title, &x, &series));
            plots.push('\n');
        }
    }
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>cria report card</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;\
         padding:4px 10px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         svg{{margin:6px}}</style></head><body>\n{}\n<h2>Plots</h2>\n{plots}</body></html>\n",
        html_of(&md)
    );
    cria_core::fsutil::write_atomic(&out.join("report.html"), html.as_bytes())?;
    Ok(())
}

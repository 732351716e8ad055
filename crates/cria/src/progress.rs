//! Progress of long work: a bar on a terminal, one fixed-format line per log step otherwise.

use cria_train::metrics::{Reporter, StepLog};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;

pub struct TrainProgress {
    /// Off on every rank but 0 of a run of several (rank 0 reports for the run).
    on: bool,
    bar: Option<ProgressBar>,
    total: u64,
    log_every: u64,
}

impl TrainProgress {
    pub fn new(log_every: u64) -> Self {
        use cria_train::collective::CollectiveExt;
        TrainProgress {
            on: cria_train::collective::world().is_root(),
            bar: None,
            total: 0,
            log_every: log_every.max(1),
        }
    }
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Reporter for TrainProgress {
    fn start(&mut self, first: u64, total: u64) {
        self.total = total;
        if self.on && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total).with_position(first);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("static template"),
            );
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, l: &StepLog) {
        if !self.on {
            return;
        }
        let mut val = l
            .val_loss
            .map(|v| format!(" | val {v:.4}"))
            .unwrap_or_default();
        // The objective's own figures (accuracy, margins, ...), training then validation.
        for (k, v) in l.metrics.iter().filter(|(k, _)| !k.starts_with("val_")) {
            val.push_str(&format!(" | {k} {v:.3}"));
        }
        for (k, v) in l.metrics.iter().filter(|(k, _)| k.starts_with("val_")) {
            val.push_str(&format!(" | {k} {v:.3}"));
        }
        let w = self.total.to_string().len().max(5);
        let line = format!(
            "step {:0w$}/{:0w$} | loss {:.4} | lr {:.1e} | gnorm {:.2} | {} tok/s{val}",
            l.step,
            self.total,
            l.loss,
            l.lr,
            l.grad_norm,
            thousands(l.tokens_per_s),
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(l.step);
                bar.set_message(format!(
                    "loss {:.4} | {} tok/s{val}",
                    l.loss,
                    thousands(l.tokens_per_s)
                ));
                if l.step.is_multiple_of(self.log_every) || l.val_loss.is_some() {
                    bar.println(line);
                }
            }
            None => {
                if l.step.is_multiple_of(self.log_every)
                    || l.val_loss.is_some()
                    || l.step == self.total
                {
                    eprintln!("{line}");
                }
            }
        }
    }

    fn saved(&mut self, step: u64, dir: &Path) {
        if !self.on {
            return;
        }
        let msg = format!("step {step}: checkpoint saved to {}", dir.display());
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }
}

impl Drop for TrainProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Prints a command's result (a checkpoint's path) on stdout: once for the run, by rank 0.
pub fn result(path: &Path) {
    use cria_train::collective::CollectiveExt;
    if cria_train::collective::world().is_root() {
        println!("{}", path.display());
    }
}

//! What the person (or program) running a build sees while it runs.
//!
//! - On a terminal: one line per stage with its state and elapsed time, a
//!   spinner while it runs, its output indented below (colours unless
//!   `NO_COLOR` is set).
//! - Otherwise: plain lines, the same content.
//! - With `--monitor json`: one JSON object per event on stdout (see the
//!   README for the events), for programs that follow a build.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// A stage, as events name it.
#[derive(Debug, Clone, Copy)]
pub struct StageInfo<'a> {
    pub index: usize,
    pub total: usize,
    pub name: &'a str,
    /// The stage's id (its result's key in the store).
    pub id: &'a str,
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ran,
    Cached,
    Failed,
}

/// Receives the events of a build. Implementations must be cheap: they are
/// called on the build's hot path and from output reader threads.
pub trait Reporter: Send + Sync {
    fn build_started(&self, _name: Option<&str>, _total: usize) {}
    fn stage_started(&self, stage: StageInfo<'_>);
    /// One line of a stage's output (stdout and stderr merged).
    fn output(&self, index: usize, name: &str, line: &str);
    fn stage_finished(
        &self,
        stage: StageInfo<'_>,
        elapsed: Duration,
        outcome: Outcome,
        error: Option<&str>,
        changes: Option<&crate::changes::Summary>,
    );
    /// The build's result object (what `--json` prints).
    fn build_finished(&self, _result: &serde_json::Value) {}
    /// Something the person running the build should know that is not a
    /// stage's (the remote store: what was pulled and pushed, a registry
    /// that could not be used). Always shown, even with `--quiet`.
    fn note(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "osbuild: {text}");
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Plain text on stderr: a line per stage, its output prefixed by its name.
pub struct PlainReporter {
    pub quiet: bool,
}

impl Reporter for PlainReporter {
    fn stage_started(&self, s: StageInfo<'_>) {
        if !self.quiet {
            let _ = writeln!(
                std::io::stderr().lock(),
                "[{}/{}] {}",
                s.index + 1,
                s.total,
                s.name
            );
        }
    }

    fn output(&self, _index: usize, name: &str, line: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{name}: {line}");
    }

    fn stage_finished(
        &self,
        s: StageInfo<'_>,
        elapsed: Duration,
        outcome: Outcome,
        _error: Option<&str>,
        _changes: Option<&crate::changes::Summary>,
    ) {
        if self.quiet {
            return;
        }
        let what = match outcome {
            Outcome::Ran => "done",
            Outcome::Cached => "cached",
            Outcome::Failed => "FAILED",
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "      {} {what} in {:.3} ms",
            s.name,
            ms(elapsed)
        );
    }
}

/// For an interactive terminal: a spinner line for the running stage, a
/// result line for each finished one, output indented in between.
pub struct TerminalReporter {
    bar: Mutex<Option<ProgressBar>>,
    colors: bool,
}

impl TerminalReporter {
    pub fn new() -> TerminalReporter {
        let colors = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        console::set_colors_enabled_stderr(colors);
        TerminalReporter {
            bar: Mutex::new(None),
            colors,
        }
    }

    fn paint(&self, text: &str, style: console::Style) -> String {
        if self.colors {
            style.apply_to(text).to_string()
        } else {
            text.to_string()
        }
    }
}

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for TerminalReporter {
    fn stage_started(&self, s: StageInfo<'_>) {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{prefix}] {msg} {elapsed_precise}")
                .expect("a valid template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        bar.set_prefix(format!("{}/{}", s.index + 1, s.total));
        bar.set_message(s.name.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn note(&self, text: &str) {
        let text = format!("osbuild: {text}");
        match &*self.bar.lock().unwrap() {
            Some(bar) => bar.println(&text),
            None => eprintln!("{text}"),
        }
    }

    fn output(&self, _index: usize, _name: &str, line: &str) {
        let text = format!("    {line}");
        match &*self.bar.lock().unwrap() {
            Some(bar) => bar.println(self.paint(&text, console::Style::new().dim())),
            None => eprintln!("{text}"),
        }
    }

    fn stage_finished(
        &self,
        s: StageInfo<'_>,
        elapsed: Duration,
        outcome: Outcome,
        error: Option<&str>,
        _changes: Option<&crate::changes::Summary>,
    ) {
        let (mark, what) = match outcome {
            Outcome::Ran => (
                self.paint("✓", console::Style::new().green()),
                format!("{:.1}s", elapsed.as_secs_f64()),
            ),
            Outcome::Cached => (
                self.paint("✓", console::Style::new().cyan()),
                "cached".to_string(),
            ),
            Outcome::Failed => (
                self.paint("✗", console::Style::new().red().bold()),
                format!("failed after {:.1}s", elapsed.as_secs_f64()),
            ),
        };
        let line = format!(
            "{mark} [{}/{}] {} {}",
            s.index + 1,
            s.total,
            s.name,
            self.paint(&what, console::Style::new().dim())
        );
        match self.bar.lock().unwrap().take() {
            Some(bar) => {
                bar.finish_and_clear();
                eprintln!("{line}");
            }
            None => eprintln!("{line}"),
        }
        if let Some(e) = error {
            eprintln!("  {}", self.paint(e, console::Style::new().red()));
        }
    }
}

/// `--monitor json`: one JSON object per event, one per line, on stdout.
pub struct JsonReporter;

impl JsonReporter {
    fn emit(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }
}

impl Reporter for JsonReporter {
    fn build_started(&self, name: Option<&str>, total: usize) {
        self.emit(json!({"event": "build-started", "pipeline": name, "stages": total}));
    }

    fn stage_started(&self, s: StageInfo<'_>) {
        self.emit(json!({"event": "stage-started", "index": s.index, "name": s.name, "id": s.id}));
    }

    fn output(&self, index: usize, name: &str, line: &str) {
        self.emit(json!({"event": "output", "index": index, "name": name, "line": line}));
    }

    fn stage_finished(
        &self,
        s: StageInfo<'_>,
        elapsed: Duration,
        outcome: Outcome,
        error: Option<&str>,
        changes: Option<&crate::changes::Summary>,
    ) {
        let mut v = json!({
            "event": "stage-finished",
            "index": s.index,
            "name": s.name,
            "id": s.id,
            "duration_ms": ms(elapsed),
            "cached": outcome == Outcome::Cached,
            "success": outcome != Outcome::Failed,
        });
        if let Some(e) = error {
            v["error"] = e.into();
        }
        if let Some(c) = changes {
            v["changes"] = serde_json::to_value(c).unwrap_or_default();
        }
        self.emit(v);
    }

    fn note(&self, text: &str) {
        self.emit(json!({"event": "note", "text": text}));
    }

    fn build_finished(&self, result: &serde_json::Value) {
        let mut v = result.clone();
        v["event"] = "build-finished".into();
        self.emit(v);
    }
}

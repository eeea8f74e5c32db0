//! What the person (or program) running a build sees while it runs.

use std::io::Write;
use std::time::Duration;

/// Receives the events of a build. Implementations must be cheap: they are
/// called on the build's hot path and from output reader threads.
pub trait Reporter: Send + Sync {
    fn stage_started(&self, index: usize, total: usize, name: &str);
    /// One line of a stage's output (stdout and stderr merged).
    fn output(&self, index: usize, name: &str, line: &str);
    fn stage_finished(&self, index: usize, name: &str, elapsed: Duration, outcome: Outcome);
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ran,
    Cached,
    Failed,
}

/// Plain text on stderr: a line per stage, its output prefixed by its name.
pub struct PlainReporter {
    pub quiet: bool,
}

impl Reporter for PlainReporter {
    fn stage_started(&self, index: usize, total: usize, name: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "[{}/{total}] {name}", index + 1);
        }
    }

    fn output(&self, _index: usize, name: &str, line: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{name}: {line}");
    }

    fn stage_finished(&self, _index: usize, name: &str, elapsed: Duration, outcome: Outcome) {
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
            "      {name} {what} in {:.1} ms",
            elapsed.as_secs_f64() * 1000.0
        );
    }
}

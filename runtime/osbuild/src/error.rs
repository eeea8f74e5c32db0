//! The errors a build reports, and the exit codes they map to.

use std::fmt;

/// A problem with what the user gave us, found before any stage runs
/// (exit code 2). `path` is a JSON path (`pipeline[1].options.hostname`)
/// or the name of the input (`--from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub path: String,
    pub message: String,
}

impl InputError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        InputError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad input, found before anything ran: exit 2.
    #[error("{}", format_input(.0))]
    Input(Vec<InputError>),
    /// A stage failed: exit 1. Numbered from 1, as the progress shows it,
    /// with its place in the pipeline's JSON.
    #[error("stage {} ({name}, pipeline[{index}]) failed: {message}{}", .index + 1, format_tail(.tail))]
    Stage {
        /// Its index in `pipeline` (from 0).
        index: usize,
        name: String,
        message: String,
        /// The last lines the stage printed.
        tail: Vec<String>,
    },
    /// The build was interrupted (SIGINT/SIGTERM): exit 130.
    #[error("interrupted")]
    Interrupted,
    /// Anything else (I/O on the host, ...): exit 1.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn format_input(errors: &[InputError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn format_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n  last output:");
    for line in tail {
        s.push_str("\n    ");
        s.push_str(line);
    }
    s
}

impl BuildError {
    pub fn input(path: impl Into<String>, message: impl Into<String>) -> Self {
        BuildError::Input(vec![InputError::new(path, message)])
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Input(_) => 2,
            BuildError::Stage { .. } | BuildError::Other(_) => 1,
            BuildError::Interrupted => 130,
        }
    }
}

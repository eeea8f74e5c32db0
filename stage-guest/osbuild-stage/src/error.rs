use std::fmt;

/// An error about one option of the stage. Returned from `run` (through
/// `anyhow`), osbuild reports it with the option's JSON path, e.g.
/// `pipeline[2].options.users.alice.groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    /// The JSON path below `options`, e.g. `users.alice.groups`.
    pub option: String,
    pub message: String,
}

impl OptionError {
    pub fn new(option: impl Into<String>, message: impl Into<String>) -> Self {
        OptionError {
            option: option.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.message)
    }
}

impl std::error::Error for OptionError {}

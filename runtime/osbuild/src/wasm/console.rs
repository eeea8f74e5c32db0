//! The host side of `osbuild:stage/console`: what a stage whose WASI is
//! stubbed out (Python, JavaScript) prints goes where WASI's stdout and
//! stderr go, the pipe the executor reads and bounds.

use std::fs::File;
use std::io::Write as _;

use super::bindings::osbuild::stage::console::{self as wit, Channel};

/// The stage's two handles on its output pipe.
pub struct Console {
    stdout: Option<File>,
    stderr: Option<File>,
}

impl Console {
    pub fn new(stdout: Option<File>, stderr: Option<File>) -> Console {
        Console { stdout, stderr }
    }
}

impl wit::Host for Console {
    fn write(&mut self, channel: Channel, bytes: Vec<u8>) {
        let to = match channel {
            Channel::Stdout => &mut self.stdout,
            Channel::Stderr => &mut self.stderr,
        };
        // A reader that went away (the build is stopping) is not the
        // stage's error: what it prints is lost, as with WASI's streams.
        if let Some(f) = to
            && f.write_all(&bytes).is_err()
        {
            *to = None;
        }
    }
}

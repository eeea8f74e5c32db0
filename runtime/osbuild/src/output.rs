//! A stage's output: read from a pipe, split into lines, shown to the user
//! through the [`Reporter`](crate::progress::Reporter), and the last lines
//! kept for the error message if the stage fails.
//!
//! Both kinds of stage write stdout and stderr into one pipe (so the two
//! stay in order); a thread reads it while the stage runs.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context as _;

use crate::progress::Reporter;

/// How many lines of a failed stage's output the error shows.
pub const TAIL_LINES: usize = 20;

/// The longest line shown: longer ones are split. A stage that writes
/// without newlines costs osbuild this much memory, not all it writes.
pub const MAX_LINE: usize = 16 * 1024;

/// Collects one stage's output while it runs.
pub struct StageOutput {
    writer: Option<File>,
    reader: Option<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl StageOutput {
    /// Starts reading; the stage writes into [`StageOutput::writer`].
    pub fn start(
        reporter: Arc<dyn Reporter>,
        index: usize,
        name: &str,
    ) -> anyhow::Result<StageOutput> {
        let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .context("creating a pipe for the stage's output")?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let tail2 = Arc::clone(&tail);
        let name = name.to_string();
        let reader = std::thread::Builder::new()
            .name(format!("output {index}"))
            .spawn(move || {
                let mut reader = BufReader::new(File::from(rx));
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader
                        .by_ref()
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', &mut buf)
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    reporter.output(index, &name, line);
                    let mut tail = tail2.lock().unwrap();
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.to_string());
                }
            })
            .context("starting the output reader thread")?;
        Ok(StageOutput {
            writer: Some(File::from(tx)),
            reader: Some(reader),
            tail,
        })
    }

    /// A new handle on the pipe's write end, for the stage's stdout or stderr.
    pub fn writer(&self) -> anyhow::Result<File> {
        self.writer
            .as_ref()
            .expect("writer taken only by finish")
            .try_clone()
            .context("duplicating the stage's output pipe")
    }

    /// Waits for all output (every write end must be closed by then) and
    /// returns the last lines.
    pub fn finish(mut self) -> Vec<String> {
        self.writer.take();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.tail.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for StageOutput {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

//! Running host tools from native stages, one way for every stage: the
//! command line is printed first (it lands in the build's log), the tool's
//! stderr is passed on as it comes and its last lines are kept, and a
//! failure is an error naming the tool, its exit status, those lines, and
//! the Debian package that provides it when it is missing.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};

/// How many of a failed tool's last stderr lines its error holds.
const TAIL: usize = 20;

/// The most of one stderr line kept for the error (bytes).
const LINE: usize = 4096;

/// Runs `cmd` with its stdout passed on to the stage's; fails unless it
/// exits 0. `package` is the Debian package that provides the tool.
pub fn run(cmd: &mut Command, package: &str) -> anyhow::Result<()> {
    let (status, _, tail) = spawn(cmd, package, false, None)?;
    check(cmd, status, &tail)
}

/// Runs `cmd` and returns what it wrote to stdout; fails unless it exits
/// 0. `package` is the Debian package that provides the tool.
pub fn output(cmd: &mut Command, package: &str) -> anyhow::Result<String> {
    let (status, stdout, tail) = spawn(cmd, package, true, None)?;
    check(cmd, status, &tail)?;
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// [`output`], with `input` on the tool's stdin (`sfdisk` reads its
/// partition table there).
pub fn output_with_input(cmd: &mut Command, input: &[u8], package: &str) -> anyhow::Result<String> {
    let (status, stdout, tail) = spawn(cmd, package, true, Some(input.to_vec()))?;
    check(cmd, status, &tail)?;
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn spawn(
    cmd: &mut Command,
    package: &str,
    capture: bool,
    input: Option<Vec<u8>>,
) -> anyhow::Result<(ExitStatus, Vec<u8>, Vec<String>)> {
    println!("running: {cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stderr(Stdio::piped());
    if capture {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| {
        anyhow::anyhow!(
            "running {}: {e} (is it installed? apt-get install {package})",
            program(cmd)
        )
    })?;
    // Written from a thread: a tool may fill its stdout before it has read
    // all of its input. Dropping the pipe closes it (end of input).
    let writer = child.stdin.take().zip(input).map(|(mut stdin, input)| {
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input))
    });
    let stderr = child.stderr.take();
    let mut stdout = child.stdout.take();
    // stderr on a thread of its own: a tool that fills the stdout pipe
    // while we wait on stderr (or the reverse) would never finish.
    let tail = std::thread::spawn(move || stderr.map(pass_on).unwrap_or_default());
    let mut captured = Vec::new();
    let read = match stdout.as_mut() {
        Some(out) => out.read_to_end(&mut captured).map(|_| ()),
        None => Ok(()),
    };
    // Waited for whatever happened above: no tool is left running.
    let status = child.wait()?;
    let tail = tail.join().unwrap_or_default();
    read.map_err(|e| anyhow::anyhow!("reading what {} printed: {e}", program(cmd)))?;
    if let Some(w) = writer {
        match w.join() {
            // A tool that exits without reading all of its input says why
            // itself (its status); one that succeeded did not need it.
            Ok(Err(e)) if status.success() && e.kind() != std::io::ErrorKind::BrokenPipe => {
                anyhow::bail!("writing the input of {}: {e}", program(cmd))
            }
            _ => {}
        }
    }
    Ok((status, captured, tail))
}

/// Passes a tool's stderr on to the stage's as it comes, and returns its
/// last lines. Bounded: a tool (or what it runs, package scripts) printing
/// without newlines costs at most [`LINE`] bytes here.
fn pass_on(mut stderr: std::process::ChildStderr) -> Vec<String> {
    let mut tail = VecDeque::with_capacity(TAIL);
    let mut line = Vec::new();
    let mut buf = [0u8; 8192];
    let mut keep = |line: &mut Vec<u8>| {
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(String::from_utf8_lossy(line).into_owned());
        line.clear();
    };
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = std::io::stderr().write_all(&buf[..n]);
        for &b in &buf[..n] {
            if b == b'\n' {
                keep(&mut line);
            } else if line.len() < LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        keep(&mut line);
    }
    Vec::from(tail)
}

fn check(cmd: &Command, status: ExitStatus, tail: &[String]) -> anyhow::Result<()> {
    if status.success() {
        return Ok(());
    }
    let mut msg = format!("{} failed ({status})", program(cmd));
    if !tail.is_empty() {
        msg.push_str(", its last messages:");
        for line in tail {
            msg.push_str("\n  ");
            msg.push_str(line);
        }
    }
    Err(anyhow::anyhow!(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_stdout_and_a_failure_names_status_and_stderr_tail() {
        let out = output(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            "dash",
        );
        assert_eq!(out.unwrap(), "out\n");
        let e = output(
            Command::new("sh").args(["-c", "for i in $(seq 30); do echo line$i >&2; done; exit 3"]),
            "dash",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("sh failed (exit status: 3), its last messages:"),
            "{e}"
        );
        assert!(
            e.contains("line30") && e.contains("line11") && !e.contains("line10\n"),
            "{e}"
        );
    }

    #[test]
    fn input_reaches_stdin() {
        let out = output_with_input(Command::new("tr").args(["a-z", "A-Z"]), b"abc", "coreutils");
        assert_eq!(out.unwrap(), "ABC");
    }

    #[test]
    fn a_line_without_end_is_bounded_in_the_error() {
        let e = output(
            Command::new("sh").args(["-c", "head -c 20000 /dev/zero | tr '\\0' x >&2; exit 1"]),
            "dash",
        )
        .unwrap_err()
        .to_string();
        assert!(e.len() < LINE + 200, "{}", e.len());
        assert!(e.contains(&"x".repeat(LINE)), "the kept part of the line");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = run(&mut Command::new("/nonexistent/mkfs.nothing"), "e2fsprogs")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/mkfs.nothing") && e.contains("apt-get install e2fsprogs"),
            "{e}"
        );
    }
}

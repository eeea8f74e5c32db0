//! Running host tools from native stages, one way for every stage: the
//! command line is printed first (it lands in the build's log), the tool's
//! stderr is passed on as it comes and its last lines are kept, and a
//! failure is an error naming the tool, its exit status, those lines, and
//! the Debian package that provides it when it is missing.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};

/// How many of a failed tool's last stderr lines its error holds.
const TAIL: usize = 20;

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
    let tail = std::thread::spawn(move || {
        let mut tail = VecDeque::with_capacity(TAIL);
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                eprintln!("{line}");
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        Vec::from(tail)
    });
    let mut captured = Vec::new();
    if let Some(out) = stdout.as_mut() {
        out.read_to_end(&mut captured)?;
    }
    let status = child.wait()?;
    if let Some(w) = writer {
        // A tool that exits without reading all of it says why itself.
        let _ = w.join();
    }
    let tail = tail.join().unwrap_or_default();
    Ok((status, captured, tail))
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

//! `osbuild-apt-sources`: the questions `tools/setup` asks of apt's
//! configuration, answered on stdout. Errors are one line on stderr, exit 1;
//! bad usage exits 2.
//!
//! ```text
//! osbuild-apt-sources [--root DIR] codename
//! osbuild-apt-sources [--root DIR] mirror [SUITE]
//! osbuild-apt-sources [--root DIR] backports-source [CODENAME]   (nothing if configured)
//! osbuild-apt-sources qemu-suite QEMU_UTILS_VERSION CODENAME       (nothing: the default)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use osbuild_apt_sources as apt;

const USAGE: &str = "usage: osbuild-apt-sources [--root DIR] codename | mirror [SUITE] | backports-source [CODENAME] | qemu-suite VERSION CODENAME";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut root = PathBuf::from("/");
    if args.first().map(String::as_str) == Some("--root") {
        if args.len() < 2 {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        root = PathBuf::from(args.remove(1));
        args.remove(0);
    }
    match run(&root, &args) {
        Ok(Some(out)) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(Error::Usage) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Error::Failed(why)) => {
            eprintln!("osbuild-apt-sources: {why}");
            ExitCode::FAILURE
        }
    }
}

enum Error {
    Usage,
    Failed(String),
}

fn run(root: &std::path::Path, args: &[String]) -> Result<Option<String>, Error> {
    let host_codename = || {
        apt::codename(root).ok_or_else(|| {
            Error::Failed(format!(
                "no VERSION_CODENAME in {}/etc/os-release: is this Debian?",
                root.display()
            ))
        })
    };
    let sources =
        || apt::read(root).map_err(|e| Error::Failed(format!("reading apt's sources: {e}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["codename"] => host_codename().map(Some),
        ["mirror", rest @ ..] if rest.len() <= 1 => {
            let host = apt::codename(root);
            let suite = match rest.first() {
                Some(s) => (*s).to_string(),
                None => host_codename()?,
            };
            apt::mirror(&sources()?, &suite, host.as_deref())
                .map(Some)
                .map_err(|e| Error::Failed(e.to_string()))
        }
        ["backports-source", rest @ ..] if rest.len() <= 1 => {
            let codename = match rest.first() {
                Some(s) => (*s).to_string(),
                None => host_codename()?,
            };
            apt::backports_source(&sources()?, &codename).map_err(|e| Error::Failed(e.to_string()))
        }
        ["qemu-suite", version, codename] => Ok(apt::qemu_suite(version, codename)),
        _ => Err(Error::Usage),
    }
}

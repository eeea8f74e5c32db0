//! `osbuild`, the command: a thin command line ([`cli`]) over the
//! `osbuild` library, with the built-in stages of `osbuild-builtins`
//! embedded. Everything a build does lives in the library; this crate
//! parses arguments, enters the namespaces a build runs in, and reports.
//! [`project`] is the stage author's side: `osbuild stage new|build|test`,
//! with the SDKs embedded.

mod cli;
mod project;

fn main() {
    std::process::exit(cli::main());
}

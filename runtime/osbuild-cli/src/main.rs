//! `osbuild`, the command: a thin command line ([`cli`]) over the
//! `osbuild` library, with the built-in stages of `osbuild-builtins`
//! embedded. Everything a build does lives in the library; this crate
//! parses arguments, enters the namespaces a build runs in, and reports.
//! [`lock`] pins a pipeline's packages (`osbuild lock`).
//! [`project`] is the stage author's side: `osbuild stage new|build|test`,
//! with the SDKs embedded.

mod cli;
mod lock;
mod project;

fn main() {
    std::process::exit(cli::main());
}

//! `osbuild`, the command: a thin command line ([`cli`]) over the
//! `osbuild` library, with the built-in stages of `osbuild-builtins`
//! embedded. Everything a build does lives in the library; this crate
//! parses arguments, enters the namespaces a build runs in, and reports.

mod cli;

fn main() {
    std::process::exit(cli::main());
}

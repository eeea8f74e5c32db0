fn main() {
    std::process::exit(osbuild::cli::main());
}

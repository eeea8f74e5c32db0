//! Opens a TCP connection: its component imports wasi:sockets.

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {}

fn run(_tree: &Tree, _options: Options) -> anyhow::Result<()> {
    match std::net::TcpStream::connect("127.0.0.1:9") {
        Ok(_) => println!("connected"),
        Err(e) => println!("connect: {e}"),
    }
    Ok(())
}

osbuild_stage::stage!(run);

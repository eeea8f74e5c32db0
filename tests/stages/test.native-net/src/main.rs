//! `test.native-net`: declares `network`, and connects to the Debian mirror.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
struct Options {}

fn run(_tree: &Tree, _options: Options) -> anyhow::Result<()> {
    let addr = ("deb.debian.org", 80)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("deb.debian.org has no address"))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    println!("connected to {addr}");
    Ok(())
}

osbuild_stage::native_stage!(run);

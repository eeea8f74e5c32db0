//! `test.native-probe`: tries one thing a native stage might do, and says
//! what happened. Exits 0 when the sandbox held, 1 otherwise.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
struct Options {
    action: String,
    seconds: Option<u64>,
}

fn run(tree: &Tree, o: Options) -> anyhow::Result<()> {
    match o.action.as_str() {
        "connect" => {
            let result = ("deb.debian.org", 80)
                .to_socket_addrs()
                .map_err(anyhow::Error::from)
                .and_then(|mut a| a.next().ok_or_else(|| anyhow::anyhow!("no address")))
                .and_then(|addr| Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?));
            match result {
                Ok(_) => anyhow::bail!("connected to the network without the capability"),
                Err(e) => println!("no network: {e}"),
            }
            // Also a raw address, skipping DNS.
            match TcpStream::connect_timeout(&"151.101.2.132:80".parse()?, Duration::from_secs(5)) {
                Ok(_) => anyhow::bail!("connected to an IP address without the capability"),
                Err(e) => println!("no route: {e}"),
            }
        }
        "write-host" => {
            for path in [
                "/etc/osbuild-native-marker",
                "/usr/osbuild-native-marker",
                "/osbuild-native-marker",
                "/var/lib/osbuild-native-marker",
            ] {
                match std::fs::write(path, b"x") {
                    Ok(()) => anyhow::bail!("wrote {path} on the build machine"),
                    Err(e) => println!("{path}: {e}"),
                }
            }
        }
        "tmp-write" => {
            std::fs::write("/tmp/osbuild-leftover", b"x")?;
            std::fs::write("/var/tmp/osbuild-leftover", b"x")?;
        }
        "tmp-check" => {
            for path in ["/tmp/osbuild-leftover", "/var/tmp/osbuild-leftover"] {
                if std::path::Path::new(path).exists() {
                    anyhow::bail!("{path} survived from an earlier stage");
                }
            }
        }
        "sleep" => {
            // A child process, so that a test can look for it by its arguments.
            let seconds = o.seconds.unwrap_or(300).to_string();
            let mut child = std::process::Command::new("sleep").arg(&seconds).spawn()?;
            println!("sleeping");
            child.wait()?;
        }
        "devices" => {
            let loops: Vec<String> = std::fs::read_dir("/dev")?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("loop"))
                .collect();
            if !loops.is_empty() {
                anyhow::bail!("sees loop devices: {}", loops.join(" "));
            }
            println!("no loop devices");
        }
        "remount" => {
            let out = std::process::Command::new("mount")
                .args(["-o", "remount,rw", "/"])
                .output()?;
            if out.status.success() {
                let wrote = std::fs::write("/etc/osbuild-native-marker", b"x").is_ok();
                anyhow::bail!("remounted the host root read-write (and wrote to it: {wrote})");
            }
            println!(
                "remount refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        "identity" => {
            // What the stage is, and what of the host it can read.
            let status = std::fs::read_to_string("/proc/self/status")?;
            for line in status.lines().filter(|l| l.starts_with("Cap")) {
                println!("{line}");
            }
            println!(
                "uid_map: {}",
                std::fs::read_to_string("/proc/self/uid_map")?.trim()
            );
            for path in [
                "/etc/shadow",
                "/root",
                "/home",
                "/var/cache/osbuild",
                "/var/lib",
            ] {
                let what = match std::fs::metadata(path) {
                    Err(e) => format!("absent ({e})"),
                    Ok(m) if m.is_dir() => match std::fs::read_dir(path) {
                        Ok(d) => format!("directory of {} entries", d.count()),
                        Err(e) => format!("directory, unreadable ({e})"),
                    },
                    Ok(_) => match std::fs::read(path) {
                        Ok(b) => format!("readable, {} bytes", b.len()),
                        Err(e) => format!("unreadable ({e})"),
                    },
                };
                println!("{path}: {what}");
            }
        }
        "abort" => std::process::abort(),
        "fail" => {
            eprintln!("about to fail");
            std::process::exit(3);
        }
        "write-tree" => {
            tree.create_dir_all("/etc")?;
            tree.write_str("/etc/native-was-here", "yes\n")?;
        }
        "env" => {
            for (k, v) in std::env::vars() {
                println!("{k}={v}");
            }
        }
        other => anyhow::bail!("unknown action {other}"),
    }
    Ok(())
}

osbuild_stage::native_stage!(run);

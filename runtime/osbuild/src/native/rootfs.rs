//! The root file system a native stage runs in: built from an allowlist,
//! never the host's `/`.
//!
//! A tmpfs owned by the stage's id range holds the top-level directories,
//! the host's `/usr` (read-only, id-mapped, so its files are root's inside
//! too) and the merged-`/usr` links, and a generated `/etc` with only what
//! the host tools need: the tool users (no password hashes, no one
//! else's), name service and network databases, the dynamic linker's
//! cache, the OS release, apt's sources (for a default mirror), CA
//! certificates, the alternatives links, dnf's and rpm's configuration,
//! and `resolv.conf` for stages with `network` (and for mmdebstrap,
//! which copies it). The host's `/etc/shadow`,
//! `/root`, `/home`, `/var`, the store and other builds' trees are not
//! there to be read.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::userns::IdMap;

/// Users the host tools run as (apt downloads as `_apt`).
const USERS: &[&str] = &["root", "daemon", "nobody", "_apt"];
const GROUPS: &[&str] = &["root", "daemon", "nogroup", "adm"];

/// Host files copied into `/etc` as they are (what they hold is public
/// and the tools read it: `services` for `http`, the linker's cache).
/// Their modes are kept too: mmdebstrap copies `hostname` and
/// `resolv.conf` into the tree it makes.
const COPIED: &[&str] = &[
    "hostname",
    "ld.so.cache",
    "services",
    "protocols",
    "debian_version",
    "apt/sources.list",
];

/// Host directories bound read-only into `/etc`.
/// Public keys only: the apt keyring directories a stage's `keyring` may
/// name, never the rest of /etc/apt.
const BOUND: &[&str] = &[
    "ssl/certs",
    "alternatives",
    "dnf",
    "rpm",
    "apt/trusted.gpg.d",
    "apt/keyrings",
];

const NSSWITCH: &str = "\
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
ethers: files
rpc: files
";

const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";

/// A stage's root, mounted at `work/root` in osbuild's mount namespace
/// (nspawn's copy of it sees it); unmounted on drop.
pub struct RootFs {
    path: PathBuf,
    /// nspawn arguments that bind the host's parts in.
    binds: Vec<String>,
}

impl RootFs {
    pub fn build(work: &Path, map: &IdMap, network: bool) -> anyhow::Result<RootFs> {
        let path = work.join("root");
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let base = map.base();
        let data = std::ffi::CString::new(format!(
            "mode=0755,uid={base},gid={base},size=16m,nr_inodes=4096"
        ))?;
        rustix::mount::mount(
            "osbuild-root",
            &path,
            "tmpfs",
            MountFlags::NODEV | MountFlags::NOSUID,
            data.as_c_str(),
        )
        .map_err(std::io::Error::from)
        .context("mounting the stage's root (tmpfs)")?;
        let mut root = RootFs {
            path,
            binds: Vec::new(),
        };
        root.populate(map, network)
            .context("making the stage's root file system")?;
        Ok(root)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn nspawn_args(&self) -> &[String] {
        &self.binds
    }

    fn populate(&mut self, map: &IdMap, network: bool) -> anyhow::Result<()> {
        let base = map.base();
        for dir in [
            "usr", "etc", "proc", "sys", "dev", "run", "tmp", "var", "var/tmp", "root", "home",
            "srv", "mnt", "opt",
        ] {
            self.dir(dir, base)?;
        }
        self.binds.push("--bind-ro=/usr:/usr:idmap".into());
        // Merged /usr: the top-level links point into it; a host without
        // it gets its directories bound like /usr.
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(name);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(&host)?;
                    let at = self.path.join(name);
                    std::os::unix::fs::symlink(&target, &at)?;
                    std::os::unix::fs::lchown(&at, Some(base), Some(base))?;
                }
                Ok(m) if m.is_dir() => {
                    self.dir(name, base)?;
                    self.binds.push(format!("--bind-ro=/{name}:/{name}:idmap"));
                }
                _ => {}
            }
        }
        self.etc(base, network)
    }

    fn etc(&mut self, base: u32, network: bool) -> anyhow::Result<()> {
        let etc = Path::new("/etc");
        self.file("etc/passwd", &entries(&etc.join("passwd"), USERS)?, base)?;
        self.file("etc/group", &entries(&etc.join("group"), GROUPS)?, base)?;
        self.file("etc/nsswitch.conf", NSSWITCH.as_bytes(), base)?;
        self.file("etc/hosts", HOSTS.as_bytes(), base)?;
        if network {
            // The host's (mmdebstrap copies it into the tree, so images
            // stay as they were), unless it names a resolver on the host's
            // loopback, which the stage cannot reach: then slirp4netns's.
            let host = etc.join("resolv.conf");
            match read_regular(&host) {
                Ok((bytes, _)) if names_loopback_resolver(&String::from_utf8_lossy(&bytes)) => {
                    self.file(
                        "etc/resolv.conf",
                        super::network::RESOLV_CONF.as_bytes(),
                        base,
                    )?;
                }
                Ok(_) => self.copy(&host, "etc/resolv.conf", base)?,
                Err(_) => {
                    self.file(
                        "etc/resolv.conf",
                        super::network::RESOLV_CONF.as_bytes(),
                        base,
                    )?;
                }
            }
        }
        // os-release is usually a link into /usr, which is there.
        match std::fs::read_link(etc.join("os-release")) {
            Ok(target) => {
                let at = self.path.join("etc/os-release");
                std::os::unix::fs::symlink(target, &at)?;
                std::os::unix::fs::lchown(&at, Some(base), Some(base))?;
            }
            Err(_) => {
                if let Ok(bytes) = std::fs::read(etc.join("os-release")) {
                    self.file("etc/os-release", &bytes, base)?;
                }
            }
        }
        for name in COPIED {
            self.copy(&etc.join(name), &format!("etc/{name}"), base)?;
        }
        // apt's sources, for a stage that takes the host's mirror; never
        // auth.conf (credentials) or anything else of apt's.
        if let Ok(dir) = std::fs::read_dir(etc.join("apt/sources.list.d")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.ends_with(".list") || name.ends_with(".sources")) {
                    continue;
                }
                self.copy(&e.path(), &format!("etc/apt/sources.list.d/{name}"), base)?;
            }
        }
        // apt warns when these are missing; the host's are not needed.
        for dir in ["etc/apt/apt.conf.d", "etc/apt/preferences.d"] {
            self.dir(dir, base)?;
        }
        for name in BOUND {
            let host = etc.join(name);
            if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                self.dir(&format!("etc/{name}"), base)?;
                self.binds
                    .push(format!("--bind-ro={}:/etc/{name}", host.display()));
            }
        }
        Ok(())
    }

    /// Copies the host file `from`, with its mode, if it is a regular file.
    fn copy(&self, from: &Path, rel: &str, base: u32) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok((bytes, mode)) = read_regular(from) else {
            return Ok(());
        };
        self.file(rel, &bytes, base)?;
        std::fs::set_permissions(
            self.path.join(rel),
            std::fs::Permissions::from_mode(mode & 0o777),
        )?;
        Ok(())
    }

    /// Creates `rel` (and its parents) owned by the range's root.
    fn dir(&self, rel: &str, base: u32) -> anyhow::Result<()> {
        let mut at = self.path.clone();
        for part in Path::new(rel).components() {
            at.push(part);
            match std::fs::create_dir(&at) {
                Ok(()) => std::os::unix::fs::lchown(&at, Some(base), Some(base))?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", at.display())),
            }
        }
        Ok(())
    }

    fn file(&self, rel: &str, bytes: &[u8], base: u32) -> anyhow::Result<()> {
        if let Some(parent) = Path::new(rel).parent() {
            self.dir(&parent.to_string_lossy(), base)?;
        }
        let at = self.path.join(rel);
        std::fs::write(&at, bytes).with_context(|| format!("writing {}", at.display()))?;
        std::os::unix::fs::lchown(&at, Some(base), Some(base))?;
        Ok(())
    }
}

impl Drop for RootFs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.path, UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A host file's bytes and mode if it is a regular file (following links,
/// as a tool reading it would).
fn read_regular(path: &Path) -> std::io::Result<(Vec<u8>, u32)> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let file = std::fs::File::open(path)?;
    let m = file.metadata()?;
    if !m.is_file() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut bytes = Vec::new();
    file.take(16 << 20).read_to_end(&mut bytes)?;
    Ok((bytes, m.permissions().mode()))
}

/// Whether a resolv.conf sends queries to the host's loopback (systemd-
/// resolved's 127.0.0.53, a local dnsmasq).
fn names_loopback_resolver(text: &str) -> bool {
    text.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("nameserver")
            && words
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback())
    })
}

/// The lines of a passwd- or group-style file for `names`, with the
/// password field `x` whatever it held.
fn entries(file: &Path, names: &[&str]) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(pick_entries(&text, names).into_bytes())
}

fn pick_entries(text: &str, names: &[&str]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 || !names.contains(&fields[0]) {
            continue;
        }
        fields[1] = "x";
        out.push_str(&fields.join(":"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolver_on_the_hosts_loopback_is_noticed() {
        assert!(names_loopback_resolver(
            "# x\nnameserver 127.0.0.53\noptions edns0\n"
        ));
        assert!(names_loopback_resolver("nameserver ::1\n"));
        assert!(!names_loopback_resolver("nameserver 10.255.255.53\n"));
    }

    #[test]
    fn only_the_tool_users_without_their_passwords() {
        let passwd = "root:$6$secret:0:0:root:/root:/bin/bash\n\
                      alice:x:1000:1000:Alice:/home/alice:/bin/bash\n\
                      _apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n\
                      # comment\n";
        assert_eq!(
            pick_entries(passwd, USERS),
            "root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n"
        );
    }
}

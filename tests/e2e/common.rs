//! Helpers shared by the end-to-end tests: run the built `osbuild`, build
//! trees and archives with real tools, and compare trees.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const OSBUILD: &str = env!("CARGO_BIN_EXE_osbuild");

/// The repository's top folder (examples/, stages/).
pub fn repo_root() -> PathBuf {
    // The tests are osbuild-cli's, in runtime/osbuild-cli.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A store shared by all tests, so compiled stages are cached across them.
pub fn shared_store() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-store")
}

/// The test stages (`tests/stages/`), as a `--libdir`.
pub fn test_stages() -> &'static str {
    osbuild_test_stages::TEST_STAGES_DIR
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(
            self.code, 0,
            "osbuild failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(&self, code: i32, needle: &str) -> &Run {
        assert_eq!(self.code, code, "exit code; stderr:\n{}", self.stderr);
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs osbuild with `args`. Unless `--store` is given, it uses the shared
/// store for compiled stages only (`--no-cache`): a test that checks what a
/// stage does needs the stage to run. Tests of caching pass their own store.
pub fn osbuild(args: &[&str]) -> Run {
    let mut cmd = Command::new(OSBUILD);
    if !args.contains(&"--store") {
        cmd.arg("--store").arg(shared_store()).arg("--no-cache");
    }
    cmd.args(args);
    cmd.env_remove("SOURCE_DATE_EPOCH");
    Run::from(cmd.output().expect("running osbuild"))
}

/// Runs osbuild with `args` in a network namespace of its own with no
/// interface but loopback: nothing it starts reaches the network.
pub fn osbuild_offline(args: &[&str]) -> Run {
    let mut cmd = Command::new("unshare");
    cmd.arg("--net").arg(OSBUILD).args(args);
    cmd.env_remove("SOURCE_DATE_EPOCH");
    Run::from(cmd.output().expect("running unshare --net osbuild"))
}

/// A signing key made for a test, in `DIR/gnupg` (`GNUPGHOME`), its
/// public half exported to `DIR/keys/test.asc` (returned).
pub fn test_gpg_key(dir: &Path) -> PathBuf {
    let d = dir.display();
    sh(&format!(
        r#"
        export GNUPGHOME={d}/gnupg HOME={d}
        mkdir -m 700 {d}/gnupg
        mkdir -p {d}/keys
        gpg --batch --quiet --gen-key <<'KEY'
%no-protection
Key-Type: RSA
Key-Length: 2048
Name-Real: osbuild test
Name-Email: test@osbuild.invalid
Expire-Date: 0
%commit
KEY
        gpg --armor --export test@osbuild.invalid > {d}/keys/test.asc
        "#
    ));
    dir.join("keys/test.asc")
}

/// The Debian mirror the tests use (`OSBUILD_MIRROR`, else deb.debian.org).
pub fn mirror() -> String {
    std::env::var("OSBUILD_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write_pipeline(dir: &Path, name: &str, json: serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    path
}

/// Everything a test compares about one entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub rdev: u64,
    pub content: Vec<u8>,
    pub link: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) sharing this entry's inode, if any.
    pub hardlink_of: Option<String>,
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    // Straight from the kernel (llistxattr/lgetxattr), not through osbuild's code.
    let mut out = BTreeMap::new();
    let Ok(size) = rustix::fs::llistxattr_query(path) else {
        return out;
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let len = rustix::fs::lgetxattr_query(path, name.as_str()).unwrap_or(0);
        let mut value = vec![0u8; len];
        let got = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap_or(0);
        value.truncate(got);
        out.insert(name, value);
    }
    out
}

/// Reads a whole tree: relative path → entry.
pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let m = std::fs::symlink_metadata(&path).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let key = format!("/{}", rel.display());
        let hardlink_of = if ft.is_file() && m.nlink() > 1 {
            Some(inodes.entry(m.ino()).or_insert_with(|| key.clone()).clone())
        } else {
            None
        };
        out.insert(
            key,
            Entry {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                rdev: m.rdev(),
                content: if ft.is_file() {
                    std::fs::read(&path).unwrap()
                } else {
                    Vec::new()
                },
                link: ft
                    .is_symlink()
                    .then(|| std::fs::read_link(&path).unwrap().display().to_string()),
                xattrs: if ft.is_symlink() {
                    BTreeMap::new()
                } else {
                    xattrs(&path)
                },
                hardlink_of,
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names.reverse();
            for n in names {
                stack.push(rel.join(n));
            }
        }
    }
    // Hard link groups: name each by its first path in sorted order.
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for (path, e) in &out {
        if let Some(group) = &e.hardlink_of {
            first.entry(group.clone()).or_insert_with(|| path.clone());
        }
    }
    for e in out.values_mut() {
        if let Some(group) = &e.hardlink_of {
            e.hardlink_of = Some(first[group].clone());
        }
    }
    out
}

/// Extracts an archive with GNU tar, keeping everything.
pub fn extract(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --numeric-owner -p -xf {} -C {}",
        archive.display(),
        dest.display()
    ));
}

pub fn sha256(path: &Path) -> String {
    sh(&format!("sha256sum {}", path.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A real Debian bookworm tree as a tarball, made once with mmdebstrap on
/// the host and cached in the target directory (tests that need it wait for
/// each other through a lock). It holds what the configuration stages are
/// checked against: systemd, tzdata, openssh-server, chrony, procps, kmod,
/// locales, and the accounts and login.defs of a real system.
pub fn debian_base() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("debian-bookworm-config.tar");
    let lock = std::fs::File::create(dir.join("debian-bookworm-config.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if !path.exists() {
        let tmp = dir.join("debian-bookworm-config.tmp.tar");
        let mirror = mirror();
        sh(&format!(
            "SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --variant=minbase \
             --include=systemd,systemd-sysv,tzdata,openssh-server,chrony,procps,kmod,locales,dbus \
             --keyring=/usr/share/keyrings/debian-archive-keyring.gpg bookworm {} {mirror}",
            tmp.display()
        ));
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// Unpacks [`debian_base`] into a fresh directory (for the host tool to work on).
pub fn debian_tree(dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --numeric-owner -p -xf {} -C {}",
        debian_base().display(),
        dest.display()
    ));
}

/// Differences between two trees, as readable lines (empty when equal):
/// kind, mode, owner, content, symlink target, xattrs, hard links. Not
/// mtimes: a host tool stamps "now" where a stage stamps the source epoch.
/// `ignore` lists paths whose differences are by design.
pub fn diff_trees(a: &Path, b: &Path, ignore: &[&str]) -> Vec<String> {
    let sa = snapshot(a);
    let sb = snapshot(b);
    let mut out = Vec::new();
    for (path, ea) in &sa {
        if ignore.contains(&path.as_str()) {
            continue;
        }
        match sb.get(path) {
            None => out.push(format!("{path}: only in {}", a.display())),
            Some(eb)
                if *eb
                    != Entry {
                        mtime: eb.mtime,
                        ..ea.clone()
                    } =>
            {
                let mut what = Vec::new();
                if ea.kind != eb.kind {
                    what.push(format!("kind {} vs {}", ea.kind, eb.kind));
                }
                if ea.mode != eb.mode {
                    what.push(format!("mode {:o} vs {:o}", ea.mode, eb.mode));
                }
                if (ea.uid, ea.gid) != (eb.uid, eb.gid) {
                    what.push(format!(
                        "owner {}:{} vs {}:{}",
                        ea.uid, ea.gid, eb.uid, eb.gid
                    ));
                }
                if ea.content != eb.content {
                    what.push(format!(
                        "content {:?} vs {:?}",
                        String::from_utf8_lossy(&ea.content),
                        String::from_utf8_lossy(&eb.content)
                    ));
                }
                if ea.link != eb.link {
                    what.push(format!("link {:?} vs {:?}", ea.link, eb.link));
                }
                if ea.xattrs != eb.xattrs {
                    what.push("xattrs differ".into());
                }
                if ea.hardlink_of != eb.hardlink_of {
                    what.push("hard links differ".into());
                }
                out.push(format!("{path}: {}", what.join(", ")));
            }
            _ => {}
        }
    }
    for path in sb.keys() {
        if !sa.contains_key(path) && !ignore.contains(&path.as_str()) {
            out.push(format!("{path}: only in {}", b.display()));
        }
    }
    out
}

/// The mounts this process sees (root and mount point of each), sorted.
pub fn mounts() -> Vec<String> {
    let mut m: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    m.sort();
    m
}

/// A small OS tree with what real trees hold: unit files, a setuid
/// binary, a file capability, hard links, a device node, a fifo, odd
/// owners and modes, sub-second mtimes; packed with GNU tar.
/// `dir/src` must exist and be empty; the archive is `dir/base.tar.gz`.
pub fn small_os_archive(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let archive = dir.join("base.tar.gz");
    sh(&format!(
        r#"
        cd {src}
        mkdir -p usr/lib/systemd/system usr/bin usr/share/doc etc/systemd/system/multi-user.target.wants dev run
        ln -s usr/lib lib
        ln -s usr/bin bin
        cd usr/lib/systemd/system
        printf '[Unit]\nDescription=ssh\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n' > ssh.service
        printf '[Unit]\nDescription=getty on %%I\n[Service]\nExecStart=-/sbin/agetty %%I\n[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n' > getty@.service
        printf '[Unit]\nDescription=cups\n[Service]\nExecStart=/usr/sbin/cupsd\n[Install]\nWantedBy=printer.target\nAlso=cups.socket\n' > cups.service
        printf '[Socket]\nListenStream=631\n[Install]\nWantedBy=sockets.target\n' > cups.socket
        printf '[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n' > old.service
        cd {src}
        ln -s /lib/systemd/system/old.service etc/systemd/system/multi-user.target.wants/old.service
        printf 'binary' > usr/bin/su && chmod 4755 usr/bin/su
        printf 'pinger' > usr/bin/ping && setcap cap_net_raw+ep usr/bin/ping
        printf 'same inode' > usr/share/doc/a && ln usr/share/doc/a usr/share/doc/b
        mknod dev/null c 1 3 && chmod 666 dev/null
        mkfifo run/initctl && chmod 600 run/initctl
        printf 'root:*:19000::::::\n' > etc/shadow && chown 0:42 etc/shadow && chmod 640 etc/shadow
        printf 'mine' > usr/share/doc/owned && chown 1000:1001 usr/share/doc/owned
        chmod 1777 run
        find . -exec touch -h -d @1600000000.25 {{}} +
        tar --xattrs --xattrs-include='*' --numeric-owner --format=posix -C {src} -czf {archive} .
        "#,
        src = src.display(),
        archive = archive.display(),
    ));
    archive
}

/// A real registry (Debian's docker-registry) on 127.0.0.1, storing in a
/// directory of its own; stopped when dropped.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
    /// The registry's storage (`docker/registry/v2/...` under it).
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // A free port: the kernel picks one, the registry takes it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                data.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "starting docker-registry (Debian's docker-registry package: tools/setup packages)",
            );
        let registry = Registry {
            child,
            port,
            data,
            _dir: dir,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on 127.0.0.1:{port} within 10 s");
    }

    /// `oci://127.0.0.1:PORT/REPO`.
    pub fn url(&self, repo: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo}", self.port)
    }

    /// Where the registry keeps the blob `sha256:HEX`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The manifest `repo:tag` holds, read from the registry's storage.
    pub fn manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        let link = self
            .data
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        let digest =
            std::fs::read_to_string(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        serde_json::from_slice(&std::fs::read(self.blob_path(digest.trim())).unwrap()).unwrap()
    }

    /// Every blob the registry stores, checked: its content hashes to its name.
    pub fn verify_blobs(&self) -> usize {
        let root = self.data.join("docker/registry/v2/blobs/sha256");
        let mut n = 0;
        for prefix in std::fs::read_dir(&root).unwrap() {
            for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
                let blob = blob.unwrap().path();
                let name = blob.file_name().unwrap().to_string_lossy().into_owned();
                assert_eq!(sha256(&blob.join("data")), name, "{}", blob.display());
                n += 1;
            }
        }
        n
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

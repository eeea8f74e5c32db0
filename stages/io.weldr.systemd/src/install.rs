//! What `systemctl --root=TREE enable/disable/mask/set-default` does to a
//! tree, done from the units' `[Install]` sections.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;

use osbuild_stage::formats::unit::{UnitFile, UnitName, expand_install_specifiers};
use osbuild_stage::{Tree, anyhow};

/// Where enable/disable/mask write.
const CONFIG: &str = "/etc/systemd/system";

/// An error is either about the unit named in the options, or about the tree.
#[derive(Debug)]
pub enum Error {
    Option(String),
    Tree(anyhow::Error),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Tree(e.into())
    }
}

type Result<T> = std::result::Result<T, Error>;

/// A unit file found on the search path.
struct Found {
    /// Where it was found: what symlinks to the unit point at.
    path: String,
    /// The unit's real name (differs from the one asked for when that was an alias).
    name: UnitName,
}

pub struct Installer<'t> {
    tree: &'t Tree,
    search: Vec<&'static str>,
    /// Units already enabled or disabled in this run: `Also=` may loop.
    visited: RefCell<BTreeSet<String>>,
}

/// `sshd` means `sshd.service`, as systemctl has it.
fn mangle(name: &str, default_suffix: &str) -> Result<UnitName> {
    if let Some(n) = UnitName::parse(name) {
        return Ok(n);
    }
    let with_suffix = format!("{name}.{default_suffix}");
    UnitName::parse(&with_suffix)
        .filter(|_| !name.contains('.') || default_suffix == "service")
        .ok_or_else(|| Error::Option(format!("{name:?} is not a valid unit name")))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl<'t> Installer<'t> {
    pub fn new(tree: &'t Tree) -> anyhow::Result<Installer<'t>> {
        let lib_first = Self::lib_before_usr_lib(tree)?;
        let (first, second) = if lib_first {
            ("/lib/systemd/system", "/usr/lib/systemd/system")
        } else {
            ("/usr/lib/systemd/system", "/lib/systemd/system")
        };
        Ok(Installer {
            tree,
            search: vec![
                CONFIG,
                "/run/systemd/system",
                "/usr/local/lib/systemd/system",
                first,
                second,
            ],
            visited: RefCell::new(BTreeSet::new()),
        })
    }

    /// With a merged `/usr`, every unit is reachable as both `/lib/...` and
    /// `/usr/lib/...`; which one links use depends on how the tree's own
    /// systemd was built (Debian 12: `/lib`, Fedora: `/usr/lib`). Follow the
    /// links the distribution's packages already made; else modern systemd.
    fn lib_before_usr_lib(tree: &Tree) -> anyhow::Result<bool> {
        match tree.symlink_metadata("/lib") {
            Ok(m) if !m.is_symlink() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let mut dirs = vec![CONFIG.to_string()];
        if tree.exists(CONFIG)? {
            for name in tree.read_dir(CONFIG)? {
                if name.ends_with(".wants") || name.ends_with(".requires") {
                    dirs.push(format!("{CONFIG}/{name}"));
                }
            }
        } else {
            return Ok(false);
        }
        for dir in dirs {
            if !tree.metadata(&dir)?.is_dir() {
                continue;
            }
            for name in tree.read_dir(&dir)? {
                let path = format!("{dir}/{name}");
                if !tree.symlink_metadata(&path)?.is_symlink() {
                    continue;
                }
                let target = tree.read_link(&path)?;
                if target.starts_with("/lib/systemd/system/") {
                    return Ok(true);
                }
                if target.starts_with("/usr/lib/systemd/system/") {
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }

    fn find(&self, name: &UnitName) -> Result<Option<Found>> {
        self.find_depth(name, 0)
    }

    fn find_depth(&self, name: &UnitName, depth: usize) -> Result<Option<Found>> {
        let mut candidates = vec![name.to_string()];
        if name.is_instance() {
            candidates.push(name.template());
        }
        for dir in &self.search {
            for cand in &candidates {
                let path = format!("{dir}/{cand}");
                let meta = match self.tree.symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            || e.kind() == io::ErrorKind::NotADirectory =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if !meta.is_symlink() {
                    return Ok(Some(Found {
                        path,
                        name: name.clone(),
                    }));
                }
                let target = self.tree.read_link(&path)?;
                if target.as_os_str() == "/dev/null" {
                    return Err(Error::Option(format!(
                        "unit {name} is masked ({path} -> /dev/null)"
                    )));
                }
                // An alias: the unit is the one the link leads to.
                let resolved = self.tree.resolve(&path)?;
                let real = basename(resolved.to_str().unwrap_or_default()).to_string();
                let real_name = match UnitName::parse(&real) {
                    Some(n) if name.is_instance() && n.is_template() => UnitName::parse(
                        &n.with_instance(name.instance.as_deref().unwrap_or_default()),
                    ),
                    other => other,
                };
                match real_name {
                    Some(real_name) if real_name != *name && depth < 8 => {
                        return self.find_depth(&real_name, depth + 1);
                    }
                    _ => {
                        // A linked unit file (same name, kept elsewhere).
                        return Ok(Some(Found {
                            path,
                            name: name.clone(),
                        }));
                    }
                }
            }
        }
        Ok(None)
    }

    fn not_found(&self, name: &UnitName) -> Error {
        Error::Option(format!(
            "unit {name} does not exist in the tree (searched {})",
            self.search.join(", ")
        ))
    }

    fn unit_file(&self, found: &Found) -> Result<UnitFile> {
        let text = self.tree.read_to_string(&found.path)?;
        UnitFile::parse(&text).map_err(|e| Error::Tree(anyhow::anyhow!("{}: {e}", found.path)))
    }

    /// Creates `link -> target`, or checks that it already is exactly that.
    fn ensure_link(&self, link: &str, target: &str) -> Result<()> {
        match self.tree.symlink_metadata(link) {
            Ok(m) if m.is_symlink() => {
                let existing = self.tree.read_link(link)?;
                if existing.as_os_str() == target {
                    return Ok(());
                }
                Err(Error::Tree(anyhow::anyhow!(
                    "{link} already exists and points to {}, not {target}",
                    existing.display()
                )))
            }
            Ok(_) => Err(Error::Tree(anyhow::anyhow!(
                "{link} already exists and is not a symlink"
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some((dir, _)) = link.rsplit_once('/') {
                    self.tree.create_dir_all(dir)?;
                }
                self.tree.symlink(target, link)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn link_to_dev_null(&self, link: &str) -> anyhow::Result<()> {
        self.ensure_link(link, "/dev/null").map_err(|e| match e {
            Error::Option(m) => anyhow::anyhow!(m),
            Error::Tree(e) => e,
        })
    }

    pub fn enable(&self, name: &str) -> Result<()> {
        let name = mangle(name, "service")?;
        if !self.visited.borrow_mut().insert(format!("enable {name}")) {
            return Ok(());
        }
        let found = self.find(&name)?.ok_or_else(|| self.not_found(&name))?;
        let unit = self.unit_file(&found)?;
        let name = found.name.clone();

        // What the `.wants/` links are called: an instance for a template.
        let install_name = if name.is_template() {
            unit.value("Install", "DefaultInstance")
                .filter(|i| !i.is_empty())
                .and_then(|i| UnitName::parse(&name.with_instance(i)))
        } else {
            Some(name.clone())
        };
        let spec_name = install_name.clone().unwrap_or_else(|| name.clone());

        let mut did_something = false;
        for (key, dir_suffix) in [
            ("WantedBy", "wants"),
            ("RequiredBy", "requires"),
            ("UpheldBy", "upholds"),
        ] {
            for target in unit.list("Install", key) {
                let target = expand_install_specifiers(&target, &spec_name);
                let Some(link_name) = &install_name else {
                    continue;
                };
                if UnitName::parse(&target).is_none() {
                    eprintln!("{}: ignoring {key}={target}: not a unit name", found.path);
                    continue;
                }
                self.ensure_link(
                    &format!("{CONFIG}/{target}.{dir_suffix}/{link_name}"),
                    &found.path,
                )?;
                did_something = true;
            }
        }
        for alias in unit.list("Install", "Alias") {
            let alias = expand_install_specifiers(&alias, &spec_name);
            let Some(alias_name) = UnitName::parse(&alias) else {
                eprintln!("{}: ignoring Alias={alias}: not a unit name", found.path);
                continue;
            };
            let alias = match (&name.instance, alias_name.is_template()) {
                (Some(i), true) if !i.is_empty() => alias_name.with_instance(i),
                _ => alias,
            };
            let link = format!("{CONFIG}/{alias}");
            if link != found.path {
                self.ensure_link(&link, &found.path)?;
            }
            did_something = true;
        }
        for also in unit.list("Install", "Also") {
            let also = expand_install_specifiers(&also, &spec_name);
            self.enable(&also)?;
            did_something = true;
        }
        if !did_something {
            eprintln!(
                "{}: the unit has no installation config (WantedBy=, RequiredBy=, UpheldBy=, Alias= or Also= in [Install]); nothing to enable",
                found.path
            );
        }
        Ok(())
    }

    pub fn disable(&self, name: &str) -> Result<()> {
        let name = mangle(name, "service")?;
        if !self.visited.borrow_mut().insert(format!("disable {name}")) {
            return Ok(());
        }
        let found = self.find(&name)?.ok_or_else(|| self.not_found(&name))?;
        let unit = self.unit_file(&found)?;
        let name = found.name.clone();

        // Links named like the unit or one of its aliases, or leading to its file.
        let mut names: BTreeSet<String> = BTreeSet::new();
        names.insert(name.to_string());
        for alias in unit.list("Install", "Alias") {
            names.insert(expand_install_specifiers(&alias, &name));
        }
        let mut files: BTreeSet<String> = BTreeSet::new();
        if !name.is_instance() {
            files.insert(basename(&found.path).to_string());
        }

        let mut dirs = vec![CONFIG.to_string()];
        if self.tree.exists(CONFIG)? {
            for entry in self.tree.read_dir(CONFIG)? {
                if [".wants", ".requires", ".upholds"]
                    .iter()
                    .any(|s| entry.ends_with(s))
                {
                    dirs.push(format!("{CONFIG}/{entry}"));
                }
            }
        }
        for dir in dirs {
            if !self.tree.exists(&dir)? || !self.tree.metadata(&dir)?.is_dir() {
                continue;
            }
            for entry in self.tree.read_dir(&dir)? {
                let path = format!("{dir}/{entry}");
                if !self.tree.symlink_metadata(&path)?.is_symlink() {
                    continue;
                }
                let target = self.tree.read_link(&path)?;
                let target = target.to_string_lossy();
                if target == "/dev/null" {
                    continue; // a mask, not an installation
                }
                if names.contains(&entry) || files.contains(basename(&target)) {
                    self.tree.remove_file(&path)?;
                }
            }
        }
        for also in unit.list("Install", "Also") {
            self.disable(&expand_install_specifiers(&also, &name))?;
        }
        Ok(())
    }

    pub fn mask(&self, name: &str) -> Result<()> {
        let name = mangle(name, "service")?;
        self.ensure_link(&format!("{CONFIG}/{name}"), "/dev/null")
    }

    pub fn set_default(&self, target: &str) -> Result<()> {
        let name = mangle(target, "target")?;
        if name.suffix != "target" {
            return Err(Error::Option(format!("{name} is not a target unit")));
        }
        let found = self.find(&name)?.ok_or_else(|| self.not_found(&name))?;
        let link = format!("{CONFIG}/default.target");
        match self.tree.symlink_metadata(&link) {
            Ok(m) if m.is_symlink() => self.tree.remove_file(&link)?,
            Ok(_) => {
                return Err(Error::Tree(anyhow::anyhow!(
                    "{link} exists and is not a symlink"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.ensure_link(&link, &found.path)
    }
}

#[cfg(test)]
mod tests;

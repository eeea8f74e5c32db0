//! `io.weldr.users`: creates or modifies user accounts with osbuild's
//! `org.osbuild.users` options, doing what that stage's tool invocations do:
//! `useradd --root=TREE ...` for a new user, `usermod --root=TREE ...` for an
//! existing one, `passwd --root=TREE --expire` for `force_password_reset`,
//! then the SSH keys into `~/.ssh/authorized_keys`. Users are handled in the
//! order of their names (the options arrive as canonical JSON).
//!
//! Deliberate differences from those tools:
//! - the last-change day in `/etc/shadow` is the source epoch's day (the
//!   clock a wasm stage sees), not the build host's today;
//! - a new user with SSH keys but no `home` option gets a home directory
//!   even where `login.defs` has no `CREATE_HOME yes` (osbuild would fail
//!   writing the keys); an existing user gets a missing home created (as
//!   osbuild's `mkhomedir_helper` call does) only when `home` or keys are
//!   given, not for every modified user;
//! - hard links inside `/etc/skel` are copied as separate files.

mod home;
mod useradd;
mod usermod;

use std::collections::BTreeMap;

use osbuild_stage::formats::accounts::{self, SubId, Table, invalid_name};
use osbuild_stage::formats::passwd::{GShadow, Group, Passwd, Shadow};
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub users: BTreeMap<String, User>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub description: Option<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub password: Option<String>,
    pub key: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    pub expiredate: Option<i64>,
    #[serde(default)]
    pub force_password_reset: bool,
}

impl User {
    /// The SSH keys to add: `keys`, then `key` (as osbuild orders them).
    pub fn all_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        if let Some(k) = self.key.as_deref().filter(|k| !k.is_empty()) {
            keys.push(k);
        }
        keys
    }
}

/// The account databases of the tree.
pub struct Db {
    pub passwd: Table<Passwd>,
    pub shadow: Option<Table<Shadow>>,
    pub group: Table<Group>,
    pub gshadow: Option<Table<GShadow>>,
    pub subuid: Option<Table<SubId>>,
    pub subgid: Option<Table<SubId>>,
}

impl Db {
    pub fn load(tree: &Tree) -> anyhow::Result<Db> {
        let missing = |p: &str| anyhow::anyhow!("{p} does not exist in the tree");
        Ok(Db {
            passwd: Table::load(tree, "/etc/passwd")?.ok_or_else(|| missing("/etc/passwd"))?,
            shadow: Table::load(tree, "/etc/shadow")?,
            group: Table::load(tree, "/etc/group")?.ok_or_else(|| missing("/etc/group"))?,
            gshadow: Table::load(tree, "/etc/gshadow")?,
            subuid: Table::load(tree, "/etc/subuid")?,
            subgid: Table::load(tree, "/etc/subgid")?,
        })
    }

    /// Starts one tool invocation.
    pub fn begin(&mut self) {
        self.passwd.begin();
        self.group.begin();
        self.shadow.iter_mut().for_each(Table::begin);
        self.gshadow.iter_mut().for_each(Table::begin);
        self.subuid.iter_mut().for_each(Table::begin);
        self.subgid.iter_mut().for_each(Table::begin);
    }

    /// Ends one tool invocation.
    pub fn finish(&mut self) {
        self.passwd.finish();
        self.group.finish();
        self.shadow.iter_mut().for_each(Table::finish);
        self.gshadow.iter_mut().for_each(Table::finish);
        self.subuid.iter_mut().for_each(Table::finish);
        self.subgid.iter_mut().for_each(Table::finish);
    }

    pub fn save(&self, tree: &Tree) -> std::io::Result<()> {
        let changed = self.passwd.changed()
            || self.group.changed()
            || self.shadow.as_ref().is_some_and(Table::changed)
            || self.gshadow.as_ref().is_some_and(Table::changed);
        if changed {
            accounts::ensure_pwd_lock(tree)?;
        }
        self.passwd.save(tree)?;
        self.group.save(tree)?;
        for t in self.shadow.iter() {
            t.save(tree)?;
        }
        for t in self.gshadow.iter() {
            t.save(tree)?;
        }
        for t in self.subuid.iter().chain(self.subgid.iter()) {
            t.save(tree)?;
        }
        Ok(())
    }

    /// A group by name, or by gid for a number (as the tools look up
    /// `--gid` and `--groups` values).
    pub fn find_group(&self, name_or_gid: &str) -> Option<&Group> {
        match name_or_gid.parse::<u32>() {
            Ok(gid) => self.group.db.records().find(|g| g.gid == gid),
            Err(_) => self.group.db.get(name_or_gid),
        }
    }

    /// The names of the groups in `user.groups`, or an error naming the
    /// first one that does not exist.
    pub fn resolve_groups(&self, name: &str, user: &User) -> Result<Vec<String>, OptionError> {
        user.groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                self.find_group(g).map(|g| g.name.clone()).ok_or_else(|| {
                    OptionError::new(
                        format!("users.{name}.groups[{i}]"),
                        format!("group {g:?} does not exist in /etc/group"),
                    )
                })
            })
            .collect()
    }
}

fn check_field(name: &str, field: &str, value: &str, absolute: bool) -> Result<(), OptionError> {
    if value.contains([':', '\n']) {
        return Err(OptionError::new(
            format!("users.{name}.{field}"),
            format!("{value:?} contains ':' or a newline"),
        ));
    }
    if absolute && !value.is_empty() && !value.starts_with('/') {
        return Err(OptionError::new(
            format!("users.{name}.{field}"),
            format!("{value:?} is not an absolute path"),
        ));
    }
    Ok(())
}

/// Checks what the schema checks, for callers that skip it.
fn check_user(name: &str, user: &User) -> Result<(), OptionError> {
    if let Some(reason) = invalid_name(name) {
        return Err(OptionError::new(
            format!("users.{name}"),
            format!("{name:?} is not a valid user name: it {reason}"),
        ));
    }
    for (field, value, absolute) in [
        ("description", &user.description, false),
        ("home", &user.home, true),
        ("shell", &user.shell, false),
        ("password", &user.password, false),
    ] {
        if let Some(v) = value {
            check_field(name, field, v, absolute)?;
        }
    }
    if let Some(shell) = &user.shell
        && !shell.is_empty()
        && !shell.starts_with(['/', '*'])
    {
        return Err(OptionError::new(
            format!("users.{name}.shell"),
            format!("{shell:?} is not an absolute path"),
        ));
    }
    if let Some(e) = user.expiredate
        && e < -1
    {
        return Err(OptionError::new(
            format!("users.{name}.expiredate"),
            format!("{e} is not a day count (or -1 for never)"),
        ));
    }
    for (i, k) in user.keys.iter().enumerate() {
        if k.contains('\n') {
            return Err(OptionError::new(
                format!("users.{name}.keys[{i}]"),
                "an SSH key is one line",
            ));
        }
    }
    if user.key.as_deref().is_some_and(|k| k.contains('\n')) {
        return Err(OptionError::new(
            format!("users.{name}.key"),
            "an SSH key is one line",
        ));
    }
    Ok(())
}

/// The stage, with `today` (the shadow last-change day) given.
pub fn run_on(tree: &Tree, options: Options, today: Option<i64>) -> anyhow::Result<()> {
    for (name, user) in &options.users {
        check_user(name, user)?;
    }
    let mut db = Db::load(tree)?;
    let defs = accounts::Defs::load(tree)?;
    for (name, user) in &options.users {
        db.begin();
        if db.passwd.db.get(name).is_some() {
            usermod::modify(tree, &mut db, &defs, name, user, today)?;
        } else {
            useradd::add(tree, &mut db, &defs, name, user, today)?;
        }
        db.finish();
        if user.force_password_reset {
            db.begin();
            usermod::expire_password(&mut db, name)?;
            db.finish();
        }
        let keys = user.all_keys();
        if !keys.is_empty() {
            let pw = db.passwd.db.get(name).expect("user exists").clone();
            if home::stat(tree, &pw.home)?.is_none_or(|m| !m.is_dir()) {
                let field = if user.keys.is_empty() { "key" } else { "keys" };
                return Err(OptionError::new(
                    format!("users.{name}.{field}"),
                    format!(
                        "the home directory {:?} does not exist to hold ~/.ssh",
                        pw.home
                    ),
                )
                .into());
            }
            home::add_ssh_keys(tree, &pw, &keys)?;
        }
    }
    db.save(tree)?;
    Ok(())
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    run_on(tree, options, accounts::today())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests;

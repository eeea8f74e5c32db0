//! `io.weldr.groups`: creates groups in `/etc/group` and `/etc/gshadow`,
//! as `groupadd --root=TREE [--gid GID] NAME` does for each group (osbuild's
//! `org.osbuild.groups`), in the order of their names.

use std::collections::BTreeMap;

use osbuild_stage::formats::accounts::{self, Table, find_new_id, invalid_name, upsert};
use osbuild_stage::formats::passwd::{GShadow, Group, LoginDefs};
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub groups: BTreeMap<String, GroupOptions>,
    /// Succeed when a group exists already, and pick a free GID when the
    /// one asked for is taken (`groupadd --force`).
    #[serde(default)]
    pub force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GroupOptions {
    pub gid: Option<u32>,
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let ids = LoginDefs::parse(&tree.read_optional("/etc/login.defs")?.unwrap_or_default());
    let mut group = Table::<Group>::load(tree, "/etc/group")?
        .ok_or_else(|| anyhow::anyhow!("/etc/group does not exist in the tree"))?;
    let mut gshadow = Table::<GShadow>::load(tree, "/etc/gshadow")?;

    for (name, opts) in &options.groups {
        if let Some(reason) = invalid_name(name) {
            return Err(OptionError::new(
                format!("groups.{name}"),
                format!("{name:?} is not a valid group name: it {reason}"),
            )
            .into());
        }
        group.begin();
        if let Some(g) = &mut gshadow {
            g.begin();
        }
        if let Some(existing) = group.db.get(name) {
            if options.force {
                continue;
            }
            return Err(OptionError::new(
                format!("groups.{name}"),
                format!(
                    "group {name} already exists in /etc/group (gid {})",
                    existing.gid
                ),
            )
            .into());
        }
        let used: Vec<u32> = group.db.records().map(|g| g.gid).collect();
        let mut gid = opts.gid;
        if let Some(g) = gid
            && let Some(owner) = group.db.records().find(|r| r.gid == g)
        {
            if !options.force {
                return Err(OptionError::new(
                    format!("groups.{name}.gid"),
                    format!(
                        "gid {g} is already used by group {} in /etc/group",
                        owner.name
                    ),
                )
                .into());
            }
            gid = None;
        }
        let gid = match gid {
            Some(g) => g,
            None => find_new_id(&used, ids.gid_min, ids.gid_max, None).ok_or_else(|| {
                OptionError::new(
                    format!("groups.{name}"),
                    format!(
                        "no free gid between GID_MIN {} and GID_MAX {} (/etc/login.defs)",
                        ids.gid_min, ids.gid_max
                    ),
                )
            })?,
        };
        upsert(
            group.edit(),
            Group {
                name: name.clone(),
                password: "x".into(),
                gid,
                members: Vec::new(),
            },
        );
        group.finish();
        if let Some(g) = &mut gshadow {
            upsert(
                g.edit(),
                GShadow {
                    name: name.clone(),
                    password: "!".into(),
                    admins: Vec::new(),
                    members: Vec::new(),
                },
            );
            g.finish();
        }
    }

    if group.changed() {
        accounts::ensure_pwd_lock(tree)?;
    }
    group.save(tree)?;
    if let Some(g) = &gshadow {
        g.save(tree)?;
    }
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests;

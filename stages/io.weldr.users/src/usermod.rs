//! An existing user: what `usermod --root=TREE` does with the options
//! osbuild's stage passes (`--gid`, `--groups` (replacing the supplementary
//! groups), `--comment`, `--home` (without moving it), `--shell`,
//! `--password`, `--expiredate`), then a missing home created as
//! `mkhomedir_helper` does; and `passwd --root=TREE --expire`.

use std::path::Path;

use osbuild_stage::formats::passwd::Shadow;
use osbuild_stage::{OptionError, Tree, anyhow};

use crate::home::{self, Style};
use crate::{Db, User};
use osbuild_stage::formats::accounts::{Defs, add_member, upsert};

fn days(n: i64) -> Option<i64> {
    (n != -1).then_some(n)
}

pub fn modify(
    tree: &Tree,
    db: &mut Db,
    defs: &Defs,
    name: &str,
    user: &User,
    today: Option<i64>,
) -> anyhow::Result<()> {
    let opt = |field: &str| format!("users.{name}.{field}");
    let pw = db.passwd.db.get(name).expect("user exists").clone();
    if let Some(uid) = user.uid
        && uid != pw.uid
    {
        return Err(OptionError::new(
            opt("uid"),
            format!(
                "user {name} exists with uid {}: the uid of an existing user is not changed",
                pw.uid
            ),
        )
        .into());
    }

    // The usermod options osbuild would pass.
    let new_home = user.home.as_deref().filter(|h| !h.is_empty());
    let new_shell = user.shell.as_deref().filter(|s| !s.is_empty());
    let mut gflg = user.gid.is_some();
    let big_gflg = !user.groups.is_empty();
    let mut cflg = user.description.is_some();
    let mut dflg = new_home.is_some();
    let mut sflg = new_shell.is_some();
    let pflg = user.password.is_some();
    let mut eflg = user.expiredate.is_some();

    if gflg || big_gflg || cflg || dflg || sflg || pflg || eflg {
        // usermod's checks.
        let new_gid = match user.gid {
            Some(gid) => {
                db.find_group(&gid.to_string())
                    .ok_or_else(|| {
                        OptionError::new(
                            opt("gid"),
                            format!("there is no group with gid {gid} in /etc/group"),
                        )
                    })?
                    .gid
            }
            None => pw.gid,
        };
        let groups = db.resolve_groups(name, user)?;
        let new_expire = user.expiredate.unwrap_or(-1);
        if eflg && db.shadow.is_none() {
            return Err(OptionError::new(
                opt("expiredate"),
                "an expiry date needs shadow passwords, and the tree has no /etc/shadow",
            )
            .into());
        }

        // Options that change nothing are dropped (except the password).
        let spwd: Option<Shadow> = db.shadow.as_ref().and_then(|s| s.db.get(name).cloned());
        // usermod compares with the shadow entry's expiry, or 0 without one.
        let old_expire = match &spwd {
            Some(s) => s.expire.unwrap_or(-1),
            None => 0,
        };
        gflg &= new_gid != pw.gid;
        sflg &= new_shell != Some(pw.shell.as_str());
        dflg &= new_home != Some(pw.home.as_str());
        cflg &= user.description.as_deref() != Some(pw.gecos.as_str());
        eflg &= new_expire != old_expire;

        if gflg || big_gflg || cflg || dflg || sflg || pflg || eflg {
            let mut pwent = pw.clone();
            if pflg && (db.shadow.is_none() || pwent.password != "x") {
                pwent.password = user.password.clone().unwrap_or_default();
            }
            if gflg {
                pwent.gid = new_gid;
            }
            if cflg {
                pwent.gecos = user.description.clone().unwrap_or_default();
            }
            if dflg {
                pwent.home = new_home.unwrap_or_default().to_string();
            }
            if sflg {
                pwent.shell = new_shell.unwrap_or_default().to_string();
            }
            let new_spent = |mut s: Shadow| {
                if eflg {
                    s.expire = days(new_expire);
                }
                if pflg {
                    s.password = user.password.clone().unwrap_or_default();
                    s.last_change = today;
                }
                s
            };
            let mut shadow_entry = None;
            if let Some(s) = spwd {
                if eflg || pflg {
                    shadow_entry = Some(new_spent(s));
                }
            } else if db.shadow.is_some() && ((pflg && pwent.password == "x") || eflg) {
                // usermod moves the password into a new shadow entry.
                let s = Shadow {
                    name: name.into(),
                    password: pwent.password.clone(),
                    last_change: today,
                    min: days(defs.num("PASS_MIN_DAYS", -1)),
                    max: days(defs.num("PASS_MAX_DAYS", -1)),
                    warn: days(defs.num("PASS_WARN_AGE", -1)),
                    inactive: None,
                    expire: None,
                    reserved: String::new(),
                };
                pwent.password = "x".into();
                shadow_entry = Some(new_spent(s));
            }
            if gflg || cflg || dflg || sflg || pflg {
                upsert(db.passwd.edit(), pwent.clone());
            }
            if let (Some(entry), Some(shadow)) = (shadow_entry, &mut db.shadow) {
                upsert(shadow.edit(), entry);
            }
            if big_gflg {
                replace_groups(db, name, &groups);
            }
            // usermod -g re-owns what in the home has the old group.
            if gflg {
                let home = if dflg {
                    new_home.unwrap_or_default()
                } else {
                    pw.home.as_str()
                };
                if let Some(m) = home::stat(tree, home)?
                    && m.uid == pw.uid
                    && tree.symlink_metadata(home)?.is_dir()
                {
                    home::chown_tree(tree, Path::new(home), pw.gid, new_gid)?;
                }
            }
        }
    }

    // osbuild then creates a missing home with mkhomedir_helper; here only
    // when the home or keys were asked for.
    if new_home.is_some() || !user.all_keys().is_empty() {
        let pw = db.passwd.db.get(name).expect("user exists").clone();
        if !pw.home.is_empty() && home::stat(tree, &pw.home)?.is_none() {
            home::create(
                tree,
                &pw.home,
                pw.uid,
                pw.gid,
                0o755,
                "/etc/skel",
                Style::Mkhomedir,
            )?;
        }
    }
    Ok(())
}

/// `usermod --groups`: the user becomes a member of exactly `groups`
/// among the supplementary groups, in `/etc/group` and `/etc/gshadow`
/// (administrator lists are left alone).
fn replace_groups(db: &mut Db, name: &str, groups: &[String]) {
    let wanted = |g: &str| groups.iter().any(|n| n == g);
    let mut changes: Vec<(String, bool)> = Vec::new();
    for g in db.group.db.records() {
        let was = g.members.iter().any(|m| m == name);
        let is = wanted(&g.name);
        if was != is {
            changes.push((g.name.clone(), is));
        }
    }
    for (gname, add) in changes {
        let g = db.group.edit().get_mut(&gname).expect("group exists");
        if add {
            add_member(&mut g.members, name);
        } else {
            g.members.retain(|m| m != name);
        }
    }
    let Some(gshadow) = &mut db.gshadow else {
        return;
    };
    let mut changes: Vec<(String, bool)> = Vec::new();
    for g in gshadow.db.records() {
        let was = g.members.iter().any(|m| m == name);
        let is = wanted(&g.name);
        if was != is {
            changes.push((g.name.clone(), is));
        }
    }
    for (gname, add) in changes {
        let g = gshadow.edit().get_mut(&gname).expect("entry exists");
        if add {
            add_member(&mut g.members, name);
        } else {
            g.members.retain(|m| m != name);
        }
    }
}

/// `passwd --expire`: the password must be changed at the next login
/// (last-change day 0).
pub fn expire_password(db: &mut Db, name: &str) -> anyhow::Result<()> {
    let has_entry = db.shadow.as_ref().is_some_and(|s| s.db.get(name).is_some());
    if !has_entry {
        return Err(OptionError::new(
            format!("users.{name}.force_password_reset"),
            format!("user {name} has no entry in /etc/shadow to expire"),
        )
        .into());
    }
    let shadow = db.shadow.as_mut().expect("checked");
    shadow.edit().get_mut(name).expect("checked").last_change = Some(0);
    Ok(())
}

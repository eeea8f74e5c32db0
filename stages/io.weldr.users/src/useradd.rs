//! A new user: what `useradd --root=TREE` does with the options osbuild's
//! stage passes (`--uid`, `--gid`, `--groups`, `--comment`, `--home-dir`
//! with `--create-home`, or `--no-create-home` for an empty home,
//! `--shell`, `--password`, `--expiredate`).

use osbuild_stage::formats::passwd::{GShadow, Group, LoginDefs, Passwd, Shadow};
use osbuild_stage::{OptionError, Tree, anyhow};

use crate::home::{self, Style};
use crate::{Db, User};
use osbuild_stage::formats::accounts::{
    Defs, SubId, Table, add_member, find_free_range, find_new_id, sort_subids, strtoday, upsert,
};

/// `/etc/default/useradd`, as `useradd` reads it.
pub struct UseraddDefaults {
    pub group: u32,
    pub home: String,
    pub shell: String,
    pub inactive: Option<i64>,
    pub expire: Option<i64>,
    pub skel: String,
    pub create_mail_spool: bool,
}

impl UseraddDefaults {
    pub fn load(tree: &Tree, db: &Db) -> anyhow::Result<UseraddDefaults> {
        let mut d = UseraddDefaults {
            group: 100,
            home: "/home".into(),
            shell: "/bin/bash".into(),
            inactive: None,
            expire: None,
            skel: "/etc/skel".into(),
            create_mail_spool: false,
        };
        let Some(text) = tree.read_optional("/etc/default/useradd")? else {
            return Ok(d);
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "GROUP" => {
                    // A group that does not exist is ignored (with a warning).
                    if let Some(g) = db.find_group(value) {
                        d.group = g.gid;
                    }
                }
                "HOME" => d.home = value.into(),
                "SHELL" => d.shell = value.into(),
                "INACTIVE" => {
                    if let Some(n) = osbuild_stage::formats::accounts::parse_c_long(value) {
                        d.inactive = (n != -1).then_some(n);
                    }
                }
                "EXPIRE" => {
                    d.expire = if value.is_empty() {
                        None
                    } else {
                        match strtoday(value) {
                            Some(-1) => None,
                            Some(n) if n >= 0 => Some(n),
                            _ => {
                                anyhow::bail!("/etc/default/useradd: EXPIRE={value} is not a date")
                            }
                        }
                    }
                }
                "SKEL" => {
                    d.skel = if value.is_empty() {
                        "/etc/skel".into()
                    } else {
                        value.into()
                    }
                }
                "CREATE_MAIL_SPOOL" => d.create_mail_spool = value.eq_ignore_ascii_case("yes"),
                _ => {}
            }
        }
        Ok(d)
    }
}

fn days(n: i64) -> Option<i64> {
    (n != -1).then_some(n)
}

/// A subordinate id range for `name` (as `useradd` adds to `/etc/subuid`
/// and `/etc/subgid` when they exist).
fn add_subids(
    table: &mut Option<Table<SubId>>,
    defs: &Defs,
    kind: &str,
    name: &str,
) -> anyhow::Result<()> {
    let Some(t) = table else { return Ok(()) };
    let min = defs.num(&format!("SUB_{kind}_MIN"), 100000).max(0) as u64;
    let max = defs.num(&format!("SUB_{kind}_MAX"), 600100000).max(0) as u64;
    let count = defs.num(&format!("SUB_{kind}_COUNT"), 65536).max(0) as u64;
    if count == 0 || t.db.records().any(|r| r.owner == name) {
        return Ok(());
    }
    if min > max || count >= max || min + count - 1 > max {
        anyhow::bail!(
            "/etc/login.defs: invalid configuration: SUB_{kind}_MIN ({min}), SUB_{kind}_MAX ({max}), SUB_{kind}_COUNT ({count})"
        );
    }
    let db = t.edit();
    sort_subids(db);
    let start = find_free_range(db, min, max, count).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no free range of {count} subordinate ids left for {name}",
            t.path
        )
    })?;
    t.edit().push(SubId {
        owner: name.into(),
        start,
        count,
    });
    Ok(())
}

pub fn add(
    tree: &Tree,
    db: &mut Db,
    defs: &Defs,
    name: &str,
    user: &User,
    today: Option<i64>,
) -> anyhow::Result<()> {
    let opt = |field: &str| format!("users.{name}.{field}");
    let ids = LoginDefs::parse(&tree.read_optional("/etc/login.defs")?.unwrap_or_default());
    let defaults = UseraddDefaults::load(tree, db)?;

    // The checks, in useradd's order.
    let primary = match user.gid {
        Some(gid) => Some(
            db.find_group(&gid.to_string())
                .ok_or_else(|| {
                    OptionError::new(
                        opt("gid"),
                        format!("there is no group with gid {gid} in /etc/group"),
                    )
                })?
                .gid,
        ),
        None => None,
    };
    let groups = db.resolve_groups(name, user)?;
    if user.expiredate.is_some_and(|e| e != -1) && db.shadow.is_none() {
        return Err(OptionError::new(
            opt("expiredate"),
            "an expiry date needs shadow passwords, and the tree has no /etc/shadow",
        )
        .into());
    }
    if let Some(uid) = user.uid
        && let Some(other) = db.passwd.db.records().find(|p| p.uid == uid)
    {
        return Err(OptionError::new(
            opt("uid"),
            format!(
                "uid {uid} is already used by user {} in /etc/passwd",
                other.name
            ),
        )
        .into());
    }
    let private_group = primary.is_none() && defs.bool("USERGROUPS_ENAB");
    if private_group && let Some(g) = db.group.db.get(name) {
        return Err(OptionError::new(
            format!("users.{name}"),
            format!(
                "a group named {name} exists already (gid {}): set users.{name}.gid to {} to make it the user's primary group",
                g.gid, g.gid
            ),
        )
        .into());
    }

    // Ids.
    let uids: Vec<u32> = db.passwd.db.records().map(|p| p.uid).collect();
    let uid = match user.uid {
        Some(u) => u,
        None => find_new_id(&uids, ids.uid_min, ids.uid_max, None).ok_or_else(|| {
            OptionError::new(
                format!("users.{name}"),
                format!(
                    "no free uid between UID_MIN {} and UID_MAX {} (/etc/login.defs)",
                    ids.uid_min, ids.uid_max
                ),
            )
        })?,
    };
    let gid = if private_group {
        let gids: Vec<u32> = db.group.db.records().map(|g| g.gid).collect();
        find_new_id(&gids, ids.gid_min, ids.gid_max, Some((uid, ids.gid_min))).ok_or_else(
            || {
                OptionError::new(
                    format!("users.{name}"),
                    format!(
                        "no free gid for the user's group between GID_MIN {} and GID_MAX {} (/etc/login.defs)",
                        ids.gid_min, ids.gid_max
                    ),
                )
            },
        )?
    } else {
        primary.unwrap_or(defaults.group)
    };
    // Subordinate ids only for ordinary uids (an unset or zero uid counts).
    if user
        .uid
        .is_none_or(|u| u == 0 || (ids.uid_min..=ids.uid_max).contains(&u))
    {
        add_subids(&mut db.subuid, defs, "UID", name)?;
        add_subids(&mut db.subgid, defs, "GID", name)?;
    }

    // The entries.
    let password = user.password.clone().unwrap_or_else(|| "!".into());
    let home = match user.home.as_deref() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => format!("{}/{name}", defaults.home),
    };
    let shell = match user.shell.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => defaults.shell.clone(),
    };
    upsert(
        db.passwd.edit(),
        Passwd {
            name: name.into(),
            password: if db.shadow.is_some() {
                "x".into()
            } else {
                password.clone()
            },
            uid,
            gid,
            gecos: user.description.clone().unwrap_or_default(),
            home: home.clone(),
            shell,
        },
    );
    if let Some(shadow) = &mut db.shadow {
        upsert(
            shadow.edit(),
            Shadow {
                name: name.into(),
                password,
                last_change: today,
                min: days(defs.num("PASS_MIN_DAYS", -1)),
                max: days(defs.num("PASS_MAX_DAYS", -1)),
                warn: days(defs.num("PASS_WARN_AGE", -1)),
                inactive: defaults.inactive,
                expire: match user.expiredate {
                    Some(e) => days(e),
                    None => defaults.expire,
                },
                reserved: String::new(),
            },
        );
    }
    // Supplementary groups, then the user's own group.
    if !groups.is_empty() {
        let in_list = |g: &str| groups.iter().any(|n| n == g);
        let names: Vec<String> = db.group.db.records().map(|g| g.name.clone()).collect();
        for gname in names.iter().filter(|g| in_list(g)) {
            let g = db.group.edit().get_mut(gname).expect("group exists");
            add_member(&mut g.members, name);
        }
        if let Some(gshadow) = &mut db.gshadow {
            let targets: Vec<String> = gshadow
                .db
                .records()
                .map(|g| g.name.clone())
                .filter(|g| in_list(g) && names.contains(g))
                .collect();
            for gname in targets {
                let g = gshadow
                    .edit()
                    .get_mut(&gname)
                    .expect("gshadow entry exists");
                add_member(&mut g.members, name);
            }
        }
    }
    if private_group {
        let has_gshadow = db.gshadow.is_some();
        upsert(
            db.group.edit(),
            Group {
                name: name.into(),
                password: if has_gshadow { "x" } else { "!" }.into(),
                gid,
                members: Vec::new(),
            },
        );
        if let Some(gshadow) = &mut db.gshadow {
            upsert(
                gshadow.edit(),
                GShadow {
                    name: name.into(),
                    password: "!".into(),
                    admins: Vec::new(),
                    members: Vec::new(),
                },
            );
        }
    }

    // The home directory and mail spool.
    let create_home = match user.home.as_deref() {
        Some("") => false,
        Some(_) => true,
        None => ids.create_home || !user.all_keys().is_empty(),
    };
    if create_home {
        let created = home::create(
            tree,
            &home,
            uid,
            gid,
            ids.home_mode,
            &defaults.skel,
            Style::Useradd,
        )?;
        if !created {
            eprintln!(
                "users.{name}: the home directory {home} exists already; not copying {} into it",
                defaults.skel
            );
        }
    }
    if defaults.create_mail_spool {
        let spool = defs.str("MAIL_DIR").unwrap_or("/var/mail");
        let group = match db.group.db.get("mail") {
            Some(m) => (m.gid, 0o660),
            None => (gid, 0o600),
        };
        home::create_mail_spool(tree, spool, name, uid, group)?;
    }
    Ok(())
}

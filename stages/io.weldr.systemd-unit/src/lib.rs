//! `io.weldr.systemd-unit`: writes a systemd unit file, or a drop-in for
//! one, from structured options: osbuild's `org.osbuild.systemd.unit.create`
//! (`filename`) and `org.osbuild.systemd.unit` (`unit` + `dropin`) in one
//! stage.
//!
//! Each section of `config` becomes `[Section]` and each key a `Key=Value`
//! line; a list becomes one line per item; booleans are written `True` /
//! `False` and an `Environment` item `{"key": K, "value": V}` becomes
//! `Environment="K=V"`, as osbuild writes them (Python's configparser: a
//! blank line after every section). Sections come in the usual order
//! (`Unit`, the type's own section, others, `Install`).

use std::collections::BTreeMap;
use std::io;

use osbuild_stage::formats::unit::UnitName;
use osbuild_stage::serde_json::Value;
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The unit to create (osbuild's `systemd.unit.create`).
    #[serde(default)]
    pub filename: Option<String>,
    /// The unit to create, or with `dropin` the unit to add a drop-in to.
    #[serde(default)]
    pub unit: Option<String>,
    /// The drop-in's file name (`*.conf`), in `<unit>.d/`.
    #[serde(default)]
    pub dropin: Option<String>,
    #[serde(rename = "unit-type", default)]
    pub unit_type: UnitType,
    #[serde(rename = "unit-path", default)]
    pub unit_path: UnitPath,
    pub config: BTreeMap<String, BTreeMap<String, Value>>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum UnitType {
    #[default]
    System,
    /// User units for every user (`systemd/user`).
    Global,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum UnitPath {
    #[default]
    Usr,
    Etc,
}

/// The directory units of this type and path go in.
pub fn unit_dir(unit_type: UnitType, unit_path: UnitPath) -> &'static str {
    match (unit_path, unit_type) {
        (UnitPath::Usr, UnitType::System) => "/usr/lib/systemd/system",
        (UnitPath::Usr, UnitType::Global) => "/usr/lib/systemd/user",
        (UnitPath::Etc, UnitType::System) => "/etc/systemd/system",
        (UnitPath::Etc, UnitType::Global) => "/etc/systemd/user",
    }
}

/// Where systemd looks for units of this type (for checking that a unit a
/// drop-in is for exists).
fn search_path(unit_type: UnitType) -> &'static [&'static str] {
    match unit_type {
        UnitType::System => &[
            "/etc/systemd/system",
            "/run/systemd/system",
            "/usr/local/lib/systemd/system",
            "/usr/lib/systemd/system",
            "/lib/systemd/system",
        ],
        UnitType::Global => &[
            "/etc/systemd/user",
            "/usr/local/lib/systemd/user",
            "/usr/lib/systemd/user",
            "/lib/systemd/user",
        ],
    }
}

/// The section a unit type has of its own.
fn type_section(suffix: &str) -> Option<&'static str> {
    Some(match suffix {
        "service" => "Service",
        "socket" => "Socket",
        "mount" => "Mount",
        "automount" => "Automount",
        "swap" => "Swap",
        "timer" => "Timer",
        "path" => "Path",
        "slice" => "Slice",
        "scope" => "Scope",
        _ => return None,
    })
}

const TYPE_SECTIONS: &[&str] = &[
    "Service",
    "Socket",
    "Mount",
    "Automount",
    "Swap",
    "Timer",
    "Path",
    "Slice",
    "Scope",
];

/// Unit types systemd generates at run time (from fstab, for devices, ...),
/// which may well have drop-ins without a unit file in the tree.
const GENERATED_TYPES: &[&str] = &["mount", "automount", "swap", "device", "scope", "slice"];

fn section_rank(name: &str) -> u8 {
    match name {
        "Unit" => 0,
        "Install" => 4,
        n if n.starts_with("X-") => 3,
        n if TYPE_SECTIONS.contains(&n) => 1,
        _ => 2,
    }
}

fn key_rank(key: &str) -> u8 {
    match key {
        "Description" => 0,
        "Documentation" => 1,
        "Type" => 2,
        _ => 3,
    }
}

fn single_line(option: &str, s: &str) -> anyhow::Result<()> {
    if s.contains(['\n', '\r', '\0']) {
        return Err(OptionError::new(option, "contains a line break or NUL").into());
    }
    Ok(())
}

/// One value as written after `Key=`.
fn scalar(option: &str, key: &str, v: &Value) -> anyhow::Result<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Object(o) if key == "Environment" => {
            let (Some(Value::String(k)), Some(Value::String(val))) = (o.get("key"), o.get("value"))
            else {
                return Err(OptionError::new(
                    option,
                    "an Environment item is {\"key\": NAME, \"value\": VALUE}",
                )
                .into());
            };
            if o.len() != 2 {
                return Err(OptionError::new(
                    option,
                    "an Environment item has only \"key\" and \"value\"",
                )
                .into());
            }
            let mut chars = k.chars();
            if !chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(OptionError::new(
                    format!("{option}.key"),
                    format!("{k:?} is not an environment variable name"),
                )
                .into());
            }
            format!("\"{k}={}\"", val.replace('\\', "\\\\").replace('"', "\\\""))
        }
        other => {
            return Err(OptionError::new(
                option,
                format!("{other} is not a string, integer, boolean or list of them"),
            )
            .into());
        }
    };
    single_line(option, &text)?;
    Ok(text)
}

fn name_ok(name: &str, first_upper: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() && (!first_upper || c.is_ascii_uppercase()))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The unit file text for `config`; `suffix` is the unit's type.
pub fn render(
    config: &BTreeMap<String, BTreeMap<String, Value>>,
    suffix: &str,
) -> anyhow::Result<String> {
    let own = type_section(suffix);
    let mut sections: Vec<(&String, &BTreeMap<String, Value>)> = config.iter().collect();
    for (name, _) in &sections {
        let option = format!("config.{name}");
        if !name_ok(name, true) {
            return Err(OptionError::new(option, "is not a section name").into());
        }
        if TYPE_SECTIONS.contains(&name.as_str()) && Some(name.as_str()) != own {
            return Err(OptionError::new(
                option,
                format!("a .{suffix} unit has no [{name}] section"),
            )
            .into());
        }
    }
    sections.sort_by_key(|(name, _)| (section_rank(name), name.to_string()));
    let mut out = String::new();
    for (name, entries) in sections {
        out.push_str(&format!("[{name}]\n"));
        let mut keys: Vec<(&String, &Value)> = entries.iter().collect();
        keys.sort_by_key(|(k, _)| (key_rank(k), k.to_string()));
        for (key, value) in keys {
            let option = format!("config.{name}.{key}");
            if !name_ok(key, false) {
                return Err(OptionError::new(option, "is not a setting name").into());
            }
            match value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let v = scalar(&format!("{option}[{i}]"), key, item)?;
                        out.push_str(&format!("{key}={v}\n"));
                    }
                }
                v => {
                    let v = scalar(&option, key, v)?;
                    out.push_str(&format!("{key}={v}\n"));
                }
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// systemd's `unit_name_is_valid` character rules (which
/// `UnitName::parse` does not check): at most 255 bytes of letters, digits
/// and `:-_.\\`, plus `@` in the instance part.
pub fn unit_chars_ok(name: &str) -> bool {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    let ok = |c: char| c.is_ascii_alphanumeric() || ":-_.\\".contains(c);
    name.len() <= 255 && prefix.chars().all(ok) && instance.chars().all(|c| ok(c) || c == '@')
}

fn exists_in(tree: &Tree, dirs: &[&str], name: &str) -> io::Result<bool> {
    for dir in dirs {
        match tree.symlink_metadata(format!("{dir}/{name}")) {
            Ok(_) => return Ok(true),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let (option, name) = match (&options.filename, &options.unit) {
        (Some(f), None) => ("filename", f),
        (None, Some(u)) => ("unit", u),
        (Some(_), Some(_)) => {
            return Err(OptionError::new("unit", "give either filename or unit, not both").into());
        }
        (None, None) => {
            return Err(
                OptionError::new("unit", "give the unit's name as unit (or filename)").into(),
            );
        }
    };
    if options.dropin.is_some() && option == "filename" {
        return Err(OptionError::new(
            "dropin",
            "a drop-in is for an existing unit: name it with unit, not filename",
        )
        .into());
    }
    let Some(unit) = UnitName::parse(name).filter(|_| unit_chars_ok(name)) else {
        return Err(OptionError::new(
            option,
            format!("{name:?} is not a valid unit name (like foo.service or getty@tty1.service)"),
        )
        .into());
    };
    let dir = unit_dir(options.unit_type, options.unit_path);
    let text = render(&options.config, &unit.suffix)?;

    match &options.dropin {
        None => {
            if let Some(section) = type_section(&unit.suffix)
                && !options.config.contains_key(section)
            {
                return Err(OptionError::new(
                    "config",
                    format!("the {name} unit needs a [{section}] section"),
                )
                .into());
            }
            tree.create_dir_all(dir)?;
            let path = format!("{dir}/{name}");
            if let Ok(m) = tree.symlink_metadata(&path)
                && !m.is_file()
            {
                anyhow::bail!("{path} exists and is not a regular file");
            }
            tree.write_str(&path, text)?;
        }
        Some(dropin) => {
            let stem_ok = dropin.strip_suffix(".conf").is_some_and(|s| {
                (1..=250).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            });
            if !stem_ok {
                return Err(OptionError::new(
                    "dropin",
                    format!("{dropin:?} is not a drop-in name (letters, digits, '_', '.', '-', ending in .conf)"),
                )
                .into());
            }
            if name.len() + 2 > 255 {
                return Err(OptionError::new(
                    "unit",
                    "the drop-in directory name would be longer than 255 bytes",
                )
                .into());
            }
            let search = search_path(options.unit_type);
            let known = exists_in(tree, search, name)?
                || (unit.is_instance() && exists_in(tree, search, &unit.template())?)
                || GENERATED_TYPES.contains(&unit.suffix.as_str());
            if !known {
                return Err(OptionError::new(
                    "unit",
                    format!(
                        "unit {name} does not exist in the tree (searched {})",
                        search.join(", ")
                    ),
                )
                .into());
            }
            let ddir = format!("{dir}/{name}.d");
            tree.create_dir_all(&ddir)?;
            tree.write_str(format!("{ddir}/{dropin}"), text)?;
        }
    }
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests;

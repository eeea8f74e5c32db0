//! `io.weldr.fstab`: replaces `/etc/fstab` with one tab-separated line per
//! file system, as osbuild's `org.osbuild.fstab` does. Spaces, tabs and
//! backslashes inside a field are written as fstab(5)'s octal escapes
//! (`\040`, `\011`, `\134`), which libmount and systemd decode.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub filesystems: Vec<Filesystem>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub partlabel: Option<String>,
    pub device: Option<String>,
    pub path: String,
    pub vfs_type: Option<String>,
    pub options: Option<String>,
    pub freq: Option<u64>,
    pub passno: Option<u64>,
}

pub const FSTAB: &str = "/etc/fstab";

/// fstab(5) escaping of one field.
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

fn line(i: usize, fs: &Filesystem) -> anyhow::Result<String> {
    let at = |field: &str| format!("filesystems[{i}].{field}");
    let sources = [
        ("uuid", fs.uuid.as_deref().map(|u| format!("UUID={u}"))),
        ("label", fs.label.as_deref().map(|l| format!("LABEL={l}"))),
        (
            "partlabel",
            fs.partlabel.as_deref().map(|l| format!("PARTLABEL={l}")),
        ),
        ("device", fs.device.clone()),
    ];
    let given: Vec<_> = sources.iter().filter(|(_, v)| v.is_some()).collect();
    let (source, spec) = match given.as_slice() {
        [(name, Some(spec))] => (*name, spec.clone()),
        [] => {
            return Err(OptionError::new(
                format!("filesystems[{i}]"),
                "needs one of uuid, label, partlabel or device",
            )
            .into());
        }
        more => {
            let names: Vec<&str> = more.iter().map(|(n, _)| *n).collect();
            return Err(OptionError::new(
                format!("filesystems[{i}]"),
                format!("has {}: give only one of them", names.join(" and ")),
            )
            .into());
        }
    };
    let vfs_type = fs.vfs_type.as_deref().unwrap_or("none");
    let options = fs.options.as_deref().unwrap_or("defaults");
    let fields = [
        (source, &spec),
        ("path", &fs.path),
        ("vfs_type", &vfs_type.to_string()),
        ("options", &options.to_string()),
    ];
    for (name, value) in fields {
        if value.is_empty() {
            return Err(OptionError::new(at(name), "is empty").into());
        }
        if value.contains(['\n', '\r', '\0']) {
            return Err(OptionError::new(at(name), "contains a line break or NUL").into());
        }
    }
    if !(fs.path.starts_with('/') || fs.path == "none" || fs.path == "swap") {
        return Err(OptionError::new(
            at("path"),
            format!(
                "{:?} is not an absolute mount point (or none/swap)",
                fs.path
            ),
        )
        .into());
    }
    Ok(format!(
        "{}\t{}\t{}\t{}\t{}\t{}\n",
        escape(&spec),
        escape(&fs.path),
        escape(vfs_type),
        escape(options),
        fs.freq.unwrap_or(0),
        fs.passno.unwrap_or(0)
    ))
}

/// The whole file.
pub fn render(filesystems: &[Filesystem]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, fs) in filesystems.iter().enumerate() {
        out.push_str(&line(i, fs)?);
    }
    Ok(out)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let text = render(&options.filesystems)?;
    tree.create_dir_all("/etc")?;
    tree.write_str(FSTAB, text)?;
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use osbuild_stage::serde_json;

    #[test]
    fn renders_like_osbuild() {
        let o: Options = serde_json::from_value(serde_json::json!({"filesystems": [
            {"uuid": "76a22bf4-f153-4541-b6c7-0332c0dfaeac", "vfs_type": "ext4", "path": "/", "options": "defaults", "freq": 1, "passno": 1},
            {"label": "ESP", "vfs_type": "vfat", "path": "/boot/efi", "options": "umask=0077,shortname=winnt", "passno": 2},
            {"partlabel": "swap", "path": "none", "vfs_type": "swap"},
            {"device": "/dev/disk/by-id/My Disk", "path": "/srv/my data", "vfs_type": "xfs"}
        ]}))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        run(&Tree::open(dir.path()).unwrap(), o).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap(),
            "UUID=76a22bf4-f153-4541-b6c7-0332c0dfaeac\t/\text4\tdefaults\t1\t1\n\
             LABEL=ESP\t/boot/efi\tvfat\tumask=0077,shortname=winnt\t0\t2\n\
             PARTLABEL=swap\tnone\tswap\tdefaults\t0\t0\n\
             /dev/disk/by-id/My\\040Disk\t/srv/my\\040data\txfs\tdefaults\t0\t0\n"
        );
    }

    #[test]
    fn bad_entries_name_the_option() {
        let fs = |v: serde_json::Value| -> Filesystem { serde_json::from_value(v).unwrap() };
        let cases = [
            (fs(serde_json::json!({"path": "/"})), "filesystems[0]"),
            (
                fs(serde_json::json!({"uuid": "x", "label": "y", "path": "/"})),
                "filesystems[0]",
            ),
            (
                fs(serde_json::json!({"uuid": "x", "path": "boot"})),
                "filesystems[0].path",
            ),
            (
                fs(serde_json::json!({"uuid": "x", "path": "/", "options": "a\nb"})),
                "filesystems[0].options",
            ),
        ];
        for (f, option) in cases {
            let err = render(&[f]).unwrap_err();
            assert_eq!(err.downcast_ref::<OptionError>().unwrap().option, option);
        }
    }
}

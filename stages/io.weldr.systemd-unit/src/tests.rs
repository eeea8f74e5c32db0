use super::*;
use osbuild_stage::serde_json::{self, json};

fn options(v: Value) -> Options {
    serde_json::from_value(v).unwrap()
}

fn tree() -> (tempfile::TempDir, Tree) {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(
        sys.join("ssh.service"),
        "[Service]\nExecStart=/usr/sbin/sshd -D\n",
    )
    .unwrap();
    std::fs::write(
        sys.join("getty@.service"),
        "[Service]\nExecStart=/sbin/agetty\n",
    )
    .unwrap();
    let tree = Tree::open(dir.path()).unwrap();
    (dir, tree)
}

fn read(dir: &tempfile::TempDir, path: &str) -> String {
    std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).unwrap()
}

fn option_of(err: anyhow::Error) -> String {
    err.downcast_ref::<OptionError>()
        .unwrap_or_else(|| panic!("not an option error: {err:#}"))
        .option
        .clone()
}

/// osbuild's own test case for org.osbuild.systemd.unit.create. The text
/// is osbuild's except for the order of keys inside a section: osbuild
/// keeps the JSON order, which a stage never sees (options reach it as a
/// sorted map), so keys are sorted, `Description`, `Documentation` and
/// `Type` first.
#[test]
fn creates_units_like_osbuild() {
    let (dir, tree) = tree();
    run(
        &tree,
        options(json!({
            "filename": "create-directory.service",
            "config": {
                "Unit": {
                    "Description": "Create directory",
                    "DefaultDependencies": false,
                    "ConditionPathExists": ["|!/etc/myfile"],
                    "Wants": ["basic.target", "sysinit.target"],
                    "After": ["sysinit.target", "default.target"]
                },
                "Service": {
                    "Type": "oneshot",
                    "RemainAfterExit": true,
                    "ExecStart": ["/usr/bin/mkdir -p /etc/mydir", "/usr/bin/touch /etc/myfile"],
                    "Environment": [{"key": "DEBUG", "value": "1"}, {"key": "TRACE", "value": "a \"b\""}]
                },
                "Install": {"WantedBy": ["local-fs.target"], "RequiredBy": ["multi-user.target"]}
            }
        })),
    )
    .unwrap();
    assert_eq!(
        read(&dir, "/usr/lib/systemd/system/create-directory.service"),
        "[Unit]\n\
         Description=Create directory\n\
         After=sysinit.target\n\
         After=default.target\n\
         ConditionPathExists=|!/etc/myfile\n\
         DefaultDependencies=False\n\
         Wants=basic.target\n\
         Wants=sysinit.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         Environment=\"DEBUG=1\"\n\
         Environment=\"TRACE=a \\\"b\\\"\"\n\
         ExecStart=/usr/bin/mkdir -p /etc/mydir\n\
         ExecStart=/usr/bin/touch /etc/myfile\n\
         RemainAfterExit=True\n\
         \n\
         [Install]\n\
         RequiredBy=multi-user.target\n\
         WantedBy=local-fs.target\n\
         \n"
    );
    // The text parses back to the same settings.
    let parsed = osbuild_stage::formats::unit::UnitFile::parse(&read(
        &dir,
        "/usr/lib/systemd/system/create-directory.service",
    ))
    .unwrap();
    assert_eq!(parsed.list("Install", "WantedBy"), vec!["local-fs.target"]);
    assert_eq!(parsed.value("Service", "Type"), Some("oneshot"));
}

#[test]
fn unit_type_and_path_pick_the_directory() {
    for (t, p, dir_expected) in [
        ("system", "usr", "/usr/lib/systemd/system"),
        ("system", "etc", "/etc/systemd/system"),
        ("global", "usr", "/usr/lib/systemd/user"),
        ("global", "etc", "/etc/systemd/user"),
    ] {
        let (dir, tree) = tree();
        run(
            &tree,
            options(json!({
                "unit": "data.mount", "unit-type": t, "unit-path": p,
                "config": {"Mount": {"What": "/dev/sda2", "Where": "/data"}, "Unit": {}}
            })),
        )
        .unwrap();
        assert_eq!(
            read(&dir, &format!("{dir_expected}/data.mount")),
            "[Unit]\n\n[Mount]\nWhat=/dev/sda2\nWhere=/data\n\n"
        );
    }
}

#[test]
fn drop_ins() {
    let (dir, tree) = tree();
    run(
        &tree,
        options(json!({
            "unit": "ssh.service", "dropin": "10-env.conf",
            "config": {"Service": {"Environment": "LANG=C"}}
        })),
    )
    .unwrap();
    assert_eq!(
        read(&dir, "/usr/lib/systemd/system/ssh.service.d/10-env.conf"),
        "[Service]\nEnvironment=LANG=C\n\n"
    );
    // An instance of a template that exists, in /etc.
    run(
        &tree,
        options(json!({
            "unit": "getty@tty1.service", "dropin": "autologin.conf", "unit-path": "etc",
            "config": {"Service": {"ExecStart": ["", "-/sbin/agetty --autologin root %I"]}}
        })),
    )
    .unwrap();
    assert_eq!(
        read(
            &dir,
            "/etc/systemd/system/getty@tty1.service.d/autologin.conf"
        ),
        "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root %I\n\n"
    );
    // Generated units (from fstab) need no unit file.
    run(
        &tree,
        options(json!({
            "unit": "boot-efi.mount", "dropin": "timeout.conf",
            "config": {"Mount": {"TimeoutSec": "30"}}
        })),
    )
    .unwrap();
}

#[test]
fn bad_input_names_the_option() {
    let (_dir, tree) = tree();
    let cases = [
        (
            json!({"unit": "nope.service", "dropin": "x.conf", "config": {"Service": {}}}),
            "unit",
        ),
        (
            json!({"unit": "bad name.service", "config": {"Service": {}}}),
            "unit",
        ),
        (
            json!({"filename": "x.service", "config": {"Unit": {}}}),
            "config",
        ),
        (
            json!({"filename": "x.service", "config": {"Service": {}, "Mount": {}}}),
            "config.Mount",
        ),
        (
            json!({"unit": "ssh.service", "dropin": "x.txt", "config": {"Service": {}}}),
            "dropin",
        ),
        (
            json!({"filename": "x.service", "config": {"Service": {"ExecStart": "/bin/a\nExecStart=/bin/b"}}}),
            "config.Service.ExecStart",
        ),
        (
            json!({"filename": "x.service", "config": {"Service": {"Environment": [{"key": "A B", "value": "1"}]}}}),
            "config.Service.Environment[0].key",
        ),
        (
            json!({"filename": "x.service", "config": {"Service": {"Nice": 1.5}}}),
            "config.Service.Nice",
        ),
        (
            json!({"filename": "x.service", "unit": "y.service", "config": {"Service": {}}}),
            "unit",
        ),
        (
            json!({"filename": "x.service", "dropin": "a.conf", "config": {"Service": {}}}),
            "dropin",
        ),
    ];
    for (v, option) in cases {
        let err = run(&tree, options(v.clone()))
            .err()
            .unwrap_or_else(|| panic!("accepted: {v}"));
        assert_eq!(option_of(err), option, "{v}");
    }
}

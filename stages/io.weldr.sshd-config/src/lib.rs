//! `io.weldr.sshd-config`: sets keywords in `/etc/ssh/sshd_config`, with
//! the options of osbuild's `org.osbuild.sshd.config`: the first line
//! setting a keyword (matched case-insensitively, in the global part of the
//! file, before any `Match` block) is replaced, keeping its spelling;
//! otherwise the keyword is added at the end of the global part. Booleans
//! are written `yes`/`no`.
//!
//! Any sshd_config(5) keyword is accepted; one sshd does not know is an
//! error (sshd would refuse to start, locking everyone out).

use std::collections::BTreeMap;

use osbuild_stage::serde_json::Value;
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub config: BTreeMap<String, Value>,
}

pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";

/// The keywords of OpenSSH's sshd_config (9.x and 10.x, with the common
/// distribution patches' GSSAPI/Kerberos ones, and deprecated keywords sshd
/// still accepts), lower case.
const KEYWORDS: &[&str] = &[
    "acceptenv",
    "addressfamily",
    "allowagentforwarding",
    "allowgroups",
    "allowstreamlocalforwarding",
    "allowtcpforwarding",
    "allowusers",
    "authenticationmethods",
    "authorizedkeyscommand",
    "authorizedkeyscommanduser",
    "authorizedkeysfile",
    "authorizedkeysfile2",
    "authorizedprincipalscommand",
    "authorizedprincipalscommanduser",
    "authorizedprincipalsfile",
    "banner",
    "casignaturealgorithms",
    "challengeresponseauthentication",
    "channeltimeout",
    "chrootdirectory",
    "ciphers",
    "clientalivecountmax",
    "clientaliveinterval",
    "compression",
    "denygroups",
    "denyusers",
    "disableforwarding",
    "dsaauthentication",
    "exposeauthinfo",
    "fingerprinthash",
    "forcecommand",
    "gatewayports",
    "gssapiauthentication",
    "gssapicleanupcredentials",
    "gssapienablek5users",
    "gssapikexalgorithms",
    "gssapikeyexchange",
    "gssapistorecredentialsonrekey",
    "gssapistrictacceptorcheck",
    "hostbasedacceptedalgorithms",
    "hostbasedacceptedkeytypes",
    "hostbasedauthentication",
    "hostbasedusesnamefrompacketonly",
    "hostcertificate",
    "hostdsakey",
    "hostkey",
    "hostkeyagent",
    "hostkeyalgorithms",
    "ignorerhosts",
    "ignoreuserknownhosts",
    "ipqos",
    "kbdinteractiveauthentication",
    "kerberosauthentication",
    "kerberosgetafstoken",
    "kerberosorlocalpasswd",
    "kerberosticketcleanup",
    "kerberosusekuserok",
    "keyregenerationinterval",
    "kexalgorithms",
    "listenaddress",
    "logingracetime",
    "loglevel",
    "logverbose",
    "macs",
    "maxauthtries",
    "maxsessions",
    "maxstartups",
    "modulifile",
    "pamauthenticationviakbdint",
    "passwordauthentication",
    "permitemptypasswords",
    "permitlisten",
    "permitopen",
    "permitrootlogin",
    "permittty",
    "permittunnel",
    "permituserenvironment",
    "permituserrc",
    "persourcemaxstartups",
    "persourcenetblocksize",
    "persourcepenalties",
    "persourcepenaltyexemptlist",
    "pidfile",
    "port",
    "printlastlog",
    "printmotd",
    "protocol",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyauthentication",
    "pubkeyauthoptions",
    "refuseconnection",
    "rekeylimit",
    "requiredrsasize",
    "revokedkeys",
    "rhostsrsaauthentication",
    "rsaauthentication",
    "securitykeyprovider",
    "serverkeybits",
    "setenv",
    "showpatchlevel",
    "skeyauthentication",
    "sshdauthpath",
    "sshdsessionpath",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "strictmodes",
    "subsystem",
    "syslogfacility",
    "tcpkeepalive",
    "trustedusercakeys",
    "unusedconnectiontimeout",
    "usedns",
    "uselogin",
    "usepam",
    "useprivilegeseparation",
    "versionaddendum",
    "x11displayoffset",
    "x11forwarding",
    "x11uselocalhost",
    "xauthlocation",
];

/// The keyword a line sets, if it is not a comment or blank: sshd splits a
/// line at the first whitespace or `=`.
fn keyword(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(t.len());
    Some(&t[..end])
}

/// The text a value is written as.
fn render_value(option: &str, value: &Value) -> anyhow::Result<String> {
    let text = match value {
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::String(s) => s.clone(),
        other => {
            return Err(OptionError::new(
                option,
                format!("{other} is not a string, integer or boolean"),
            )
            .into());
        }
    };
    if text.trim().is_empty() {
        return Err(OptionError::new(option, "is empty").into());
    }
    if text.contains(['\n', '\r', '\0']) {
        return Err(OptionError::new(option, "contains a line break or NUL").into());
    }
    Ok(text)
}

/// The changes the options ask for: (lower-case keyword, keyword as given, value).
fn changes(config: &BTreeMap<String, Value>) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for (key, value) in config {
        let option = format!("config.{key}");
        let lower = key.to_ascii_lowercase();
        if lower == "match" || lower == "include" {
            return Err(OptionError::new(
                option,
                "Match and Include blocks cannot be set as keywords; write a file with io.weldr.files",
            )
            .into());
        }
        if !KEYWORDS.contains(&lower.as_str()) {
            return Err(OptionError::new(
                option,
                format!("{key:?} is not an sshd_config keyword (see sshd_config(5))"),
            )
            .into());
        }
        if let Some((_, other, _)) = out.iter().find(|(l, _, _)| *l == lower) {
            return Err(OptionError::new(
                option,
                format!("sets the same keyword as config.{other} (keywords are case-insensitive)"),
            )
            .into());
        }
        let value = render_value(&option, value)?;
        if lower == "permitrootlogin"
            && ![
                "yes",
                "no",
                "prohibit-password",
                "without-password",
                "forced-commands-only",
            ]
            .contains(&value.as_str())
        {
            return Err(OptionError::new(
                option,
                format!("{value:?} is not yes, no, prohibit-password or forced-commands-only"),
            )
            .into());
        }
        out.push((lower, key.clone(), value));
    }
    Ok(out)
}

/// The edited file.
pub fn edit(text: &str, config: &BTreeMap<String, Value>) -> anyhow::Result<String> {
    let mut pending = changes(config)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let first_match = lines
        .iter()
        .position(|l| keyword(l).is_some_and(|k| k.eq_ignore_ascii_case("match")))
        .unwrap_or(lines.len());
    for line in &mut lines[..first_match] {
        let Some(key) = keyword(line) else { continue };
        let lower = key.to_ascii_lowercase();
        if let Some(i) = pending.iter().position(|(l, _, _)| *l == lower) {
            let (_, _, value) = pending.remove(i);
            let indent = &line[..line.len() - line.trim_start().len()];
            *line = format!("{indent}{key} {value}");
        }
    }
    let added: Vec<String> = pending
        .into_iter()
        .map(|(_, key, value)| format!("{key} {value}"))
        .collect();
    lines.splice(first_match..first_match, added);
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// Included files (`Include` before any `Match`) that set one of the
/// keywords: sshd takes the first value it reads, so theirs would win.
fn shadowing_includes(
    tree: &Tree,
    text: &str,
    config: &BTreeMap<String, Value>,
) -> anyhow::Result<Vec<String>> {
    let wanted: Vec<String> = config.keys().map(|k| k.to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(key) = keyword(line) else { continue };
        if key.eq_ignore_ascii_case("match") {
            break;
        }
        if key.eq_ignore_ascii_case("include") {
            for pattern in line.trim_start()[key.len()..].split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_string()
                } else {
                    format!("/etc/ssh/{pattern}")
                };
                // The usual form: a directory and `*` + suffix.
                let Some((dir, glob)) = pattern.rsplit_once('/') else {
                    continue;
                };
                let (prefix, suffix) = glob.split_once('*').unwrap_or((glob, ""));
                if !tree.exists(dir)? || !tree.metadata(dir)?.is_dir() {
                    continue;
                }
                for name in tree.read_dir(dir)? {
                    let matches = if glob.contains('*') {
                        name.starts_with(prefix) && name.ends_with(suffix)
                    } else {
                        name == glob
                    };
                    if !matches {
                        continue;
                    }
                    let path = format!("{dir}/{name}");
                    let Ok(Some(inc)) = tree.read_optional(&path) else {
                        continue;
                    };
                    for l in inc.lines() {
                        if let Some(k) = keyword(l)
                            && wanted.contains(&k.to_ascii_lowercase())
                        {
                            out.push(format!("{path} sets {k}"));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let Some(text) = tree.read_optional(SSHD_CONFIG)? else {
        anyhow::bail!("{SSHD_CONFIG} does not exist in the tree (is openssh-server installed?)");
    };
    let new = edit(&text, &options.config)?;
    for warning in shadowing_includes(tree, &text, &options.config)? {
        eprintln!(
            "warning: {warning}, which is included before the main file's settings and takes precedence"
        );
    }
    tree.write_str(SSHD_CONFIG, new)?;
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use osbuild_stage::serde_json::{self, json};

    fn config(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    const DEBIAN: &str = "Include /etc/ssh/sshd_config.d/*.conf\n\n#PermitRootLogin prohibit-password\n#PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nAcceptEnv LANG LC_*\n\n# Example\n#Match User anoncvs\n#\tX11Forwarding no\n";

    #[test]
    fn replaces_first_or_appends() {
        let out = edit(
            DEBIAN,
            &config(json!({
                "PasswordAuthentication": false,
                "x11forwarding": false,
                "ClientAliveInterval": 30,
                "PermitRootLogin": "prohibit-password",
                "AcceptEnv": "LANG"
            })),
        )
        .unwrap();
        assert_eq!(
            out,
            "Include /etc/ssh/sshd_config.d/*.conf\n\n#PermitRootLogin prohibit-password\n#PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding no\nAcceptEnv LANG\n\n# Example\n#Match User anoncvs\n#\tX11Forwarding no\nClientAliveInterval 30\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
        );
    }

    #[test]
    fn stays_out_of_match_blocks() {
        let text = "PasswordAuthentication yes\nMatch User git\n  PasswordAuthentication no\n  X11Forwarding no\n";
        let out = edit(
            text,
            &config(json!({"PasswordAuthentication": false, "X11Forwarding": true})),
        )
        .unwrap();
        assert_eq!(
            out,
            "PasswordAuthentication no\nX11Forwarding yes\nMatch User git\n  PasswordAuthentication no\n  X11Forwarding no\n"
        );
        // `Key=value` lines are keywords too.
        assert_eq!(
            edit("Port=22\n", &config(json!({"Port": 2222}))).unwrap(),
            "Port 2222\n"
        );
    }

    #[test]
    fn bad_keys_and_values() {
        let option = |v: Value| {
            edit(DEBIAN, &config(v))
                .unwrap_err()
                .downcast_ref::<OptionError>()
                .unwrap()
                .option
                .clone()
        };
        assert_eq!(option(json!({"PasswordAuth": true})), "config.PasswordAuth");
        assert_eq!(option(json!({"Match": "User x"})), "config.Match");
        assert_eq!(
            option(json!({"Banner": "a\nPermitRootLogin yes"})),
            "config.Banner"
        );
        assert_eq!(option(json!({"Port": [22]})), "config.Port");
        assert_eq!(
            option(json!({"PermitRootLogin": "maybe"})),
            "config.PermitRootLogin"
        );
        assert_eq!(option(json!({"port": 1, "Port": 2})), "config.port");
    }

    #[test]
    fn warns_about_included_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/ssh/sshd_config.d")).unwrap();
        std::fs::write(dir.path().join("etc/ssh/sshd_config"), DEBIAN).unwrap();
        std::fs::write(
            dir.path().join("etc/ssh/sshd_config.d/50-cloud.conf"),
            "PasswordAuthentication yes\n",
        )
        .unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let w = shadowing_includes(
            &tree,
            DEBIAN,
            &config(json!({"PasswordAuthentication": false})),
        )
        .unwrap();
        assert_eq!(
            w,
            vec!["/etc/ssh/sshd_config.d/50-cloud.conf sets PasswordAuthentication"]
        );
        run(
            &tree,
            Options {
                config: config(json!({"PasswordAuthentication": false})),
            },
        )
        .unwrap();
        assert!(
            std::fs::read_to_string(dir.path().join("etc/ssh/sshd_config"))
                .unwrap()
                .ends_with("PasswordAuthentication no\n")
        );
    }
}

//! `io.weldr.chrony`: time sources and `leapsectz` in chrony's
//! configuration, with the options of osbuild's `org.osbuild.chrony`.
//!
//! Like osbuild, every `server`, `pool` and `peer` line is removed and a
//! `server` line is added per time server; `leapsectz` replaces the existing
//! directive (or, if empty, removes it). Unlike osbuild, which puts the new
//! lines at the very top of the file, they go where the old ones were, so
//! the file keeps its layout; chronyd reads the same configuration either way.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    pub timeservers: Option<Vec<String>>,
    #[serde(default)]
    pub servers: Option<Vec<Server>>,
    #[serde(default)]
    pub leapsectz: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub hostname: String,
    #[serde(default)]
    pub minpoll: Option<i32>,
    #[serde(default)]
    pub maxpoll: Option<i32>,
    #[serde(default)]
    pub iburst: Option<bool>,
    #[serde(default)]
    pub prefer: Option<bool>,
}

/// Debian keeps the file in `/etc/chrony/`, Fedora and RHEL in `/etc/`.
pub const CONF_PATHS: &[&str] = &["/etc/chrony/chrony.conf", "/etc/chrony.conf"];

fn directive(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with(['#', '!', ';', '%']) {
        return None;
    }
    let word = t.split_whitespace().next()?;
    // A bare word with nothing after it is still a directive (e.g. rtcsync).
    Some(word)
}

fn is_source(line: &str) -> bool {
    matches!(directive(line), Some(w) if ["server", "pool", "peer"].contains(&w.to_ascii_lowercase().as_str()))
}

fn is_leapsectz(line: &str) -> bool {
    matches!(directive(line), Some(w) if w.eq_ignore_ascii_case("leapsectz"))
}

fn check_host(option: &str, host: &str) -> anyhow::Result<()> {
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:%[]".contains(c))
    {
        return Err(
            OptionError::new(option, format!("{host:?} is not a host name or IP address")).into(),
        );
    }
    Ok(())
}

/// The `server` lines the options ask for.
pub fn server_lines(options: &Options) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    match (&options.timeservers, &options.servers) {
        (Some(_), Some(_)) => {
            return Err(OptionError::new(
                "servers",
                "give either timeservers or servers, not both",
            )
            .into());
        }
        (None, None) => {
            return Err(OptionError::new("timeservers", "give timeservers or servers").into());
        }
        (Some(hosts), None) => {
            for (i, host) in hosts.iter().enumerate() {
                check_host(&format!("timeservers[{i}]"), host)?;
                lines.push(format!("server {host} iburst"));
            }
        }
        (None, Some(servers)) => {
            for (i, s) in servers.iter().enumerate() {
                check_host(&format!("servers[{i}].hostname"), &s.hostname)?;
                let mut line = format!("server {}", s.hostname);
                if s.prefer.unwrap_or(false) {
                    line.push_str(" prefer");
                }
                if s.iburst.unwrap_or(true) {
                    line.push_str(" iburst");
                }
                for (name, v) in [("minpoll", s.minpoll), ("maxpoll", s.maxpoll)] {
                    if let Some(v) = v {
                        if !(-6..=24).contains(&v) {
                            return Err(OptionError::new(
                                format!("servers[{i}].{name}"),
                                format!("{v} is outside -6..24"),
                            )
                            .into());
                        }
                        line.push_str(&format!(" {name} {v}"));
                    }
                }
                if let (Some(min), Some(max)) = (s.minpoll, s.maxpoll)
                    && min > max
                {
                    return Err(OptionError::new(
                        format!("servers[{i}].minpoll"),
                        format!("minpoll {min} is greater than maxpoll {max}"),
                    )
                    .into());
                }
                lines.push(line);
            }
        }
    }
    Ok(lines)
}

/// The new configuration text.
pub fn edit(text: &str, options: &Options) -> anyhow::Result<String> {
    let servers = server_lines(options)?;
    if let Some(tz) = options.leapsectz.as_deref()
        && !tz.is_empty()
        && (tz.starts_with('/')
            || tz.split('/').any(|p| p == ".." || p == ".")
            || !tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-+/".contains(c)))
    {
        return Err(OptionError::new(
            "leapsectz",
            format!("{tz:?} is not a time zone name like right/UTC"),
        )
        .into());
    }
    let ends_with_newline = text.is_empty() || text.ends_with('\n');
    let mut out: Vec<String> = Vec::new();
    let mut servers_placed = false;
    let mut leap_placed = false;
    for line in text.lines() {
        if is_source(line) {
            if !servers_placed {
                out.extend(servers.iter().cloned());
                servers_placed = true;
            }
            continue;
        }
        if let Some(tz) = &options.leapsectz
            && is_leapsectz(line)
        {
            if !leap_placed && !tz.is_empty() {
                out.push(format!("leapsectz {tz}"));
            }
            leap_placed = true;
            continue;
        }
        out.push(line.to_string());
    }
    let mut head: Vec<String> = Vec::new();
    if let Some(tz) = &options.leapsectz
        && !leap_placed
        && !tz.is_empty()
    {
        head.push(format!("leapsectz {tz}"));
    }
    if !servers_placed {
        head.extend(servers);
    }
    head.extend(out);
    let mut result = head.join("\n");
    if ends_with_newline && !result.is_empty() {
        result.push('\n');
    }
    Ok(result)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let mut found = None;
    for path in CONF_PATHS {
        if let Some(text) = tree.read_optional(path)? {
            found = Some((*path, text));
            break;
        }
    }
    let Some((path, text)) = found else {
        anyhow::bail!(
            "chrony is not installed in the tree: neither {} exists",
            CONF_PATHS.join(" nor ")
        );
    };
    let new = edit(&text, &options)?;
    tree.write_str(path, new)?;
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "# Welcome\nconfdir /etc/chrony/conf.d\n\n# Use Debian vendor zone.\npool 2.debian.pool.ntp.org iburst\n\nsourcedir /run/chrony-dhcp\nrtcsync\n\n# leap\nleapsectz right/UTC\n";

    fn ts(hosts: &[&str]) -> Options {
        Options {
            timeservers: Some(hosts.iter().map(|h| h.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn timeservers_replace_sources_in_place() {
        let out = edit(DEBIAN, &ts(&["0.example.com", "10.0.0.1"])).unwrap();
        assert_eq!(
            out,
            "# Welcome\nconfdir /etc/chrony/conf.d\n\n# Use Debian vendor zone.\nserver 0.example.com iburst\nserver 10.0.0.1 iburst\n\nsourcedir /run/chrony-dhcp\nrtcsync\n\n# leap\nleapsectz right/UTC\n"
        );
    }

    #[test]
    fn servers_and_leapsectz() {
        let o = Options {
            servers: Some(vec![
                Server {
                    hostname: "a.example".into(),
                    minpoll: Some(0),
                    maxpoll: Some(4),
                    prefer: Some(true),
                    ..Default::default()
                },
                Server {
                    hostname: "b.example".into(),
                    iburst: Some(false),
                    ..Default::default()
                },
            ]),
            leapsectz: Some("Etc/UTC".into()),
            ..Default::default()
        };
        let out = edit(
            "pool x iburst\npeer y\nserver z\nleapsectz right/UTC\nleapsectz other\n",
            &o,
        )
        .unwrap();
        assert_eq!(
            out,
            "server a.example prefer iburst minpoll 0 maxpoll 4\nserver b.example\nleapsectz Etc/UTC\n"
        );
        // Empty leapsectz removes it; no sources at all: servers go on top.
        let o = Options {
            leapsectz: Some(String::new()),
            ..ts(&["t.example"])
        };
        assert_eq!(
            edit("driftfile /x\nleapsectz right/UTC\n", &o).unwrap(),
            "server t.example iburst\ndriftfile /x\n"
        );
        // A missing leapsectz is added on top.
        let o = Options {
            leapsectz: Some("right/UTC".into()),
            ..ts(&["t.example"])
        };
        assert_eq!(
            edit("driftfile /x", &o).unwrap(),
            "leapsectz right/UTC\nserver t.example iburst\ndriftfile /x"
        );
    }

    #[test]
    fn bad_options() {
        let option = |o: Options| {
            edit(DEBIAN, &o)
                .unwrap_err()
                .downcast_ref::<OptionError>()
                .unwrap()
                .option
                .clone()
        };
        assert_eq!(option(Options::default()), "timeservers");
        assert_eq!(option(ts(&["ok", "bad host"])), "timeservers[1]");
        assert_eq!(
            option(Options {
                servers: Some(vec![Server {
                    hostname: "x".into(),
                    minpoll: Some(6),
                    maxpoll: Some(4),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            "servers[0].minpoll"
        );
        assert_eq!(
            option(Options {
                leapsectz: Some("../../etc/passwd".into()),
                ..ts(&["x"])
            }),
            "leapsectz"
        );
    }

    #[test]
    fn missing_config_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(&Tree::open(dir.path()).unwrap(), ts(&["x"])).unwrap_err();
        assert!(err.to_string().contains("chrony is not installed"), "{err}");
    }
}

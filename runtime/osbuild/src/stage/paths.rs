//! Glob patterns over tree paths: the language of write sets (a stage's
//! `"tree": {"write": [...]}`) and of the policy's `writes`.
//!
//! A pattern is an absolute path whose components may hold `*` (any run
//! of characters but `/`) and `?` (one character), and whose whole
//! components may be `**` (zero or more components: `/etc/systemd/**` is
//! `/etc/systemd` and everything below it). A pattern starting with `!`
//! excludes; an exclusion wins over any inclusion (`["/etc/**",
//! "!/etc/shadow"]`).
//!
//! Written here rather than with `globset`: besides matching, a write set
//! must answer "may anything below this directory match?" (a stage may
//! create the directories on the way to a path it may write) and "does
//! this pattern cover that one?" (a policy bounds stages' declarations),
//! which a compiled glob cannot.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most bytes, and `*`s, one pattern may have.
const MAX_PATTERN_BYTES: usize = 1024;
const MAX_STARS: usize = 16;

/// One component of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `**`: zero or more components.
    Any,
    /// A component, with `*` and `?` as wildcards.
    Glob(String),
    /// A component taken as it is (from an option's value: a `*` in a
    /// file name is a `*`).
    Literal(String),
}

impl Part {
    fn is_literal(&self) -> bool {
        match self {
            Part::Glob(g) => !g.contains(['*', '?']),
            Part::Literal(_) => true,
            Part::Any => false,
        }
    }

    /// The text a component matches: the glob, or the literal name.
    fn text(&self) -> &str {
        match self {
            Part::Glob(g) | Part::Literal(g) => g,
            Part::Any => "**",
        }
    }

    /// Whether the single component `name` matches.
    fn matches(&self, name: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Glob(g) => glob_matches(g.as_bytes(), name.as_bytes()),
            Part::Literal(l) => l == name,
        }
    }
}

/// An inclusion or exclusion pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    exclude: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let fail = |reason: &str| PatternError {
            pattern: text.to_string(),
            reason: reason.to_string(),
        };
        let (exclude, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let Some(rest) = body.strip_prefix('/') else {
            return Err(fail(
                "a tree path pattern is absolute: it starts with / (or !/ to exclude)",
            ));
        };
        // Matching backtracks on wildcards: bound what one pattern costs.
        if text.len() > MAX_PATTERN_BYTES || text.matches('*').count() > MAX_STARS {
            return Err(fail(&format!(
                "is too long for a path pattern (at most {MAX_PATTERN_BYTES} bytes and {MAX_STARS} *)"
            )));
        }
        if text.contains(['\0', '[', ']', '{', '}', '\\']) {
            return Err(fail(
                "only * ? and ** are wildcards here; [ ] { } and \\ are not allowed",
            ));
        }
        let mut parts = Vec::new();
        if !rest.is_empty() {
            for c in rest.split('/') {
                match c {
                    "" => return Err(fail("has an empty component (// or a trailing /)")),
                    "." | ".." => return Err(fail("has a . or .. component")),
                    // `**/**` is `**`.
                    "**" if parts.last() == Some(&Part::Any) => {}
                    "**" => parts.push(Part::Any),
                    c if c.contains("**") => {
                        return Err(fail("** must be a whole component (/**/ or a final /**)"));
                    }
                    c => parts.push(Part::Glob(c.to_string())),
                }
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            exclude,
            parts,
        })
    }

    /// The pattern that is exactly the path `path` (absolute; `.` and empty
    /// components dropped), and with `below` everything under it too;
    /// wildcard characters in it are themselves.
    pub fn literal(path: &str, below: bool) -> Pattern {
        let names: Vec<&str> = components(path).into_iter().filter(|c| *c != ".").collect();
        let mut parts: Vec<Part> = names.iter().map(|c| Part::Literal(c.to_string())).collect();
        let mut text = format!("/{}", names.join("/"));
        if below {
            parts.push(Part::Any);
            text = if text == "/" {
                "/**".to_string()
            } else {
                format!("{text}/**")
            };
        }
        Pattern {
            text,
            exclude: false,
            parts,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_exclusion(&self) -> bool {
        self.exclude
    }

    /// Whether `path` (absolute, normalised) matches, ignoring `!`.
    pub fn matches(&self, path: &str) -> bool {
        match_parts(&self.parts, &components(path))
    }

    /// Whether some path strictly below the directory `dir` matches.
    fn matches_below(&self, dir: &str) -> bool {
        below(&self.parts, &components(dir))
    }

    /// Whether every path `other` matches, this one matches too (both
    /// read as inclusions). Sound, not complete: `false` may mean "could
    /// not tell", which callers treat as "not covered".
    pub fn covers(&self, other: &Pattern) -> bool {
        covers(&self.parts, &other.parts)
    }

    /// Whether some path matches both (both read as inclusions). May
    /// answer `true` for two wildcard components that share nothing.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        overlaps(&self.parts, &other.parts)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// `*` and `?` within one component. Iterative, backing up to the last
/// `*` only: time bounded by the product of the lengths, whatever the
/// pattern (a stage's metadata and a policy are parsed from untrusted and
/// trusted text alike).
fn glob_matches(glob: &[u8], name: &[u8]) -> bool {
    let (mut g, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, n));
                g += 1;
            }
            Some(c) if *c == b'?' || *c == name[n] => {
                g += 1;
                n += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    g = sg + 1;
                    n = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|c| *c == b'*')
}

/// Which positions in `parts` can be reached having matched all of
/// `comps` (`**` may stay on a component or step past it): a set of
/// states walked once per component, so matching costs the product of
/// the two lengths at most.
fn reachable(parts: &[Part], comps: &[&str]) -> Vec<bool> {
    let close = |states: &mut Vec<bool>| {
        for i in 0..parts.len() {
            if states[i] && parts[i] == Part::Any {
                states[i + 1] = true;
            }
        }
    };
    let mut states = vec![false; parts.len() + 1];
    states[0] = true;
    close(&mut states);
    for c in comps {
        let mut next = vec![false; parts.len() + 1];
        for i in 0..parts.len() {
            if !states[i] {
                continue;
            }
            match &parts[i] {
                Part::Any => next[i] = true,
                p if p.matches(c) => next[i + 1] = true,
                _ => {}
            }
        }
        close(&mut next);
        states = next;
    }
    states
}

fn match_parts(parts: &[Part], comps: &[&str]) -> bool {
    reachable(parts, comps)[parts.len()]
}

/// Whether `comps` can be matched by a prefix of `parts` that leaves
/// something to match a further component.
fn below(parts: &[Part], comps: &[&str]) -> bool {
    let states = reachable(parts, comps);
    states[..parts.len()].iter().any(|s| *s)
}

fn covers(big: &[Part], small: &[Part]) -> bool {
    match (big.first(), small.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(Part::Any), _) => {
            covers(&big[1..], small) || (!small.is_empty() && covers(big, &small[1..]))
        }
        (Some(_), None) | (Some(_), Some(Part::Any)) => false,
        (Some(b), Some(s)) => {
            let component = match b {
                Part::Literal(l) => s.is_literal() && s.text() == l,
                // A glob covers its own text, `*` any single component,
                // and any literal name it matches.
                _ => {
                    (matches!(s, Part::Glob(_)) && b.text() == s.text())
                        || b.text() == "*"
                        || (s.is_literal() && b.matches(s.text()))
                }
            };
            component && covers(&big[1..], &small[1..])
        }
    }
}

fn overlaps(a: &[Part], b: &[Part]) -> bool {
    match (a.first(), b.first()) {
        (None, None) => true,
        (None, Some(_)) => b.iter().all(|p| *p == Part::Any),
        (Some(_), None) => a.iter().all(|p| *p == Part::Any),
        (Some(Part::Any), _) => overlaps(&a[1..], b) || overlaps(a, &b[1..]),
        (_, Some(Part::Any)) => overlaps(a, &b[1..]) || overlaps(&a[1..], b),
        (Some(x), Some(y)) => {
            let component = match (x.is_literal(), y.is_literal()) {
                (true, _) => y.matches(x.text()),
                (_, true) => x.matches(y.text()),
                // Two wildcards: assume they can meet (the safe answer
                // where overlap means refusal).
                (false, false) => true,
            };
            component && overlaps(&a[1..], &b[1..])
        }
    }
}

/// A set of tree paths: those some inclusion matches and no exclusion does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathSet {
    patterns: Vec<Pattern>,
}

impl PathSet {
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<PathSet, PatternError> {
        Ok(PathSet {
            patterns: patterns
                .iter()
                .map(|p| Pattern::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Adds a pattern (an option's path: see [`Pattern::literal`]).
    pub fn push(&mut self, pattern: Pattern) {
        self.patterns.push(pattern);
    }

    /// Every path (`/**`).
    pub fn everything() -> PathSet {
        PathSet::parse(&["/**"]).expect("a valid pattern")
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn inclusions(&self) -> impl Iterator<Item = &Pattern> {
        self.patterns.iter().filter(|p| !p.exclude)
    }

    pub fn exclusions(&self) -> impl Iterator<Item = &Pattern> {
        self.patterns.iter().filter(|p| p.exclude)
    }

    pub fn is_empty(&self) -> bool {
        self.inclusions().next().is_none()
    }

    /// Whether the set holds `path` (absolute, normalised).
    pub fn contains(&self, path: &str) -> bool {
        self.inclusions().any(|p| p.matches(path)) && !self.exclusions().any(|p| p.matches(path))
    }

    /// Whether the directory `dir` is on the way to a path in the set:
    /// some inclusion may match below it, and no exclusion takes `dir`
    /// itself.
    pub fn leads_to(&self, dir: &str) -> bool {
        self.inclusions().any(|p| p.matches_below(dir))
            && !self.exclusions().any(|p| p.matches(dir))
    }

    /// The patterns as written, joined for a message.
    pub fn describe(&self) -> String {
        let quoted: Vec<String> = self
            .patterns
            .iter()
            .map(|p| format!("{:?}", p.text))
            .collect();
        format!("[{}]", quoted.join(", "))
    }
}

impl fmt::Display for PathSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.patterns.iter().map(|p| p.text.as_str()).collect();
        f.write_str(&texts.join(" "))
    }
}

impl Serialize for PathSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.patterns.iter().map(|p| &p.text))
    }
}

impl<'de> Deserialize<'de> for PathSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PathSet, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        PathSet::parse(&texts).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[&str]) -> PathSet {
        PathSet::parse(p).unwrap()
    }

    #[test]
    fn patterns_match_whole_components() {
        let s = set(&[
            "/etc/hostname",
            "/etc/systemd/**",
            "/home/*/.ssh/**",
            "/etc/*.conf",
        ]);
        for yes in [
            "/etc/hostname",
            "/etc/systemd",
            "/etc/systemd/system/a.service",
            "/home/alice/.ssh",
            "/home/alice/.ssh/authorized_keys",
            "/etc/resolv.conf",
        ] {
            assert!(s.contains(yes), "{yes}");
        }
        for no in [
            "/etc/hostname2",
            "/etc",
            "/etc/systemdx",
            "/home/alice/.sshx",
            "/home/a/b/.ssh/k",
            "/etc/x/y.conf",
            "/",
        ] {
            assert!(!s.contains(no), "{no}");
        }
        assert!(set(&["/**"]).contains("/"));
        assert!(set(&["/a/**/z"]).contains("/a/z"));
        assert!(set(&["/a/**/z"]).contains("/a/b/c/z"));
        assert!(set(&["/f?o"]).contains("/foo") && !set(&["/f?o"]).contains("/fo"));
    }

    #[test]
    fn an_exclusion_wins() {
        let s = set(&["/**", "!/usr/bin/**", "!/root/**"]);
        assert!(s.contains("/etc/motd"));
        assert!(!s.contains("/usr/bin"));
        assert!(!s.contains("/usr/bin/sudo"));
        assert!(!s.contains("/root/.ssh/authorized_keys"));
        assert!(s.contains("/usr/lib/x"));
        assert!(set(&["!/x"]).is_empty());
    }

    #[test]
    fn directories_on_the_way_lead_to_the_set() {
        let s = set(&["/etc/systemd/system/**", "/home/*/.ssh/**", "/etc/hostname"]);
        for dir in ["/", "/etc", "/etc/systemd", "/home", "/home/bob"] {
            assert!(s.leads_to(dir), "{dir}");
        }
        for dir in ["/usr", "/etc/hostname", "/home/bob/.config", "/etc/ssh"] {
            assert!(!s.leads_to(dir), "{dir}");
        }
        assert!(!set(&["/etc/**", "!/etc/secret/**"]).leads_to("/etc/secret"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (bad, reason) in [
            ("etc/motd", "absolute"),
            ("/etc//motd", "empty component"),
            ("/etc/", "empty component"),
            ("/etc/../shadow", ".. component"),
            ("/etc/a**", "whole component"),
            ("/etc/[ab]", "not allowed"),
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.to_string().contains(reason), "{bad}: {e}");
        }
    }

    #[test]
    fn coverage_is_sound() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("/**").covers(&p("/etc/motd")));
        assert!(p("/etc/**").covers(&p("/etc/systemd/**")));
        assert!(p("/etc/*").covers(&p("/etc/motd")));
        assert!(p("/etc/*.conf").covers(&p("/etc/a.conf")));
        assert!(p("/home/*/.ssh/**").covers(&p("/home/bob/.ssh/keys")));
        assert!(!p("/etc/motd").covers(&p("/etc/**")));
        assert!(!p("/etc/*").covers(&p("/etc/**")));
        assert!(!p("/etc/**").covers(&p("/**")));
        assert!(!p("/etc/a.conf").covers(&p("/etc/*.conf")));
    }

    /// Review finding: matching backtracked without bound on wildcards.
    #[test]
    fn matching_costs_the_product_of_the_lengths_not_more() {
        let mut star_pattern = String::from("/");
        for _ in 0..15 {
            star_pattern.push_str("*a");
        }
        star_pattern.push('b');
        let p = Pattern::parse(&star_pattern).unwrap();
        // Backtracking without bound would not finish these (16 stars on
        // a 250-byte name; 8 `**` over 2000 components).
        let name = format!("/{}", "a".repeat(250));
        assert!(!p.matches(&name));
        let deep = Pattern::parse("/**/**/**/**/**/**/**/x/**/y").unwrap();
        let path = "/a".repeat(2000);
        assert!(!deep.matches(&path));
        assert!(deep.matches_below(&path));
        assert!(deep.matches(&format!("{path}/x/y")));
        assert!(!Pattern::parse("/b/**").unwrap().matches_below("/a"));
        assert!(Pattern::parse("/*a*b").unwrap().matches("/xxaxxb"));
        assert!(Pattern::parse("/a*").unwrap().matches("/a"));
        assert!(!Pattern::parse("/a*c").unwrap().matches("/abcd"));
    }

    #[test]
    fn a_literal_takes_wildcards_as_names() {
        let p = Pattern::literal("/srv/./a*b", false);
        assert_eq!(p.as_str(), "/srv/a*b");
        assert!(p.matches("/srv/a*b"));
        assert!(!p.matches("/srv/axb"));
        let below = Pattern::literal("/srv/www", true);
        assert_eq!(below.as_str(), "/srv/www/**");
        assert!(below.matches("/srv/www") && below.matches("/srv/www/x/y"));
        assert!(Pattern::parse("/srv/**").unwrap().covers(&p));
        assert!(!Pattern::parse("/srv/a").unwrap().covers(&p));
        assert!(!p.covers(&Pattern::parse("/srv/a?b").unwrap()));
        assert!(
            Pattern::parse("/srv/a?b")
                .unwrap()
                .overlaps(&Pattern::literal("/srv/axb", false))
        );
    }

    #[test]
    fn overlap_finds_shared_paths() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("/**").overlaps(&p("/usr/bin/**")));
        assert!(p("/usr/**").overlaps(&p("/usr/bin/sudo")));
        assert!(p("/usr/*/sudo").overlaps(&p("/usr/bin/**")));
        assert!(!p("/etc/**").overlaps(&p("/usr/bin/**")));
        assert!(!p("/etc/motd").overlaps(&p("/etc/passwd")));
        assert!(p("/etc").overlaps(&p("/etc/**")));
    }
}

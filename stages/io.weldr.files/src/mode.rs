//! chmod(1) modes: octal (`0755`) and symbolic (`u+x,go-w`, `a=rX`,
//! `g+s`, `+t`), applied as GNU chmod applies them.

/// The umask osbuild runs stages with; chmod masks symbolic clauses
/// without a `who` (`+x`) by it.
const UMASK: u32 = 0o022;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Octal digits; with 5 digits (`00755`) a directory's setuid/setgid bits are cleared too.
    Octal {
        bits: u32,
        digits: usize,
    },
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Bits the clause may touch (from `ugoa`), or `None` for no `who`.
    who: Option<u32>,
    actions: Vec<(char, Perms)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Perms {
    r: bool,
    w: bool,
    x: bool,
    big_x: bool,
    s: bool,
    t: bool,
}

pub fn parse_mode(spec: &str) -> Result<Mode, String> {
    if spec.is_empty() {
        return Err("is empty".into());
    }
    if spec.chars().all(|c| c.is_ascii_digit()) {
        if spec.len() > 5 || spec.chars().any(|c| c > '7') {
            return Err(format!("{spec:?} is not an octal mode"));
        }
        let bits = u32::from_str_radix(spec, 8).map_err(|e| e.to_string())?;
        if bits > 0o7777 {
            return Err(format!("{spec:?} is more than 07777"));
        }
        return Ok(Mode::Octal {
            bits,
            digits: spec.len(),
        });
    }
    let mut clauses = Vec::new();
    for clause in spec.split(',') {
        let mut chars = clause.chars().peekable();
        let mut who = 0;
        let mut any_who = false;
        while let Some(&c) = chars.peek() {
            let bits = match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => break,
            };
            who |= bits;
            any_who = true;
            chars.next();
        }
        let mut actions = Vec::new();
        while let Some(op) = chars.next() {
            if !"+-=".contains(op) {
                return Err(format!("{spec:?}: unexpected {op:?} in {clause:?}"));
            }
            let mut perms = Perms::default();
            while let Some(&c) = chars.peek() {
                match c {
                    'r' => perms.r = true,
                    'w' => perms.w = true,
                    'x' => perms.x = true,
                    'X' => perms.big_x = true,
                    's' => perms.s = true,
                    't' => perms.t = true,
                    '+' | '-' | '=' => break,
                    other => {
                        return Err(format!(
                            "{spec:?}: {other:?} is not one of r, w, x, X, s, t"
                        ));
                    }
                }
                chars.next();
            }
            actions.push((op, perms));
        }
        if actions.is_empty() {
            return Err(format!("{spec:?}: {clause:?} has no +, - or ="));
        }
        clauses.push(Clause {
            who: any_who.then_some(who),
            actions,
        });
    }
    Ok(Mode::Symbolic(clauses))
}

impl Mode {
    /// The new permission bits for an entry with `old` bits.
    pub fn apply(&self, old: u32, is_dir: bool) -> u32 {
        match self {
            Mode::Octal { bits, digits } => {
                if is_dir && *digits < 5 {
                    // GNU chmod keeps a directory's setuid/setgid unless the
                    // mode sets them or has a fifth digit.
                    bits | (old & 0o6000)
                } else {
                    *bits
                }
            }
            Mode::Symbolic(clauses) => {
                let mut mode = old & 0o7777;
                for c in clauses {
                    let (who, mask) = match c.who {
                        Some(w) => (w, 0o7777),
                        None => (0o7777, !UMASK & 0o7777),
                    };
                    for (op, p) in &c.actions {
                        let mut bits = 0;
                        if p.r {
                            bits |= 0o444;
                        }
                        if p.w {
                            bits |= 0o222;
                        }
                        if p.x || (p.big_x && (is_dir || mode & 0o111 != 0)) {
                            bits |= 0o111;
                        }
                        if p.s {
                            bits |= 0o6000;
                        }
                        if p.t {
                            bits |= 0o1000;
                        }
                        let bits = bits & who & mask;
                        match op {
                            '+' => mode |= bits,
                            '-' => mode &= !bits,
                            _ => {
                                // `=`: clear what `who` covers, but keep a
                                // directory's setuid/setgid (as GNU chmod).
                                let mut clear = who & 0o1777;
                                if !is_dir {
                                    clear |= who & 0o6000;
                                }
                                mode = (mode & !clear) | bits;
                            }
                        }
                    }
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(spec: &str, old: u32, dir: bool) -> u32 {
        parse_mode(spec).unwrap().apply(old, dir)
    }

    #[test]
    fn octal() {
        assert_eq!(m("755", 0o644, false), 0o755);
        assert_eq!(m("0600", 0o4755, false), 0o600);
        assert_eq!(m("0755", 0o2775, true), 0o2755);
        assert_eq!(m("00755", 0o2775, true), 0o755);
        assert_eq!(m("1777", 0o755, true), 0o1777);
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("777777").is_err());
    }

    #[test]
    fn symbolic() {
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-w", 0o666, false), 0o644);
        assert_eq!(m("a=r", 0o755, false), 0o444);
        assert_eq!(m("u=rwx,g=rx,o=", 0o000, false), 0o750);
        assert_eq!(m("a+X", 0o644, false), 0o644);
        assert_eq!(m("a+X", 0o744, false), 0o755);
        assert_eq!(m("a+X", 0o600, true), 0o711);
        assert_eq!(m("g+s", 0o755, true), 0o2755);
        assert_eq!(m("u+s", 0o755, false), 0o4755);
        assert_eq!(m("+t", 0o777, true), 0o1777);
        assert_eq!(m("o+t", 0o777, true), 0o1777);
        assert_eq!(m("-t", 0o1777, true), 0o777);
        // No `who`: the umask (022) protects group and other write bits.
        assert_eq!(m("+w", 0o444, false), 0o644);
        assert_eq!(m("+x", 0o644, false), 0o755);
        assert_eq!(m("u+x-w", 0o644, false), 0o544);
        // `=` (checked against GNU chmod with umask 022).
        assert_eq!(m("=r", 0o666, false), 0o444);
        assert_eq!(m("+w,=rx", 0o666, false), 0o555);
        assert_eq!(m("=rx", 0o2775, true), 0o2555);
        assert_eq!(m("o=rx", 0o3777, true), 0o2775);
        assert_eq!(m("u=rwx", 0o3777, true), 0o3777);
        assert_eq!(m("u=rw", 0o4755, false), 0o655);
        for bad in ["", "u", "u+q", "z+x", "u+x,"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }
}

"""io.weldr.sudoers: sudoers drop-ins in /etc/sudoers.d.

The traps it keeps a pipeline out of: sudo silently skips a drop-in whose
name contains a '.' or ends in '~', and refuses to run at all when a
sudoers file is writable by anyone but root; a rule spread over lines, or
one that is empty, is a syntax error that locks everyone out of sudo.
"""

import re

from osbuild_stage import OptionError, Tree

DIR = "/etc/sudoers.d"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HEADER = "# Written by osbuild (io.weldr.sudoers). Check with: visudo -c -f {path}\n"


def check_line(path: str, line: str) -> str:
    if not line.strip():
        raise OptionError(path, "is empty")
    if any(c in line for c in "\n\r\0"):
        raise OptionError(path, "has a line break or NUL: one entry per list item")
    if line.rstrip().endswith("\\"):
        raise OptionError(path, "ends in a backslash, which would join it to the next line")
    if line.lstrip().startswith(("#include", "@include")):
        raise OptionError(path, "is an include directive: list the rules themselves")
    return line.strip()


def run(tree: Tree, options: dict) -> None:
    drop_ins = options.get("drop-ins", {})
    for name in list(drop_ins) + list(options.get("remove", [])):
        if not NAME.match(name):
            where = f"drop-ins.{name}" if name in drop_ins else "remove"
            raise OptionError(
                where,
                f"{name!r}: sudo skips drop-ins whose names have a '.' or end in '~'; "
                "use letters, digits, '_' and '-'",
            )
    for name in options.get("remove", []):
        tree.unlink(f"{DIR}/{name}", missing_ok=True)
    if not drop_ins:
        return
    sudoers = tree.read_text("/etc/sudoers") if tree.exists("/etc/sudoers") else ""
    if not re.search(r"^[#@]includedir\s+/etc/sudoers\.d\s*$", sudoers, re.M):
        print("warning: /etc/sudoers has no '@includedir /etc/sudoers.d': the drop-ins are not read")
    tree.mkdir(DIR, 0o750, parents=True, exist_ok=True)
    for name, spec in sorted(drop_ins.items()):
        lines = []
        for i, d in enumerate(spec.get("defaults", [])):
            lines.append("Defaults " + check_line(f"drop-ins.{name}.defaults[{i}]", d))
        for i, r in enumerate(spec.get("rules", [])):
            lines.append(check_line(f"drop-ins.{name}.rules[{i}]", r))
        if not lines:
            raise OptionError(f"drop-ins.{name}", "has no defaults and no rules")
        path = f"{DIR}/{name}"
        text = HEADER.format(path=path) + "\n".join(lines) + "\n"
        tree.write_text(path, text, mode=0o440, uid=0, gid=0)

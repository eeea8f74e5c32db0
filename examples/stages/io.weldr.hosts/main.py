"""io.weldr.hosts: static host names in /etc/hosts.

The entries go in a block between two marker lines, which a later run
replaces: building twice, or changing the entries, never appends a second
copy. What else is in the file (localhost, the distribution's lines) is
kept as it was.
"""

import ipaddress
import re

from osbuild_stage import OptionError, Tree

HOSTS = "/etc/hosts"
BEGIN = "# BEGIN io.weldr.hosts (written by osbuild; changes here are replaced)"
END = "# END io.weldr.hosts"
LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_name(path: str, name: str) -> str:
    if len(name) > 253 or not all(LABEL.match(label) for label in name.rstrip(".").split(".")):
        raise OptionError(path, f"{name!r} is not a host name (RFC 1123: labels of letters, digits and '-')")
    return name


def run(tree: Tree, options: dict) -> None:
    lines = []
    for i, entry in enumerate(options["entries"]):
        try:
            address = ipaddress.ip_address(entry["address"])
        except ValueError:
            raise OptionError(f"entries[{i}].address", f"{entry['address']!r} is not an IPv4 or IPv6 address")
        names = [check_name(f"entries[{i}].names[{j}]", n) for j, n in enumerate(entry["names"])]
        lines.append(f"{address}\t{' '.join(names)}")
    old = tree.read_text(HOSTS) if tree.exists(HOSTS) else "127.0.0.1\tlocalhost\n"
    kept, inside = [], False
    for line in old.splitlines():
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise OptionError("entries", f"{HOSTS} has {BEGIN!r} without {END!r}: fix the file in an earlier stage")
    while kept and not kept[-1].strip():
        kept.pop()
    text = "\n".join(kept + ([""] if kept else []) + [BEGIN] + lines + [END]) + "\n"
    tree.mkdir("/etc", exist_ok=True)
    tree.write_text(HOSTS, text)

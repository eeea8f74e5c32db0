"""@NAME@: writes the message of the day."""

from osbuild_stage import OptionError, Tree


def run(tree: Tree, options: dict) -> None:
    text = options["text"]
    if not text.strip():
        raise OptionError("text", "is empty: give the message to show at login")
    tree.mkdir("/etc", exist_ok=True)
    tree.write_text(
        "/etc/motd",
        text + "\n",
        mode=options.get("mode", 0o644),
        uid=options.get("uid", 0),
        gid=options.get("gid", 0),
    )
    # An absolute symlink: it resolves inside the tree, never on the host.
    tree.unlink("/etc/issue.net", missing_ok=True)
    tree.symlink("/etc/motd", "/etc/issue.net")
    tree.setxattr("/etc/motd", "user.written-by", b"@NAME@")
    print(f"/etc/motd: {len(text) + 1} bytes")

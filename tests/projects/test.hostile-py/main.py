"""test.hostile-py: tries one way out of the sandbox; every attempt must
fail. One that succeeds prints ESCAPED, and still fails, so a test notices."""

from osbuild_stage import OptionError, Tree


def run(tree: Tree, options: dict) -> None:
    attempt = options["attempt"]
    if attempt == "option-error":
        raise OptionError("users.alice.uid", "1000 is taken by bob")
    if attempt == "open":
        print("ESCAPED:", open("/etc/shadow").read())
    elif attempt == "socket":
        import socket

        s = socket.create_connection(("127.0.0.1", options["port"]), timeout=2)
        print("ESCAPED: connected", s)
    elif attempt == "loop":
        while True:
            pass
    elif attempt == "alloc":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    elif attempt == "read-dotdot":
        print("ESCAPED:", tree.read_text("/../../../../etc/shadow"))
    elif attempt == "host-etc":
        print("ESCAPED:", tree.read_text("/hostetc/shadow"))
    elif attempt == "write-through-symlink":
        tree.write_text("/hostetc/osbuild-escape-marker", "x")
        print("ESCAPED: wrote through /hostetc")
    elif attempt == "chmod-through-symlink":
        tree.chmod("/hostetc/shadow", 0o777)
        print("ESCAPED: chmod through /hostetc")
    raise RuntimeError(f"attempt {attempt} was not refused")

"""``sys.stdout`` and ``sys.stderr`` for a stage whose WASI is stubbed out:
what it prints goes to osbuild's console interface, the build's log."""

import io
import sys

from wit_world.imports import console as _console


class _Channel(io.TextIOBase):
    def __init__(self, channel: "_console.Channel") -> None:
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        _console.write(self._channel, s.encode("utf-8", "replace"))
        return len(s)

    def flush(self) -> None:
        pass


def install() -> None:
    sys.stdout = _Channel(_console.Channel.STDOUT)
    sys.stderr = _Channel(_console.Channel.STDERR)

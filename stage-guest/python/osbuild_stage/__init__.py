"""The SDK for writing osbuild stages in Python.

A stage is one function over the tree and its options::

    from osbuild_stage import OptionError, Tree

    def run(tree: Tree, options: dict) -> None:
        text = options["text"]
        if not text:
            raise OptionError("text", "is empty")
        (tree / "etc/motd").write_text(text + "\\n", mode=0o644)

`osbuild stage build` turns a folder with that function in ``main.py`` and
its metadata in ``stage.json`` into one ``NAME.wasm`` (componentize-py,
WASI stubbed out): the stage imports nothing but osbuild's stage world, so
everything it does to the tree goes through osbuild's ``tree`` interface,
resolved inside the tree (an absolute symlink never leads to the build
host), and ``print`` goes to the build's log.
"""

from ._errors import OptionError, StageFailed
from ._tree import DirEntry, EntryKind, Metadata, NodeKind, Tree, TreePath
from ._context import source_epoch

__all__ = [
    "DirEntry",
    "EntryKind",
    "Metadata",
    "NodeKind",
    "OptionError",
    "StageFailed",
    "Tree",
    "TreePath",
    "source_epoch",
]

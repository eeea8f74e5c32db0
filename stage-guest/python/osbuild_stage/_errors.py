"""The errors a stage raises on purpose."""


class OptionError(Exception):
    """An option's value is wrong: osbuild names the option in its error
    (``pipeline[N].options.users.alice.uid``).

    ``path`` is the option's JSON path below the stage's options, dotted
    (``"users.alice.uid"``).
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class StageFailed(Exception):
    """The stage cannot do its work; the message says why and what to do."""

"""What osbuild tells a stage besides its options."""

from wit_world.imports import context as _context


def source_epoch() -> int:
    """The pipeline's source epoch (seconds): the time to stamp anything the
    stage writes with, so that two builds give the same bytes."""
    return _context.source_epoch()

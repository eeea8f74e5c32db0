"""The component's entry point (componentize-py's app module): imports the
stage's ``main`` module at build time (so a run starts from the snapshot),
and turns what ``run`` raises into osbuild's stage error."""

import json
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import StageError

from . import _console
from ._errors import OptionError, StageFailed
from ._tree import Tree

_console.install()

import main as _stage  # noqa: E402  (the stage's own code, beside stage.json)


class WitWorld(wit_world.WitWorld):
    def run(self, options: str) -> None:
        _console.install()
        try:
            _stage.run(Tree(), json.loads(options))
        except OptionError as e:
            raise Err(StageError(message=e.message, option_path=e.path))
        except StageFailed as e:
            raise Err(StageError(message=str(e), option_path=None))
        except OSError as e:
            raise Err(StageError(message=f"{e.filename}: {e.strerror}" if e.filename else str(e), option_path=None))
        except Exception as e:
            detail = "".join(traceback.format_exception(e))
            raise Err(StageError(message=f"{type(e).__name__}: {e}\n{detail}", option_path=None))

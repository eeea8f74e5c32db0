// The component's entry point: runs the stage's `run` (from `main.js`)
// and turns what it throws into osbuild's stage error.

import { Tree, OptionError, TreeError, installConsole } from "./osbuild-stage.js";
import { run as stageRun } from "./main.js";

installConsole();

export function run(options) {
  try {
    stageRun(new Tree(), JSON.parse(options));
  } catch (e) {
    if (e instanceof OptionError) {
      throw { message: e.detail, optionPath: e.path };
    }
    if (e instanceof TreeError) {
      throw { message: e.message, optionPath: undefined };
    }
    const what = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ""}` : String(e);
    throw { message: what, optionPath: undefined };
  }
}

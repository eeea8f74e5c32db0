// io.weldr.dracut-conf: a dracut configuration drop-in.
//
// dracut *sources* its configuration with bash, so a value is code: every
// item is checked to be a plain word (no quotes, `$`, backticks, spaces or
// line breaks) before it is written between double quotes.

import { OptionError } from "./osbuild-stage.js";

const DIR = "/etc/dracut.conf.d";
// Keys dracut appends to (its `add_` and `omit_` conventions), and keys it sets.
const APPEND = new Set(["add_dracutmodules", "omit_dracutmodules", "add_drivers", "omit_drivers", "force_drivers", "install_items"]);
const LISTS = ["dracutmodules", "add_dracutmodules", "omit_dracutmodules", "drivers", "add_drivers", "omit_drivers", "force_drivers", "filesystems", "install_items"];
const BOOLS = ["early_microcode", "reproducible", "hostonly"];
const WORD = /^[A-Za-z0-9_.,:+=@%\/-]+$/;

function word(path, value) {
  if (!WORD.test(value)) {
    throw new OptionError(path, `${JSON.stringify(value)} is not a plain word: dracut sources this file with bash, so quotes, $, backticks, spaces and line breaks are refused`);
  }
  return value;
}

export function run(tree, options) {
  const filename = options.filename;
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*\.conf$/.test(filename)) {
    throw new OptionError("filename", `${JSON.stringify(filename)}: dracut reads only *.conf files, named without '/'`);
  }
  const config = options.config;
  const lines = ["# Written by osbuild (io.weldr.dracut-conf)"];
  if (config.compress !== undefined) {
    lines.push(`compress="${word("config.compress", config.compress)}"`);
  }
  for (const key of LISTS) {
    if (config[key] === undefined) continue;
    const items = config[key].map((v, i) => word(`config.${key}[${i}]`, v));
    // Spaces around the items: appended lists must not glue words together.
    lines.push(`${key}${APPEND.has(key) ? "+=" : "="}" ${items.join(" ")} "`);
  }
  for (const key of BOOLS) {
    if (config[key] === undefined) continue;
    lines.push(`${key}="${config[key] ? "yes" : "no"}"`);
  }
  tree.mkdir(DIR, { recursive: true });
  tree.writeFile(`${DIR}/${filename}`, lines.join("\n") + "\n", { mode: 0o644, uid: 0, gid: 0 });
  console.log(`${DIR}/${filename}: ${lines.length - 1} settings`);
}

// test.hostile-js: tries one way out of the sandbox; every attempt must
// fail. One that succeeds prints ESCAPED, and still fails, so a test notices.

import { OptionError } from "./osbuild-stage.js";

export function run(tree, options) {
  const attempt = options.attempt;
  if (attempt === "option-error") {
    throw new OptionError("users.alice.uid", "1000 is taken by bob");
  } else if (attempt === "fetch") {
    fetch(`http://127.0.0.1:${options.port}/`);
    console.log("ESCAPED: fetch");
  } else if (attempt === "loop") {
    for (;;) {}
  } else if (attempt === "alloc") {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
  } else if (attempt === "read-dotdot") {
    console.log("ESCAPED:", tree.readText("/../../../../etc/shadow"));
  } else if (attempt === "host-etc") {
    console.log("ESCAPED:", tree.readText("/hostetc/shadow"));
  } else if (attempt === "write-through-symlink") {
    tree.writeFile("/hostetc/osbuild-escape-marker", "x");
    console.log("ESCAPED: wrote through /hostetc");
  } else if (attempt === "chmod-through-symlink") {
    tree.chmod("/hostetc/shadow", 0o777);
    console.log("ESCAPED: chmod through /hostetc");
  }
  throw new Error(`attempt ${attempt} was not refused`);
}

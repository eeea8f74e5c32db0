// @NAME@: writes the message of the day.

import { OptionError } from "./osbuild-stage.js";

export function run(tree, options) {
  const text = options.text;
  if (!text.trim()) {
    throw new OptionError("text", "is empty: give the message to show at login");
  }
  tree.mkdir("/etc", { recursive: true });
  tree.writeFile("/etc/motd", text + "\n", {
    mode: options.mode ?? 0o644,
    uid: options.uid ?? 0,
    gid: options.gid ?? 0,
  });
  // An absolute symlink: it resolves inside the tree, never on the host.
  tree.rm("/etc/issue.net", { force: true });
  tree.symlink("/etc/motd", "/etc/issue.net");
  tree.setXattr("/etc/motd", "user.written-by", "@NAME@");
  console.log(`/etc/motd: ${text.length + 1} bytes`);
}

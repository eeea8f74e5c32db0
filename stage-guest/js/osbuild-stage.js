// The SDK for writing osbuild stages in JavaScript.
//
// A stage is one function over the tree and its options:
//
//     import { OptionError } from "osbuild-stage";
//
//     export function run(tree, options) {
//       if (!options.text) throw new OptionError("text", "is empty");
//       tree.writeFile("/etc/motd", options.text + "\n", { mode: 0o644 });
//     }
//
// `osbuild stage build` turns a folder with that module in `main.js` and
// its metadata in `stage.json` into one `NAME.wasm` (componentize-js, every
// WASI feature disabled): the stage imports nothing but osbuild's stage
// world, so all it does to the tree goes through osbuild's `tree`
// interface, resolved inside the tree, and `console.log` goes to the
// build's log.

import * as wit from "osbuild:stage/tree@0.2.0";
import { write as consoleWrite } from "osbuild:stage/console@0.2.0";
import { sourceEpoch as witSourceEpoch } from "osbuild:stage/context@0.2.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Node's error codes, so a stage can test `e.code === "ENOENT"`.
const CODES = {
  "not-found": "ENOENT",
  "already-exists": "EEXIST",
  "permission-denied": "EACCES",
  "not-a-directory": "ENOTDIR",
  "is-a-directory": "EISDIR",
  "directory-not-empty": "ENOTEMPTY",
  "invalid-input": "EINVAL",
  unsupported: "EOPNOTSUPP",
  other: "EIO",
};

/** A tree operation failed; `code` is Node's (`ENOENT`), `path` the path. */
export class TreeError extends Error {
  constructor(code, message, path) {
    super(`${path}: ${message}`);
    this.name = "TreeError";
    this.code = code;
    this.path = path;
  }
}

/**
 * An option's value is wrong: osbuild names the option in its error
 * (`pipeline[N].options.users.alice.uid`). `path` is the option's dotted
 * JSON path below the stage's options.
 */
export class OptionError extends Error {
  constructor(path, message) {
    super(`${path}: ${message}`);
    this.name = "OptionError";
    this.path = path;
    this.detail = message;
  }
}

/** The pipeline's source epoch (seconds): the time to stamp files with. */
export function sourceEpoch() {
  return Number(witSourceEpoch());
}

function abs(path) {
  const p = String(path);
  return p.startsWith("/") ? p : "/" + p;
}

// Calls the host; its error becomes a TreeError naming the path.
function call(path, fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    const err = e && e.payload !== undefined ? e.payload : e;
    if (err && typeof err === "object" && "kind" in err && "message" in err) {
      throw new TreeError(CODES[err.kind] ?? "EIO", err.message, abs(path));
    }
    throw e;
  }
}

function bytes(data) {
  return typeof data === "string" ? encoder.encode(data) : new Uint8Array(data);
}

function metadata(m) {
  return {
    kind: m.kind,
    mode: m.mode,
    uid: m.uid,
    gid: m.gid,
    size: Number(m.size),
    nlink: Number(m.nlink),
    mtime: Number(m.mtime.seconds),
    mtimeNanoseconds: m.mtime.nanoseconds,
    rdevMajor: m.rdevMajor,
    rdevMinor: m.rdevMinor,
    isFile: () => m.kind === "file",
    isDirectory: () => m.kind === "directory",
    isSymbolicLink: () => m.kind === "symlink",
  };
}

/**
 * The tree, as osbuild hands it to the stage. Paths are absolute inside it
 * and resolved with chroot semantics (`..` stops at `/`, an absolute
 * symlink resolves inside the tree). Methods are named after Node's `fs`.
 */
export class Tree {
  stat(path, { followSymlinks = true } = {}) {
    return metadata(call(path, wit.metadata, abs(path), followSymlinks));
  }

  lstat(path) {
    return this.stat(path, { followSymlinks: false });
  }

  exists(path, { followSymlinks = true } = {}) {
    try {
      this.stat(path, { followSymlinks });
      return true;
    } catch (e) {
      if (e instanceof TreeError && e.code === "ENOENT") return false;
      throw e;
    }
  }

  /** The file's bytes (a Uint8Array). */
  readFile(path) {
    return call(path, wit.readFile, abs(path));
  }

  readText(path) {
    return decoder.decode(this.readFile(path));
  }

  /**
   * Writes a file whole (a string is UTF-8). A new file is 0644 and 0:0
   * unless `mode`, `uid`, `gid` say otherwise; an existing one keeps its
   * mode and owner unless they are given.
   */
  writeFile(path, data, { mode, uid, gid } = {}) {
    call(path, wit.writeFile, abs(path), bytes(data));
    if (uid !== undefined || gid !== undefined) {
      const m = this.stat(path);
      this.chown(path, uid ?? m.uid, gid ?? m.gid);
    }
    if (mode !== undefined) this.chmod(path, mode);
  }

  /** The entries of a directory (`{name, kind}`), sorted by name. */
  readDir(path) {
    return call(path, wit.readDir, abs(path)).map((e) => ({ name: e.name, kind: e.kind }));
  }

  mkdir(path, { mode = 0o755, recursive = false } = {}) {
    const p = abs(path);
    if (recursive) {
      const parent = p.replace(/\/+[^/]*\/*$/, "") || "/";
      if (parent !== "/" && !this.exists(parent)) this.mkdir(parent, { recursive: true });
      if (this.exists(p) && this.stat(p).isDirectory()) return;
    }
    call(p, wit.createDir, p, mode);
  }

  /** Removes a file, symlink, node or empty directory; `recursive` removes
   * a directory with everything in it (symlinks never followed); `force`
   * ignores a missing path. */
  rm(path, { recursive = false, force = false } = {}) {
    try {
      call(path, recursive ? wit.removeAll : wit.remove, abs(path));
    } catch (e) {
      if (!(force && e instanceof TreeError && e.code === "ENOENT")) throw e;
    }
  }

  rename(from, to) {
    call(from, wit.rename, abs(from), abs(to));
  }

  /** Creates `path` as a symlink to `target`, stored as given. */
  symlink(target, path) {
    call(path, wit.symlink, String(target), abs(path));
  }

  link(existing, path) {
    call(path, wit.hardLink, abs(existing), abs(path));
  }

  readLink(path) {
    return call(path, wit.readLink, abs(path));
  }

  /** The canonical path inside the tree, every symlink resolved in it. */
  resolve(path, { followSymlinks = true } = {}) {
    return call(path, wit.resolve, abs(path), followSymlinks);
  }

  chmod(path, mode) {
    call(path, wit.setMode, abs(path), mode);
  }

  /** Sets the owner by number; clears setuid/setgid as chown(2) does. */
  chown(path, uid, gid, { followSymlinks = true } = {}) {
    call(path, wit.setOwner, abs(path), uid, gid, followSymlinks);
  }

  setMtime(path, seconds, nanoseconds = 0, { followSymlinks = true } = {}) {
    call(path, wit.setMtime, abs(path), { seconds: BigInt(seconds), nanoseconds }, followSymlinks);
  }

  /** Makes a device node or FIFO: kind "char-device", "block-device" or "fifo". */
  mknod(path, kind, mode, major = 0, minor = 0) {
    call(path, wit.makeNode, abs(path), kind, mode, major, minor);
  }

  getXattr(path, name, { followSymlinks = true } = {}) {
    return call(path, wit.getXattr, abs(path), name, followSymlinks);
  }

  listXattrs(path, { followSymlinks = true } = {}) {
    return call(path, wit.listXattrs, abs(path), followSymlinks);
  }

  setXattr(path, name, value, { followSymlinks = true } = {}) {
    call(path, wit.setXattr, abs(path), name, bytes(value), followSymlinks);
  }

  removeXattr(path, name, { followSymlinks = true } = {}) {
    call(path, wit.removeXattr, abs(path), name, followSymlinks);
  }
}

function print(channel, args) {
  const text = args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" ");
  consoleWrite(channel, encoder.encode(text + "\n"));
}

/** Points `console` at the build's log (WASI's stdio is disabled). */
export function installConsole() {
  globalThis.console = {
    log: (...a) => print("stdout", a),
    info: (...a) => print("stdout", a),
    debug: (...a) => print("stdout", a),
    warn: (...a) => print("stderr", a),
    error: (...a) => print("stderr", a),
  };
}

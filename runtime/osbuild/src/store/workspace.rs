//! The tree a build's stages work on, and how it moves into and out of
//! the store without copying it.
//!
//! With overlayfs (the default where it works), the tree is a mount whose
//! lower layers are the store objects it builds on and whose upper layer
//! collects this build's changes; a checkpoint unmounts, renames the upper
//! layer into the store as a new object, and mounts again with that object
//! as the top lower layer. Handing the tree to the next stage costs no
//! copy at all, and a checkpoint costs a mount and a rename.
//!
//! Where overlayfs is not available, the tree is a plain directory, and a
//! checkpoint copies it (`cp -a --reflink=auto`: a reflink copy where the
//! file system has them, a full copy elsewhere).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use rustix::mount::{MountFlags, UnmountFlags};

use super::{Layer, Object, ObjectInfo, Store};
use crate::changes::{self, Change, diff};
use crate::mtime;
use crate::userns::{IdMap, as_range_root, bind_idmapped};

/// How the tree is handed from stage to stage and into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    Overlay,
    Copy,
}

impl std::fmt::Display for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handoff::Overlay => "overlay",
            Handoff::Copy => "copy",
        })
    }
}

/// Self-contained layers: no redirects or metadata-only copies that would
/// tie a stored layer to the exact stack it was made on. A rootless
/// build's overlay keeps its attributes (opaque directories) under
/// `user.overlay.*` (`trusted.*` is the host root's alone), and the kernel
/// then wants redirects neither made nor followed (`nofollow`; `off` means
/// "follow" here).
fn layer_options() -> &'static str {
    if crate::rootless::active() {
        "redirect_dir=nofollow,metacopy=off,index=off,userxattr"
    } else {
        "redirect_dir=off,metacopy=off,index=off"
    }
}

/// The most bytes of options `mount(2)` takes (a page, less room).
const MOUNT_DATA_MAX: usize = 4000;

fn mount_overlay(
    merged: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    overlay(merged, lowers, Some((upper, work)))
}

/// Mounts `lowers` (two or more, top first) read-only, as one merged view.
fn mount_lowers(view: &Path, lowers: &[PathBuf]) -> anyhow::Result<()> {
    overlay(view, lowers, None)
}

/// Mounts an overlay at `at`: `lowers` (top first), and with `upper` a
/// writable layer over them, else read-only. Always `nodev,nosuid`: a
/// device node or setuid file in the tree is inert for the host, whoever
/// made it (the kernel enforces it; binds inherit it).
///
/// Every stage is a layer, so a long pipeline stacks many: `mount(2)`
/// takes a page of options (some 35 store paths), so a longer stack is
/// mounted through the mount API, a layer at a time (`lowerdir+`, Linux
/// 6.8; overlayfs stacks up to 500).
fn overlay(at: &Path, lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> anyhow::Result<()> {
    let extra: Vec<&Path> = upper.map(|(u, w)| vec![u, w]).unwrap_or_default();
    for p in lowers
        .iter()
        .map(PathBuf::as_path)
        .chain(extra.iter().copied())
    {
        let s = p.to_string_lossy();
        if s.contains([':', ',', '\\']) {
            anyhow::bail!("{s}: overlayfs cannot take a path with ':', ',' or '\\\\'");
        }
    }
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let mut data = format!("lowerdir={lower},{}", layer_options());
    if let Some((u, w)) = upper {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    let what = if upper.is_some() {
        "mounting the tree (overlayfs)"
    } else {
        "mounting the layers below the tree, read-only (overlayfs)"
    };
    if data.len() < MOUNT_DATA_MAX {
        let mut flags = MountFlags::NODEV | MountFlags::NOSUID;
        if upper.is_none() {
            flags |= MountFlags::RDONLY;
        }
        return rustix::mount::mount(
            "overlay",
            at,
            "overlay",
            flags,
            CString::new(data)?.as_c_str(),
        )
        .map_err(std::io::Error::from)
        .context(what);
    }
    overlay_by_layers(at, lowers, upper).with_context(|| {
        format!(
            "{what}: {} layers, more than mount(2) takes at once, through the mount API (Linux 6.8 or later)",
            lowers.len()
        )
    })
}

/// [`overlay`] through `fsopen`/`fsconfig`/`fsmount`: no limit but
/// overlayfs's own.
fn overlay_by_layers(
    at: &Path,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
) -> std::io::Result<()> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in lowers {
        fsconfig_set_string(&fs, "lowerdir+", l.as_path())?;
    }
    if let Some((u, w)) = upper {
        fsconfig_set_string(&fs, "upperdir", u)?;
        fsconfig_set_string(&fs, "workdir", w)?;
    }
    for option in layer_options().split(',') {
        match option.split_once('=') {
            Some((key, value)) => fsconfig_set_string(&fs, key, value)?,
            None => fsconfig_set_flag(&fs, option)?,
        }
    }
    fsconfig_create(&fs)?;
    let mut attrs = MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID;
    if upper.is_none() {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        at,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Binds `dir` onto `at` with `nodev,nosuid` (and read-only if asked): the
/// copy handoff's tree, made as inert as an overlay.
fn bind_inert(dir: &Path, at: &Path, read_only: bool) -> anyhow::Result<()> {
    rustix::mount::mount_bind(dir, at)
        .map_err(std::io::Error::from)
        .with_context(|| format!("binding {} to {}", dir.display(), at.display()))?;
    let mut flags = MountFlags::BIND | MountFlags::NODEV | MountFlags::NOSUID;
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    if let Err(e) = rustix::mount::mount_remount(at, flags, c"") {
        let _ = unmount(at);
        return Err(std::io::Error::from(e))
            .with_context(|| format!("making {} nodev,nosuid", at.display()));
    }
    Ok(())
}

/// Detaches the tree's mount. Lazily: a synchronous unmount waits for the
/// kernel's RCU grace period (10-30 ms here), and nothing uses the tree by
/// then (every stage has ended), so its layers can be moved right away.
fn unmount(path: &Path) -> anyhow::Result<()> {
    rustix::mount::unmount(path, UnmountFlags::DETACH)
        .map_err(std::io::Error::from)
        .with_context(|| format!("unmounting {}", path.display()))
}

/// Unmounts `path` and waits until it is gone.
fn unmount_now(path: &Path) -> anyhow::Result<()> {
    rustix::mount::unmount(path, UnmountFlags::empty())
        .map_err(std::io::Error::from)
        .with_context(|| format!("unmounting {}", path.display()))
}

/// Copies the attributes of `from` (a directory) onto `to`.
fn copy_dir_attributes(from: &Path, to: &Path) -> anyhow::Result<()> {
    let src = osbuild_tree_fs::Root::open(from)?;
    let dst = osbuild_tree_fs::Root::open(to)?;
    let root = Path::new("");
    let m = src.metadata(root, false)?;
    dst.set_owner(root, m.uid, m.gid, false)?;
    dst.set_mode(root, m.mode)?;
    for name in src.list_xattrs(root, false)? {
        if name.starts_with(crate::rootless::overlay_xattr_prefix()) {
            continue;
        }
        if let Some(v) = src.get_xattr(root, &name, false)? {
            dst.set_xattr(root, &name, &v, false)?;
        }
    }
    dst.set_mtime(root, m.mtime_sec, m.mtime_nsec, false)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto", "--no-target-directory"])
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    if !status.success() {
        anyhow::bail!(
            "copying {} to {} failed ({status})",
            from.display(),
            to.display()
        );
    }
    Ok(())
}

pub struct Workspace {
    handoff: Handoff,
    dir: PathBuf,
    tree: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    lowers: Vec<PathBuf>,
    /// The objects under the tree, kept pinned while it is in use.
    pinned: Vec<Object>,
    /// The object the current tree sits on.
    top: Option<String>,
    generation: u32,
    mounted: bool,
    /// Copy handoff: the directory the tree's mount shows (the tree itself,
    /// or a stored tree read in place).
    shows: PathBuf,
    /// While a native stage runs: the id-mapped mounts under the tree.
    shifted: Vec<PathBuf>,
    /// Copy handoff: entries changed after this were touched by stages.
    since: mtime::Mark,
    /// Copy handoff: a copy of the tree as the running stage was given it
    /// (a stored object's tree or a snapshot in the build directory);
    /// `None`: it was given an empty tree.
    given: Option<PathBuf>,
}

impl Workspace {
    /// A tree in the build directory `dir`, holding what `chain` (an object
    /// and the ones below it, top first) holds, or nothing. Without a
    /// `handoff`, overlayfs where it works here, else copies. A tree that
    /// no stage will change (`writable` false) costs no copy.
    pub fn new(
        dir: &Path,
        handoff: Option<Handoff>,
        chain: Vec<Object>,
        writable: bool,
    ) -> anyhow::Result<Workspace> {
        let layered = chain.iter().any(|o| o.info.layer == Layer::Overlay);
        let mut ws = Workspace {
            handoff: handoff.unwrap_or(Handoff::Overlay),
            dir: dir.to_path_buf(),
            tree: dir.join("tree"),
            upper: PathBuf::new(),
            work: PathBuf::new(),
            lowers: chain.iter().map(Object::tree).collect(),
            top: chain.first().map(|o| o.info.id.clone()),
            pinned: chain,
            generation: 0,
            mounted: false,
            shows: PathBuf::new(),
            shifted: Vec::new(),
            since: mtime::Mark::now(),
            given: None,
        };
        ws.shows = ws.tree.clone();
        std::fs::create_dir(&ws.tree).context("creating the tree")?;
        if ws.handoff == Handoff::Overlay {
            if ws.lowers.is_empty() {
                let empty = dir.join("empty");
                std::fs::create_dir(&empty)?;
                std::fs::set_permissions(
                    &empty,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )?;
                ws.lowers.push(empty);
            }
            match ws.mount_next() {
                Ok(()) => return Ok(ws),
                Err(e) if handoff.is_some() || layered => {
                    return Err(e.context(
                        "the store holds overlay layers, and overlayfs does not work here",
                    ));
                }
                // No overlayfs here (no privileges, a file system that cannot
                // be an upper layer): plain copies instead.
                Err(_) => {
                    ws.handoff = Handoff::Copy;
                    ws.lowers.retain(|l| !l.ends_with("empty"));
                }
            }
        }
        if let Some(top) = ws.pinned.first() {
            if !writable && !layered {
                // Nothing will change it: read the stored tree in place.
                bind_inert(&top.tree(), &ws.tree, true)?;
                ws.mounted = true;
                ws.shows = top.tree();
                return Ok(ws);
            }
            std::fs::remove_dir(&ws.tree)?;
            if layered {
                // The stored tree is a stack of overlay layers (built with
                // the overlay handoff): copy what they show together, never
                // a layer by itself, with its whiteouts and overlayfs's own
                // attributes. (Read in place it would be an overlay, which
                // a native stage's id-mapped bind cannot take.)
                let view = dir.join("layers");
                let bottom = dir.join("layers-bottom");
                std::fs::create_dir(&view)?;
                std::fs::create_dir(&bottom)?;
                let mut lowers = ws.lowers.clone();
                // overlayfs wants two lower layers at least.
                lowers.push(bottom);
                mount_lowers(&view, &lowers)?;
                let copied = copy_tree(&view, &ws.tree);
                unmount(&view)?;
                copied?;
            } else {
                copy_tree(&top.tree(), &ws.tree)?;
            }
        } else {
            std::fs::set_permissions(
                &ws.tree,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            // What the first stage is given: an empty root like this one.
            let empty = dir.join("empty");
            std::fs::create_dir(&empty)?;
            copy_dir_attributes(&ws.tree, &empty)?;
        }
        bind_inert(&ws.tree, &ws.tree, false)?;
        ws.mounted = true;
        if layered {
            // What the stored layers show was copied: keep a copy of that.
            ws.advance()?;
        } else {
            ws.since = mtime::mark();
            ws.given = Some(
                ws.pinned
                    .first()
                    .map_or_else(|| dir.join("empty"), Object::tree),
            );
        }
        Ok(ws)
    }

    /// Mounts a fresh upper layer over the current lowers.
    fn mount_next(&mut self) -> anyhow::Result<()> {
        self.generation += 1;
        self.upper = self.dir.join(format!("upper-{}", self.generation));
        self.work = self.dir.join(format!("work-{}", self.generation));
        std::fs::create_dir(&self.upper)?;
        std::fs::create_dir(&self.work)?;
        // The merged root takes its attributes from the upper root: give it
        // the ones the tree's root has so far.
        copy_dir_attributes(&self.lowers[0], &self.upper)?;
        mount_overlay(&self.tree, &self.lowers, &self.upper, &self.work)?;
        self.mounted = true;
        Ok(())
    }

    /// Remounts the tree for a native stage whose user namespace maps ids
    /// with `map`: the stage's root sees the tree's root-owned files as its
    /// own, and what it creates is owned by 0 on disk. The overlay is
    /// mounted again over id-mapped layers (overlayfs cannot be id-mapped
    /// itself); a plain tree is bound id-mapped. [`Workspace::unshift`]
    /// puts the tree back as the host sees it.
    pub fn shift(&mut self, map: &IdMap) -> anyhow::Result<()> {
        if !self.shifted.is_empty() {
            anyhow::bail!("the tree is already id-mapped");
        }
        let result = self.shift_mounts(map);
        if result.is_err() {
            let _ = self.unshift();
        }
        result
    }

    fn shift_mounts(&mut self, map: &IdMap) -> anyhow::Result<()> {
        unmount_now(&self.tree)?;
        self.mounted = false;
        match self.handoff {
            Handoff::Overlay => {
                let layers = self.dir.join("shifted");
                std::fs::create_dir_all(&layers)?;
                let mut lowers = Vec::new();
                for (i, lower) in self.lowers.iter().enumerate() {
                    let at = layers.join(format!("lower-{i}"));
                    std::fs::create_dir_all(&at)?;
                    bind_idmapped(lower, &at, map, true)?;
                    self.shifted.push(at.clone());
                    lowers.push(at);
                }
                // Upper and work directories must be on one mount: the
                // build directory's (not what is mounted beneath it).
                let here = layers.join("dir");
                std::fs::create_dir_all(&here)?;
                bind_idmapped(&self.dir, &here, map, false)?;
                self.shifted.push(here.clone());
                let upper = here.join(self.upper.file_name().unwrap());
                let work = here.join(self.work.file_name().unwrap());
                as_range_root(map, || mount_overlay(&self.tree, &lowers, &upper, &work))?;
            }
            Handoff::Copy => {
                let read_only = self.shows != self.tree;
                bind_idmapped(&self.shows, &self.tree, map, read_only)?;
            }
        }
        self.mounted = true;
        Ok(())
    }

    /// Undoes [`Workspace::shift`].
    pub fn unshift(&mut self) -> anyhow::Result<()> {
        if self.mounted {
            // Not lazily: the id-mapped overlay must be gone before the
            // same upper layer is mounted again.
            unmount_now(&self.tree)?;
            self.mounted = false;
        }
        for at in self.shifted.drain(..).rev() {
            unmount_now(&at)?;
        }
        match self.handoff {
            Handoff::Overlay => {
                mount_overlay(&self.tree, &self.lowers, &self.upper, &self.work)?;
            }
            Handoff::Copy => {
                let read_only = self.shows != self.tree;
                bind_inert(&self.shows, &self.tree, read_only)?;
            }
        }
        self.mounted = true;
        Ok(())
    }

    /// Ends the tree's current state without storing it (a build without
    /// the cache, after `--from` or a stage): the next stage's changes are
    /// told apart from it. Overlay: the upper layer becomes a lower one in
    /// the build directory; copy: the tree is copied aside.
    pub fn advance(&mut self) -> anyhow::Result<()> {
        match self.handoff {
            Handoff::Overlay => {
                if self.mounted {
                    unmount(&self.tree)?;
                    self.mounted = false;
                }
                let layer = self.dir.join(format!("layer-{}", self.generation));
                std::fs::rename(&self.upper, &layer).context("keeping the stage's layer")?;
                if self.lowers == [self.dir.join("empty")] {
                    // The empty base layer goes: the new one holds everything.
                    self.lowers.clear();
                }
                self.lowers.insert(0, layer);
                let _ = super::remove_tree(&self.work);
                self.mount_next()
            }
            Handoff::Copy => {
                let copy = self.dir.join(format!("given-{}", self.generation));
                self.generation += 1;
                copy_tree(&self.tree, &copy)?;
                if let Some(old) = self.given.replace(copy)
                    && old.starts_with(&self.dir)
                {
                    let _ = super::remove_tree(&old);
                }
                self.since = mtime::mark();
                Ok(())
            }
        }
    }

    /// Ends a stage: clamps the mtimes of what it touched to the source
    /// epoch and tells what it changed, against the tree it was given.
    /// Nothing of it is kept yet: [`Workspace::checkpoint`] stores it,
    /// [`Workspace::advance`] keeps it for the next stage; dropping the
    /// workspace throws it away. With the overlay handoff, the tree stays
    /// unmounted until then.
    pub fn finish_stage(
        &mut self,
        epoch: i64,
        bounds: diff::Bounds,
    ) -> anyhow::Result<Vec<Change>> {
        self.clamp(epoch)?;
        match self.handoff {
            Handoff::Overlay => {
                unmount(&self.tree)?;
                self.mounted = false;
                let given = self.given_view()?;
                let changes = diff::diff(
                    &self.upper,
                    Some(given.path.as_path()),
                    diff::Layout::Overlay {
                        xattr_prefix: crate::rootless::overlay_xattr_prefix(),
                    },
                    bounds,
                );
                drop(given);
                changes
            }
            Handoff::Copy => diff::diff(
                &self.tree,
                self.given.as_deref(),
                diff::Layout::Full {
                    since: self.since.whole_second(),
                },
                bounds,
            ),
        }
    }

    /// The lower layers as one read-only view: the tree the stage was
    /// given.
    fn given_view(&self) -> anyhow::Result<GivenView> {
        if self.lowers == [self.dir.join("empty")] {
            // The empty base layer (the upper root took its attributes).
            return Ok(GivenView {
                path: self.lowers[0].clone(),
                mounted: false,
            });
        }
        let path = self.dir.join("given");
        let bottom = self.dir.join("given-bottom");
        for d in [&path, &bottom] {
            match std::fs::create_dir(d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
                _ => {}
            }
        }
        let mut lowers = self.lowers.clone();
        // overlayfs wants two lower layers at least.
        lowers.push(bottom);
        mount_lowers(&path, &lowers)?;
        Ok(GivenView {
            path,
            mounted: true,
        })
    }

    /// Where the stages see the tree.
    pub fn path(&self) -> &Path {
        &self.tree
    }

    pub fn handoff(&self) -> Handoff {
        self.handoff
    }

    /// The object the tree currently sits on.
    pub fn top(&self) -> Option<&str> {
        self.top.as_deref()
    }

    /// Gives every entry changed since the last checkpoint `min(mtime, epoch)`.
    pub fn clamp(&self, epoch: i64) -> anyhow::Result<usize> {
        match self.handoff {
            Handoff::Overlay => mtime::clamp_overlay(&self.tree, &self.upper, &self.lowers, epoch),
            Handoff::Copy => mtime::clamp(&self.tree, self.since, epoch),
        }
        .context("setting the mtimes of changed entries")
    }

    /// Stores the tree as object `id` (the result of `stage`, with the
    /// `record` of what it changed), with the files in `outputs` (moved,
    /// not copied), and carries on from it.
    pub fn checkpoint(
        &mut self,
        store: &Store,
        id: &str,
        stage: &str,
        outputs: Option<&Path>,
        record: Option<&changes::Record>,
        packages: Option<(&super::packages::PackageSet, &osbuild_lock::Resolved)>,
    ) -> anyhow::Result<&Object> {
        let staged = self.dir.join(format!("object-{}", self.generation));
        std::fs::create_dir(&staged)?;
        let mut names = Vec::new();
        if let Some(out) = outputs {
            for e in std::fs::read_dir(out)?.flatten() {
                names.push(super::OutputFile::of(&e.path())?);
            }
            names.sort_by(|a, b| a.name.cmp(&b.name));
            std::fs::rename(out, staged.join("output")).context("moving the stage's outputs")?;
        }
        if let Some(record) = record {
            let file = std::fs::File::create(staged.join(changes::FILE_NAME))
                .context("writing the stage's change record")?;
            serde_json::to_writer(std::io::BufWriter::new(file), record)
                .context("writing the stage's change record")?;
        }
        if let Some((_, resolved)) = packages {
            std::fs::write(
                staged.join(super::packages::RESOLVED_FILE),
                serde_json::to_vec(resolved)?,
            )
            .context("writing the stage's package list")?;
        }
        let info = match self.handoff {
            Handoff::Overlay => {
                if self.mounted {
                    unmount(&self.tree)?;
                    self.mounted = false;
                }
                std::fs::rename(&self.upper, staged.join("tree"))?;
                ObjectInfo {
                    id: id.to_string(),
                    parent: self.top.clone(),
                    stage: stage.to_string(),
                    layer: Layer::Overlay,
                    size: 0,
                    outputs: names,
                    created: 0,
                    changes: record.map(changes::Record::counts),
                    packages: packages.map(|(set, _)| set.clone()),
                    pulled: None,
                }
            }
            Handoff::Copy => {
                copy_tree(&self.tree, &staged.join("tree"))?;
                ObjectInfo {
                    id: id.to_string(),
                    parent: None,
                    stage: stage.to_string(),
                    layer: Layer::Full,
                    size: 0,
                    outputs: names,
                    created: 0,
                    changes: record.map(changes::Record::counts),
                    packages: packages.map(|(set, _)| set.clone()),
                    pulled: None,
                }
            }
        };
        let object = store.commit(&staged, info)?;
        self.top = Some(id.to_string());
        if self.handoff == Handoff::Overlay {
            if self.lowers == [self.dir.join("empty")] {
                // The empty base layer goes: the object now holds everything.
                self.lowers.clear();
            }
            self.lowers.insert(0, object.tree());
            let _ = super::remove_tree(&self.work);
        }
        self.pinned.insert(0, object);
        match self.handoff {
            Handoff::Overlay => self.mount_next()?,
            Handoff::Copy => {
                if let Some(old) = self.given.replace(self.pinned[0].tree())
                    && old.starts_with(&self.dir)
                {
                    let _ = super::remove_tree(&old);
                }
                self.since = mtime::mark();
            }
        }
        Ok(&self.pinned[0])
    }
}

/// The tree a stage was given, mounted read-only while it is compared.
struct GivenView {
    path: PathBuf,
    mounted: bool,
}

impl Drop for GivenView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = unmount(&self.path);
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.mounted {
            let _ = unmount(&self.tree);
        }
        for at in self.shifted.drain(..).rev() {
            let _ = unmount(&at);
        }
    }
}

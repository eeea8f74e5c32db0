# io.weldr.dnf's helper: dnf's own Python API for what its command line
# does not print. Run by the stage inside its container, with one JSON
# request on stdin and one JSON answer on stdout.
#
#   prefill: links each cached package file (by the sha256 the repository
#            metadata states) where dnf looks for downloaded packages, so
#            dnf checks it against that metadata and does not download it
#   report:  for each installed (name, epoch, version, release, arch), the
#            repository's package: URL, sha256, size
import hashlib
import json
import os
import sys
import urllib.request

import dnf
import hawkey


def base_for(req):
    # A configuration of its own: dnf's default one reads the build
    # machine's rpm database for the release.
    conf = dnf.conf.Conf()
    conf.cachedir = req["cachedir"]
    conf.logdir = req["cachedir"] + "-log"
    conf.persistdir = req["cachedir"] + "-state"
    conf.reposdir = []
    conf.substitutions["releasever"] = req["releasever"]
    conf.install_weak_deps = False
    conf.keepcache = True
    os.makedirs(conf.logdir, exist_ok=True)
    base = dnf.Base(conf)
    for repo in req["repos"]:
        r = base.repos.add_new_repo(repo["id"], conf, baseurl=[repo["baseurl"]])
        r.gpgcheck = repo["gpgcheck"]
        if repo.get("gpgkey"):
            r.gpgkey = [repo["gpgkey"]]
    base.fill_sack(load_system_repo=False)
    return base


def sha256_of(pkg):
    kind, digest = pkg.chksum
    if kind != hawkey.CHKSUM_SHA256:
        return None
    return digest.hex()


def prefill(req):
    base = base_for(req)
    linked = 0
    for pkg in base.sack.query().available():
        if pkg.repo.baseurl and pkg.repo.baseurl[0].startswith("file:"):
            continue  # dnf reads a local repository's files in place
        sha = sha256_of(pkg)
        if not sha:
            continue
        cached = os.path.join(req["cache"], sha)
        if not os.path.isfile(cached):
            continue
        dest = pkg.localPkg()
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.lexists(dest):
            os.symlink(cached, dest)
            linked += 1
    return {"linked": linked}


def report(req):
    base = base_for(req)
    query = base.sack.query().available()
    packages, missing = [], []
    for name, epoch, version, release, arch in req["installed"]:
        found = query.filter(name=name, epoch=int(epoch), version=version, release=release, arch=arch).run()
        found = [p for p in found if sha256_of(p)]
        if not found:
            missing.append(f"{name}-{epoch}:{version}-{release}.{arch}")
            continue
        p = found[0]
        evr = f"{version}-{release}" if int(epoch) == 0 else f"{epoch}:{version}-{release}"
        packages.append({
            "name": name, "version": evr, "architecture": arch,
            "url": p.remote_location(), "sha256": sha256_of(p), "size": p.downloadsize,
        })
    dates = []
    for repo in base.repos.iter_enabled():
        try:
            revision = str(repo._repo.getRevision() or "") or None
        except Exception:
            revision = None
        dates.append({"url": repo.baseurl[0], "date": revision})
    return {"packages": packages, "missing": missing, "repositories": dates}


def fetch(req):
    """Downloads (or copies, for file://) one package, checked by sha256."""
    url, dest, want = req["url"], req["dest"], req["sha256"]
    h = hashlib.sha256()
    tmp = dest + ".part"
    try:
        with urllib.request.urlopen(url, timeout=120) as src, open(tmp, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
    except Exception as e:  # the stage names the package
        if os.path.exists(tmp):
            os.unlink(tmp)
        return {"error": str(e)}
    if h.hexdigest() != want:
        os.unlink(tmp)
        return {"error": f"its sha256 is {h.hexdigest()}, not the lock's {want}"}
    os.rename(tmp, dest)
    return {"ok": True}


def main():
    req = json.load(sys.stdin)
    answer = {"prefill": prefill, "report": report, "fetch": fetch}[req["mode"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()

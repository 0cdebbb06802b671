"""The images the real node runs, built here because nothing can be pulled.

The shop's image is built from the project's ``Dockerfile`` by buildah (chroot isolation,
vfs storage: no daemon, no overlay-on-overlay), on a Debian base made with mmdebstrap, passed
as the Dockerfile's ``BASE``. Both land in the cache as OCI archives named by a hash of what
went into them, so an unchanged tree reuses its image and any edit to the code rebuilds it.
The Pod sandbox image is a single static binary, written as an OCI archive directly.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from kommerce.testbed.cache import REPO_ROOT, cache_dir, say, step

IMAGE_NAME = "kommerce.local/kommerce"
BASE_SUITE = "bookworm"
# What the Dockerfile's build needs from its base: Python 3.11 with pip, and useradd.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "passwd")
# The build context the Dockerfile copies from (see .dockerignore).
CONTEXT_PATHS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "kommerce",
                 "operators", "services")
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:16]


def _run(argv: list[str | Path], *, env: dict[str, str] | None = None,
         timeout: float = 1800) -> str:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed ({result.returncode}):\n"
                           f"{(result.stdout + result.stderr)[-4000:]}")
    return result.stdout


def _apt_sources() -> Path:
    """The host's own package sources: the chroot is built from the mirror the machine
    already uses."""
    if APT_SOURCES.exists():
        return APT_SOURCES
    return Path("/etc/apt/sources.list")


# -- the Debian base ---------------------------------------------------------------------

def base_rootfs_archive() -> Path:
    """A Debian root file system with Python and pip, as a tar (mmdebstrap, cached)."""
    sources = _apt_sources()
    key = _digest(BASE_SUITE.encode(), " ".join(BASE_PACKAGES).encode(), sources.read_bytes())
    target = cache_dir("image") / f"base-{key}.tar"
    if target.exists():
        return target
    partial = target.with_suffix(".partial")
    with step(f"Debian {BASE_SUITE} base for the image (mmdebstrap; first run only)"):
        _run(["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              # pip installs into the image's system Python; in an image that is the point.
              "--customize-hook=rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
              "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
              "--format=tar", BASE_SUITE, partial, sources])
        partial.rename(target)
    return target


# -- the shop's image --------------------------------------------------------------------

def _ignored_by_build(relative: str, patterns: list[str]) -> bool:
    return any(relative == pattern or relative.startswith(pattern.rstrip("/") + "/")
               or fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def _context_files() -> list[Path]:
    """What the build can copy: the context's files, less what .dockerignore keeps out."""
    listed = _run(["git", "-C", REPO_ROOT, "ls-files", "-co", "--exclude-standard", "--",
                   *CONTEXT_PATHS])
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return sorted(REPO_ROOT / line for line in listed.splitlines()
                  if (REPO_ROOT / line).is_file() and not _ignored_by_build(line, patterns))


def image_tag() -> str:
    """A hash of the Dockerfile, its build context and the base: the image's tag."""
    parts = [base_rootfs_archive().name.encode()]
    for path in _context_files():
        parts += [str(path.relative_to(REPO_ROOT)).encode(), path.read_bytes()]
    return _digest(*parts)


def image_reference() -> str:
    return f"{IMAGE_NAME}:{image_tag()}"


def kommerce_image_archive() -> Path:
    """The project's image as an OCI archive, built from the Dockerfile when the tree changed.

    The build uses the host's package-index settings and CA bundle (mounted read-only into
    the build's RUN steps), so the image's ``pip`` reaches the index the host reaches; neither
    ends up in the image.
    """
    tag = image_tag()
    target = cache_dir("image") / f"kommerce-{tag}.tar"
    if target.exists():
        say(f"image {IMAGE_NAME}:{tag}: cached")
        return target
    work = cache_dir("image", "buildah")
    storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"),
               "--storage-driver", "vfs"]
    env = {"BUILDAH_ISOLATION": "chroot", "STORAGE_DRIVER": "vfs"}
    base = f"{IMAGE_NAME}-base:{base_rootfs_archive().stem.removeprefix('base-')}"
    try:
        with step("import the Debian base into buildah"):
            container = _run(["buildah", *storage, "from", "scratch"], env=env).strip()
            _run(["buildah", *storage, "add", container, base_rootfs_archive(), "/"], env=env)
            _run(["buildah", *storage, "config", "--env",
                  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  container], env=env)
            _run(["buildah", *storage, "commit", "--rm", container, base], env=env)
        with step(f"build {IMAGE_NAME}:{tag} from the Dockerfile (buildah; on each change)"):
            mounts: list[str] = []
            for host_file in ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt"):
                if Path(host_file).exists():
                    mounts += ["--volume", f"{host_file}:{host_file}:ro"]
            _run(["buildah", *storage, "bud", "--isolation", "chroot", "--build-arg",
                  f"BASE={base}", *mounts, "--tag", f"{IMAGE_NAME}:{tag}",
                  "--file", REPO_ROOT / "Dockerfile", REPO_ROOT], env=env)
        with step("export the image as an OCI archive"):
            partial = target.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _run(["buildah", *storage, "push", f"{IMAGE_NAME}:{tag}",
                  f"oci-archive:{partial}:{IMAGE_NAME}:{tag}"], env=env)
            partial.rename(target)
    finally:
        # vfs keeps a full copy per layer; the archive is all later runs need.
        shutil.rmtree(work, ignore_errors=True)
    for old in cache_dir("image").glob("kommerce-*.tar"):
        if old != target:
            old.unlink()
    return target


# -- the Pod sandbox image ----------------------------------------------------------------

def _blob(layout: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    layout.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def pause_image_archive(pause_binary: Path, name: str) -> Path:
    """An OCI archive of one layer holding the sandbox binary as its entrypoint."""
    target = cache_dir("image") / f"pause-{_digest(pause_binary.read_bytes(), name.encode())}.tar"
    if target.exists():
        return target
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as layer:
        info = tarfile.TarInfo("pause")
        data = pause_binary.read_bytes()
        info.size, info.mode = len(data), 0o755
        layer.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(layer_tar.getvalue()).hexdigest()
    compressed = gzip.compress(layer_tar.getvalue(), mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, mode="w") as layout:
        layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      **_blob(layout, compressed)}
        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **_blob(layout, config)}
        manifest = json.dumps({"schemaVersion": 2,
                               "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config_desc, "layers": [layer_desc]}).encode()
        manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         **_blob(layout, manifest),
                         "annotations": {"io.containerd.image.name": name,
                                         "org.opencontainers.image.ref.name": name}}
        for member, text in (("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"})),
                             ("index.json", json.dumps({"schemaVersion": 2,
                                                        "manifests": [manifest_desc]}))):
            info = tarfile.TarInfo(member)
            info.size = len(text.encode())
            layout.addfile(info, io.BytesIO(text.encode()))
    partial.rename(target)
    return target

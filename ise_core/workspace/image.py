"""Build the workspace image offline: debootstrap a Debian root, import it, build the Dockerfile.

No image registry is reachable from the build machines, so ``ise-base`` is made from the Debian
mirror apt already uses (read from /etc/apt/sources.list*, never hard-coded), with every
package the workspace needs, and ``docker/workspace.Dockerfile`` adds the user on top without
network. The debootstrap result is cached as a tarball keyed by suite, mirror and packages, so
a rebuild on the same machine takes seconds. Needs root, ``debootstrap`` and an engine.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ise_core.errors import BackendError

BASE_TAG = "ise-base"
PACKAGES = ("python3", "nodejs", "git", "ca-certificates", "procps")
DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "workspace.Dockerfile"
_DEB_LINE = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$")


def host_suite() -> str:
    """The Debian codename of this machine (debootstrap builds the same release)."""
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        text = ""
    match = re.search(r"^VERSION_CODENAME=\"?(\w+)\"?$", text, re.MULTILINE)
    if not match:
        raise BackendError("cannot tell the Debian release from /etc/os-release")
    return match.group(1)


def apt_mirror(suite: str, sources_dir: Path = Path("/etc/apt")) -> str:
    """The archive URI apt is configured with for ``suite`` (main component)."""
    candidates: list[str] = []
    files = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".sources" or path.name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (key.strip().lower(), value.strip())
                    for key, _, value in (
                        line.partition(":") for line in stanza.splitlines() if ":" in line
                    )
                    if not key.strip().startswith("#")
                )
                if "deb" not in fields.get("types", "").split():
                    continue
                if suite in fields.get("suites", "").split():
                    candidates += fields.get("uris", "").split()
        elif path.suffix == ".list":
            for line in text.splitlines():
                match = _DEB_LINE.match(line.strip())
                if match and match.group(2) == suite:
                    candidates.append(match.group(1))
    if not candidates:
        raise BackendError(f"no apt source for suite {suite!r} under {sources_dir}")
    return candidates[0]


def rootfs_tarball(cache_dir: Path, *, suite: str | None = None, mirror: str | None = None) -> Path:
    """A tarball of a minimal Debian root with ``PACKAGES``; built once, then cached."""
    suite = suite or host_suite()
    mirror = mirror or apt_mirror(suite)
    key = hashlib.sha256(f"{suite}|{mirror}|{','.join(PACKAGES)}".encode()).hexdigest()[:12]
    tarball = cache_dir / f"ise-base-{suite}-{key}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None:
        raise BackendError("debootstrap is not installed (apt-get install -y debootstrap)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ise-rootfs-", dir=cache_dir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
        command += [suite, str(rootfs), mirror]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        finally:
            _unmount_below(rootfs)  # debootstrap can leave /proc mounted in the target
        if result.returncode != 0:
            raise BackendError(f"debootstrap failed: {(result.stderr or result.stdout)[-800:]}")
        partial = tarball.with_suffix(".tar.partial")
        # --one-file-system: never archive a pseudo filesystem still mounted inside.
        archive = ["tar", "--one-file-system", "-C", str(rootfs), "-cf", str(partial), "."]
        subprocess.run(archive, check=True, capture_output=True)
        os.replace(partial, tarball)
    return tarball


def _unmount_below(rootfs: Path) -> None:
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{rootfs}/")]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def build_workspace_image(
    client: Any, *, tag: str, cache_dir: Path, dockerfile: Path = DOCKERFILE
) -> str:
    """Make sure ``ise-base`` and ``tag`` exist in the engine behind ``client``; return ``tag``."""
    try:
        client.images.get(BASE_TAG)
    except Exception:
        tarball = rootfs_tarball(cache_dir)
        try:
            # From the file, not a stream: the SDK's streamed import sends a body the engine
            # rejects ("invalid byte in chunk length").
            client.api.import_image_from_file(str(tarball), repository=BASE_TAG, tag="latest")
        except Exception as exc:
            raise BackendError(f"importing {tarball} as {BASE_TAG} failed: {exc}") from None
    try:
        client.images.build(
            path=str(dockerfile.parent),
            dockerfile=dockerfile.name,
            tag=tag,
            network_mode="none",
            rm=True,
        )
    except Exception as exc:
        raise BackendError(f"building {tag} from {dockerfile} failed: {exc}") from None
    return tag

"""Bundle archives (.zip, .tar.gz) unpacked safely: plain files only, no path outside the target."""

from __future__ import annotations

import errno
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Optional

from byakugan.embedder.errors import ByakuganError


class BundleError(ByakuganError):
    """A bundle is missing, damaged, unsafe, or of a format this loader does not know."""


def archive_kind(path: Path) -> Optional[str]:
    name = path.name.lower()
    return "zip" if name.endswith(".zip") else "tar.gz" if name.endswith((".tar.gz", ".tgz")) else None


def safe_name(name: str, archive: Path) -> str:
    """The member's name as the bundle's files are named ("./model.onnx", as `tar -C DIR .` writes it, is
    "model.onnx"); BundleError when it would land outside the target."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name or not p.parts and name not in (".", "./"):
        raise BundleError(f"bundle {archive}: member {name!r} would escape the target directory; refusing it")
    return str(p)


def _no_manifest(archive: Path, names) -> None:
    """A bundle's folder packed whole (`zip -r b.zip bundle/`): say so, not just that the manifest is missing."""
    inner = sorted(n for n in names if PurePosixPath(n).name == MANIFEST)
    if MANIFEST not in names and inner:
        raise BundleError(f"bundle {archive}: no {MANIFEST} at the top of the archive, only {inner[0]}: pack the "
                          "bundle's files themselves, not the folder holding them")


MAX_MEMBER_BYTES = 2 * 2**30  # no file of a bundle is near this; a zip bomb's would be
# All the files together: the largest file allowed plus room for the model beside it. A per-member
# cap alone let a 3 MB zip list three 1 GiB members and fill the disk with them.
MAX_TOTAL_BYTES = MAX_MEMBER_BYTES + 2**29
MAX_MANIFEST_BYTES = 2**24  # it lists a handful of files; read into memory before anything is extracted
MANIFEST = "manifest.json"


def extract(archive: Path, kind: str, target: Path) -> None:
    """Extract the manifest and the plain files it lists, each under MAX_MEMBER_BYTES and all under
    MAX_TOTAL_BYTES as the archive declares them (zipfile stops a member at its declared size), whose paths
    stay inside target; anything else in the archive is left packed (the manifest check then
    refuses a bundle that lacks a listed file)."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as z:
                members = {safe_name(i.filename, archive): i for i in z.infolist()}
                for info in members.values():
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise BundleError(f"bundle {archive}: member {info.filename!r} is a symlink; refusing it")
                _no_manifest(archive, members)
                wanted = _wanted(archive, {n: i.file_size for n, i in members.items()},
                                 lambda: z.read(members[MANIFEST]) if MANIFEST in members else None)
                z.extractall(target, members=[members[n] for n in wanted])
        else:
            with tarfile.open(archive, "r:gz") as t:
                members = {safe_name(m.name, archive): m for m in t.getmembers()}
                for m in members.values():
                    if not (m.isfile() or m.isdir()):
                        raise BundleError(f"bundle {archive}: member {m.name!r} is not a plain file; refusing it")

                def manifest():
                    if MANIFEST not in members or not members[MANIFEST].isfile():
                        return None
                    return t.extractfile(members[MANIFEST]).read()

                _no_manifest(archive, members)
                wanted = _wanted(archive, {n: m.size for n, m in members.items() if m.isfile()}, manifest)
                t.extractall(target, members=[members[n] for n in wanted], filter="data")
    except OSError as exc:
        written = exc.filename is not None and Path(exc.filename).is_relative_to(target)  # not the bundle read
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or written and exc.errno in (errno.EACCES, errno.EPERM):
            raise BundleError(f"bundle {archive}: cannot be unpacked into {target.parent} ({exc.strerror}; "
                              "TMPDIR chooses that folder)") from None
        raise BundleError(f"bundle {archive}: not a readable {kind} archive ({exc})") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, NotImplementedError,
            ValueError, zlib.error) as exc:  # damaged, encrypted or oddly compressed members
        raise BundleError(f"bundle {archive}: not a readable {kind} archive ({exc})") from None


def _wanted(archive: Path, sizes: dict[str, int], read_manifest) -> list[str]:
    """The members to extract: the manifest and the files it lists that the archive holds."""
    import json

    if sizes.get(MANIFEST, 0) > MAX_MANIFEST_BYTES:
        raise BundleError(f"bundle {archive}: {MANIFEST} is over {MAX_MANIFEST_BYTES} bytes; refusing it")
    blob = read_manifest()
    if blob is None:
        return []  # the manifest check names what is missing
    try:
        listed = json.loads(blob).get("files", {})
    except (ValueError, AttributeError, RecursionError):
        return [MANIFEST]  # the manifest check reports it
    if not isinstance(listed, dict):
        raise BundleError(f"bundle {archive}: {MANIFEST} 'files' must map file names to SHA-256 digests")
    wanted = [MANIFEST] + [n for n in listed if isinstance(n, str) and n in sizes]
    for n in wanted:
        safe_name(n, archive)
        if sizes[n] > MAX_MEMBER_BYTES:
            raise BundleError(f"bundle {archive}: member {n!r} is {sizes[n]} bytes, over {MAX_MEMBER_BYTES}; refusing it")
    total = sum(sizes[n] for n in wanted)  # as the archive declares them: checked before anything is written
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"bundle {archive}: its files unpack to {total} bytes, over {MAX_TOTAL_BYTES} in all; refusing it")
    return wanted

"""Bundle archives (.zip, .tar.gz) unpacked safely: plain files only, no path outside the target."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from byakugan.embedder.errors import ByakuganError


class BundleError(ByakuganError):
    """A bundle is missing, damaged, unsafe, or of a format this loader does not know."""


def archive_kind(path: Path) -> Optional[str]:
    name = path.name.lower()
    return "zip" if name.endswith(".zip") else "tar.gz" if name.endswith((".tar.gz", ".tgz")) else None


def safe_name(name: str, archive: Path) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name or not p.parts:
        raise BundleError(f"bundle {archive}: member {name!r} would escape the target directory; refusing it")
    return name


def extract(archive: Path, kind: str, target: Path) -> None:
    """Extract only plain files whose paths stay inside target."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    safe_name(info.filename, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise BundleError(f"bundle {archive}: member {info.filename!r} is a symlink; refusing it")
                z.extractall(target)
        else:
            with tarfile.open(archive, "r:gz") as t:
                members = t.getmembers()
                for m in members:
                    safe_name(m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise BundleError(f"bundle {archive}: member {m.name!r} is not a plain file; refusing it")
                t.extractall(target, members=members, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"bundle {archive}: not a readable {kind} archive ({exc})") from None

"""The export folder's layout (``BASE/NAME/<version>/``): its file names and its version folders.

Why one module, here in the library: the exporter (serving/export.py) picks the next free version
and writes the files, the server loads the complete versions, and
:meth:`vreloc_tf.data.artifacts.Export.open` (what ``locate``, ``features --like`` and the pipeline
use) picks the newest; all of them must agree on what a version folder is and what is in it.
The file names are imported from here everywhere (serving/ included); nothing re-exports them.

A version folder is named by a base-10 integer that fits int64, read as TF Serving reads
it: ASCII digits only (no sign, no spaces), leading zeros allowed -- ``007`` is version 7.
So a version *number* and its *folder name* can differ: every caller goes through the
number -> folder mapping here and never rebuilds a path with ``str(version)``.
Names that are not versions (the exporter's hidden ``.tmp-*`` folders, stray files,
``-1``, ``+3``, ``1.5``, numbers above int64's maximum, which no response could carry)
are ignored. Two folders naming one version (``7`` and ``007``) are ambiguous: both
are ignored (the server warns once, naming both) rather than guessing which one the
operator meant.

A version is *complete* once ``saved_model.pb`` is in it (the exporter renames a
finished hidden ``.tmp-*`` folder into place); whether a copy into it has *finished*
is the server's question (serving/model_manager.py waits for the tree to stop changing).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from vreloc_tf.errors import InputError

# BASE/NAME/<version>/saved_model.pb + variables/ + assets.extra/...
SAVED_MODEL_FILE = "saved_model.pb"
VARIABLES_DIR = "variables"
ASSETS_EXTRA_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving replays these at load (assets.extra/)
METADATA_FILE = "vreloc.json"  # ExportInfo (vreloc_tf.data.artifacts): feature_dim, decode rule, spec (assets.extra/)
TEMP_PREFIX = ".tmp-"  # half-written versions: hidden, non-integer, ignored by servers

INT64_MAX = 2**63 - 1


def parse_version(name: str) -> Optional[int]:
    """The version a folder name stands for, or None: ASCII digits only, at most int64's maximum.

    ``str.isdigit`` alone also accepts '²' (which ``int`` refuses) and ``int`` alone accepts
    ' 7', '+3', '-1' and '1_0'; TF Serving serves none of those, nor a number its int64
    version field cannot hold.
    """
    if not (name.isascii() and name.isdigit()):
        return None
    version = int(name)
    return version if version <= INT64_MAX else None


def is_version_name(name: str) -> bool:
    """Whether ``name`` names a version folder (:func:`parse_version`)."""
    return parse_version(name) is not None


@dataclass
class Listing:
    """What a base path holds: ``folders`` maps each unambiguous version to its folder name;
    ``ignored`` maps a quoted name (for duplicates, the quoted names joined by " and ") to why it is
    not served; ``duplicates`` maps a version named by several folders to those folders."""

    folders: Dict[int, str] = field(default_factory=dict)
    ignored: Dict[str, str] = field(default_factory=dict)
    duplicates: Dict[int, List[str]] = field(default_factory=dict)


def read_base(base_path: str, complete_only: bool = True) -> Listing:
    """The version folders of ``base_path`` (only those holding ``saved_model.pb`` when ``complete_only``).

    Hidden names are skipped silently (the exporter's half-written ``.tmp-*`` folders);
    any other name that is not a version is reported in ``ignored``, as are versions
    named by more than one folder.
    """
    listing = Listing()
    try:
        names = sorted(os.listdir(base_path))
    except (FileNotFoundError, NotADirectoryError):
        return listing
    by_version: Dict[int, List[str]] = {}
    for name in names:
        if name.startswith("."):
            continue
        version = parse_version(name)
        if version is None:
            if name.isascii() and name.isdigit():
                listing.ignored[repr(name)] = f"above int64's maximum {INT64_MAX}, so not a version"
            else:
                listing.ignored[repr(name)] = "versions are folders named by a base-10 integer"
            continue
        by_version.setdefault(version, []).append(name)
    for version, folders in sorted(by_version.items()):
        if len(folders) > 1:
            listing.duplicates[version] = folders
            listing.ignored[" and ".join(repr(f) for f in folders)] = (
                f"all name version {version}; none is served until only one is left")
            continue
        folder = folders[0]
        if not complete_only or os.path.isfile(os.path.join(base_path, folder, SAVED_MODEL_FILE)):
            listing.folders[version] = folder
    return listing


def version_folders(base_path: str) -> Dict[int, str]:
    """{version: folder name} of the complete, unambiguous versions (``saved_model.pb`` in them)."""
    return read_base(base_path).folders


def existing_versions(base_path: str) -> List[int]:
    """Every version some folder names (complete or not, ambiguous or not), ascending: versions an export
    must not take."""
    listing = read_base(base_path, complete_only=False)
    return sorted(set(listing.folders) | set(listing.duplicates))


def list_versions(base_path: str) -> List[int]:
    """Complete, unambiguous versions, ascending (what a server loads and ``locate`` picks from)."""
    return sorted(version_folders(base_path))


def latest_version_dir(base_path: str) -> Optional[str]:
    """The folder of the highest complete version (``BASE/NAME/007`` for version 7 in ``007``), or None."""
    folders = version_folders(base_path)
    return os.path.join(base_path, folders[max(folders)]) if folders else None


def next_version(base_path: str) -> int:
    """The version number a new export takes: one past the highest version any folder names."""
    versions = existing_versions(base_path)
    if versions and versions[-1] >= INT64_MAX:
        raise InputError(f"{base_path}: version {versions[-1]} is int64's maximum; pass an explicit free --version")
    return versions[-1] + 1 if versions else 1

"""The version folders of a served model (``BASE/NAME/<version>/``): one home for listing them.

Why one module: the exporter picks the next free version, the server loads the complete
ones and ``locate`` picks the newest; all three must agree on what a version folder is.
A version is an integer-named folder; it is *complete* once ``saved_model.pb`` is in it
(the exporter renames a finished hidden ``.tmp-*`` folder into place, so servers never
see a half-written one).
"""
from __future__ import annotations

import os
from typing import List

from serving import signature as sig


def is_version_name(name: str) -> bool:
    """An integer folder name: ASCII digits only (``str.isdigit`` also accepts '²', which ``int`` refuses)."""
    return name.isascii() and name.isdigit()


def existing_versions(base_path: str) -> List[int]:
    """Integer version folders under BASE/NAME (complete or not), ascending."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(n) for n in os.listdir(base_path) if is_version_name(n))


def list_versions(base_path: str) -> List[int]:
    """Integer-named version folders that hold a complete SavedModel, ascending.

    Non-integer names (the exporter's hidden ``.tmp-*`` folders, stray files) are
    ignored, as TF Serving ignores them, so a half-written version is never seen.
    """
    try:
        names = os.listdir(base_path)
    except FileNotFoundError:
        return []
    versions = []
    for name in names:
        if is_version_name(name) and os.path.isfile(os.path.join(base_path, name, sig.SAVED_MODEL_FILE)):
            versions.append(int(name))
    return sorted(versions)


def next_version(base_path: str) -> int:
    """The version number a new export takes: one past the highest existing folder."""
    versions = existing_versions(base_path)
    return versions[-1] + 1 if versions else 1

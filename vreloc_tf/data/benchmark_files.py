"""Where the benchmark's split files are, and how to get them.

The ActivityNet video re-localization benchmark (Feng et al., ECCV 2018) is defined by five
small files in the public repository fengyang0317/video_reloc (folder ``data/``, MIT licence):
``train.json``, ``val.json``, ``test.json`` (the entries), ``length.json`` (every video's frame
and feature count) and ``perm.npy`` (the class permutation). ``vreloc synth --splits/--lengths``,
``vreloc ingest-activitynet``, ``vreloc quality``'s benchmark family and the tests read them.

Why pinned: the benchmark is these exact bytes. Each file is pinned to a commit of that
repository and to its sha256 (computed from the published copies); :func:`fetch` refuses
anything else, so a changed upstream file or a bad mirror cannot silently change the numbers.

Where they are looked for (:func:`find_splits`), first complete folder wins:
an explicit folder, ``../shared/data/activitynet_reloc`` beside the repository (developers, CI),
then the cache that ``vreloc benchmark fetch`` fills: ``$VRELOC_CACHE``, else
``$XDG_CACHE_HOME/vreloc``, else ``~/.cache/vreloc``; then ``benchmark/activitynet_reloc/``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

import vreloc_tf
from vreloc_tf import progress
from vreloc_tf.errors import InputError

LOG = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/fengyang0317/video_reloc"
SPLITS_COMMIT = "69f6bfb703ab692049a11083065b17eb15f2526c"    # data/train.json, val.json, test.json
GEOMETRY_COMMIT = "75a88551b22909f6dd59cae3fda3b12ceaa4760d"  # data/length.json, data/perm.npy
LICENSE_COMMIT = "7850c075a9d8ccaddc0392ce2070b54e0e894225"   # the repository's LICENSE (MIT)

CACHE_ENV = "VRELOC_CACHE"
CACHE_SUBDIR = os.path.join("benchmark", "activitynet_reloc")
FETCH_COMMAND = "vreloc benchmark fetch"
DEFAULT_TIMEOUT_S = 60.0
CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True)
class BenchmarkFile:
    """One pinned file: its name here, the commit and path upstream, and the bytes it must have."""

    name: str
    commit: str
    path: str
    sha256: str
    size: int
    required: bool = True  # needed by the commands; the LICENSE is fetched too, but nothing needs it

    def url(self, base_url: Optional[str] = None) -> str:
        return f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/{self.commit}/{self.path}"


FILES: Tuple[BenchmarkFile, ...] = (
    BenchmarkFile("train.json", SPLITS_COMMIT, "data/train.json",
                  "13ba2a6e18ba92347288531a1611fe3f80a32917e7f5629e2dc429b5e20dfa18", 637422),
    BenchmarkFile("val.json", SPLITS_COMMIT, "data/val.json",
                  "063a8d6053c2ba99f9a0e0ade23a661d53f8a0ac9ec48bc6e0807fc3255e7093", 69742),
    BenchmarkFile("test.json", SPLITS_COMMIT, "data/test.json",
                  "76c3b3e571ddeb59f5ae50677e5f90dda869ee9dd3e04543e1cc9578c8931d78", 81889),
    BenchmarkFile("length.json", GEOMETRY_COMMIT, "data/length.json",
                  "d516caf6ce00ad21f478d72e0bf53fe2524b4ecbdf7a18b612793afb1deaace0", 991898),
    BenchmarkFile("perm.npy", GEOMETRY_COMMIT, "data/perm.npy",
                  "7b285886e12f77b6d3fede14a44ead1cfc43c1821a8444ea6e88f6e3c49e1046", 1728),
    BenchmarkFile("LICENSE", LICENSE_COMMIT, "LICENSE",
                  "74955255c36d0741d11e7c07522151e3b25a452b9341e8cf4dea159118329e35", 1066, required=False),
)
REQUIRED: Tuple[BenchmarkFile, ...] = tuple(f for f in FILES if f.required)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(vreloc_tf.__file__)))  # the checkout, from the package


# --------------------------------------------------------------------------- where


def cache_dir() -> str:
    """The folder ``vreloc benchmark fetch`` fills by default (it need not exist)."""
    root = os.environ.get(CACHE_ENV, "").strip()
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        root = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "vreloc")
    return os.path.abspath(os.path.join(os.path.expanduser(root), CACHE_SUBDIR))


def shared_dir() -> str:
    """``../shared/data/activitynet_reloc`` beside the repository (a developer's or CI's copy)."""
    return os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "activitynet_reloc"))


def candidates(explicit: Optional[str] = None) -> List[str]:
    """The folders :func:`find_splits` looks in, in order (no duplicates)."""
    found: List[str] = []
    for folder in ([explicit] if explicit else []) + [shared_dir(), cache_dir()]:
        folder = os.path.abspath(os.path.expanduser(folder))
        if folder not in found:
            found.append(folder)
    return found


_HASHES: Dict[Tuple[str, int, int], str] = {}  # (real path, size, mtime_ns) -> sha256: each file hashed once


def _sha256(path: str) -> str:
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def problems(folder: str, files: Sequence[BenchmarkFile] = REQUIRED) -> List[str]:
    """What keeps ``folder`` from holding ``files`` as pinned ("" list: nothing)."""
    if not os.path.isdir(folder):
        return ["no such folder"]
    out = []
    for f in files:
        path = os.path.join(folder, f.name)
        if not os.path.isfile(path):
            out.append(f"{f.name} missing")
            continue
        try:
            digest = _sha256(path)
        except OSError as exc:
            out.append(f"{f.name} unreadable ({exc.strerror or exc})")
            continue
        if digest != f.sha256:
            out.append(f"{f.name} has sha256 {digest}, expected {f.sha256}")
    return out


def find_splits(explicit: Optional[str] = None) -> Optional[str]:
    """The first of :func:`candidates` holding every required file with its pinned sha256; None if none does."""
    for folder in candidates(explicit):
        if not problems(folder):
            return folder
    return None


def not_found_message(explicit: Optional[str] = None) -> str:
    """Why nothing was found, folder by folder, and the command that fixes it."""
    looked = "; ".join(f"{folder} ({', '.join(problems(folder))})" for folder in candidates(explicit))
    return (f"the benchmark files (Feng et al.'s train/val/test.json, length.json, perm.npy) are not in any of: "
            f"{looked}; run `{FETCH_COMMAND}` to download them")


def require_splits(flag: Optional[str] = None) -> str:
    """:func:`find_splits`, or an InputError naming ``flag`` (the option left out) and `vreloc benchmark fetch`."""
    folder = find_splits()
    if folder is None:
        message = not_found_message()
        if flag:
            message = f"{flag}: not given, and {message} (or give {flag})"
        raise InputError(message)
    return folder


# --------------------------------------------------------------------------- fetch


@dataclasses.dataclass
class FetchResult:
    folder: str
    downloaded: List[str]  # names fetched now
    kept: List[str]        # names already present with the pinned sha256
    unavailable: List[str]  # optional files (LICENSE) the server did not give; a warning, not an error

    def summary(self) -> str:
        parts = [f"{len(self.downloaded)} downloaded" + (f" ({', '.join(self.downloaded)})" if self.downloaded else ""),
                 f"{len(self.kept)} already there"]
        if self.unavailable:
            parts.append(f"not available: {', '.join(self.unavailable)}")
        return f"benchmark files in {self.folder}: " + "; ".join(parts)


def _download(f: BenchmarkFile, url: str, target: str, timeout: float) -> None:
    """``url`` -> ``target`` (a staging path); InputError naming the URL when the download fails or
    the bytes are not the pinned ones (``target`` is removed then)."""
    h = hashlib.sha256()
    try:
        with contextlib.ExitStack() as stack:
            response = stack.enter_context(urllib.request.urlopen(url, timeout=timeout))
            out = stack.enter_context(open(target, "wb"))
            bar = stack.enter_context(progress.bar(total=f.size, desc=f.name, unit="B"))
            for chunk in iter(lambda: response.read(CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise InputError(f"{f.name}: {url}: HTTP {exc.code} {exc.reason}; check --base-url "
                         f"(the mirror must serve <commit>/{f.path})") from None
    except (urllib.error.URLError, OSError) as exc:  # no network, refused, timed out
        reason = getattr(exc, "reason", None) or exc
        raise InputError(f"{f.name}: {url}: download failed ({reason}); check the network or --base-url") from None
    digest = h.hexdigest()
    if digest != f.sha256:
        os.remove(target)
        raise InputError(f"{f.name}: {url} gave sha256 {digest}, expected {f.sha256} (pinned at commit "
                         f"{f.commit}); not kept -- the server or mirror serves other bytes than the benchmark's")


def fetch(dest: Optional[str] = None, base_url: Optional[str] = None,
          timeout: float = DEFAULT_TIMEOUT_S) -> FetchResult:
    """Download the pinned files into ``dest`` (default :func:`cache_dir`); the result says what was done.

    Idempotent: a file already in ``dest`` with its pinned sha256 is not downloaded again. Atomic:
    every download goes to a staging folder beside ``dest`` and is checked against its sha256; only
    when every required file checked out are they moved into ``dest`` (one rename each), so a failed
    fetch leaves ``dest`` as it was. A mismatch is an InputError naming the file, both checksums and
    the URL. ``base_url`` replaces ``https://raw.githubusercontent.com/fengyang0317/video_reloc``
    (a mirror laid out like the repository: ``<base>/<commit>/<path>``; ``file://`` works too).
    """
    dest = os.path.abspath(os.path.expanduser(dest or cache_dir()))
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise InputError(f"--dest {dest}: exists and is not a folder")
    kept, todo = [], []
    for f in FILES:
        path = os.path.join(dest, f.name)
        (kept if os.path.isfile(path) and not problems(dest, [f]) else todo).append(f)
    if not todo:
        return FetchResult(dest, [], [f.name for f in kept], [])
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.fetch-", dir=parent)
    try:
        fetched, unavailable = [], []
        for f in todo:
            url = f.url(base_url)
            try:
                _download(f, url, os.path.join(staging, f.name), timeout)
            except InputError as exc:
                if f.required:
                    raise
                LOG.warning("benchmark fetch: %s (optional; the benchmark files do not need it)", exc)
                unavailable.append(f.name)
                continue
            LOG.info("benchmark fetch: %s (%d bytes, sha256 ok) from %s", f.name, f.size, url)
            fetched.append(f)
        os.makedirs(dest, exist_ok=True)
        for f in fetched:
            os.replace(os.path.join(staging, f.name), os.path.join(dest, f.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FetchResult(dest, [f.name for f in fetched], [f.name for f in kept], unavailable)

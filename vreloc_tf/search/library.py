"""The library index on disk: a FAISS file over window vectors, plus metadata and features in parts.

A library item is a *video* (one ``video_id``); its features are held as one or more *pieces*:
contiguous runs of the source video's feature steps (a data folder's records of the same video are
merged by the index job where their windows overlap or touch; windows that are apart stay separate
pieces of the same video). Search returns a video at most once; `index remove` removes every piece.

Why this layout: a library grows by appending videos and shrinks by removing some, and must scale to
millions of windows, so nothing is one big JSON and nothing is rewritten on append except the FAISS
file (which FAISS needs whole) and the small manifest::

    INDEX/manifest.json           format, re-localizer ("model" | "frame-level") and model, feature dim,
                                  the data's FeatureSpec ("features"), PCA, embedding spec, FAISS type and
                                  the FAISS file's size and sha256, the parts, counts (videos = distinct
                                  video ids, pieces, windows)
    INDEX/pca.npz                 a copy of the PCA the features were made with (same bytes; named by the
                                  original extension, e.g. pca.hdf5), recorded relative to INDEX
    INDEX/index.faiss             IndexIDMap2(IndexFlatIP) or IndexIVFFlat (inner product on unit vectors);
                                  a window's FAISS id is its global window number
    INDEX/parts/part-NNNNN/       one per append (a build or `vreloc index add`), NumPy files opened as
        videos.npy                memmaps: per piece (number, video_id, split, entry_index, label,
                                  window_start, length, feature_offset, first_window, windows, fps, ...)
        windows.npy               per window (id, piece number ("video"), start, end, scale)
        features.npy              float32 [steps, D]: every piece's features, for the re-localization
    INDEX/removed.npy             tombstones: global numbers of removed pieces (their windows are out of FAISS)

Format history: ``vreloc-search-index/1`` (one piece per data-folder record, counts named "videos",
PCA path as given on the command line, always a model) still opens and searches: it is read into
the ``/2`` shape in memory (its PCA path taken against the current folder, as it always was), and
written as ``/2`` by the next append or remove.

Opening checks every file against the manifest (sizes, the FAISS file's sha256, counts), so a
truncated or corrupt index is refused with one line (:class:`IndexError_`) and nothing is served from it.
The parts are not checksummed (they are large and memmapped) but their content is checked as each is
opened (:func:`check_part`): every float finite (one reduction per array, then the bad row located) and
every number that indexes another table inside it (piece numbers, window ids, feature offsets and
lengths, window spans, tombstones); a part tampered with at the same size is a
:class:`CorruptIndexError` (a ``DataError``) naming the file, the row and what is wrong.
Writes go to temporary names and are renamed; the manifest is written last. One writer at a time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from vreloc_tf.contract import FRAMES_PER_FEATURE
from vreloc_tf.errors import DataError, InputError
from vreloc_tf.data.feature_spec import FeatureMismatchError, FeatureSpec
from vreloc_tf.files import atomic_path, file_sha256, read_json, write_json_atomic
from vreloc_tf.finite import first_non_finite
from vreloc_tf.search.embedding import EmbeddingSpec

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its per-CPU-feature import attempts are noise
LOG = logging.getLogger(__name__)

FORMAT = "vreloc-search-index/2"
FORMAT_V1 = "vreloc-search-index/1"
MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
REMOVED_FILE = "removed.npy"
PARTS_DIR = "parts"
PCA_NAME = "pca"  # INDEX/pca.<extension of the original>
INDEX_TYPES = ("auto", "flat", "ivf")
RELOCALIZERS = ("model", "frame-level")  # what re-localizes the ANN candidates (vreloc_tf.search.relocalize)
IVF_MIN_WINDOWS = 200_000  # "auto": below this a flat scan is faster than IVF's probing (and exact)
DEFAULT_NPROBE = 16

VIDEO_FIELDS = [("number", "<i8"), ("entry_index", "<i8"), ("label", "<i8"), ("window_start", "<i8"),
                ("length", "<i8"), ("feature_offset", "<i8"), ("first_window", "<i8"), ("windows", "<i8"),
                ("fps", "<f4"), ("frames_per_feature", "<i4")]
WINDOW_DTYPE = np.dtype([("id", "<i8"), ("video", "<i8"), ("start", "<i4"), ("end", "<i4"), ("scale", "<i4")])


class IndexError_(InputError):
    """A missing, corrupt or mismatched library index; the message names the file and what to do."""


class CorruptIndexError(IndexError_, DataError):
    """An index file whose content is impossible (non-finite features, a number outside the table it
    indexes): the message names the file, the row and what is wrong; nothing is served from it."""


def _first_non_finite(values: np.ndarray) -> Optional[int]:
    """Row of the first NaN/inf in ``values`` (None: all finite; vreloc_tf/finite.py)."""
    where = first_non_finite(values)
    return None if where is None else where[0]


def _first_outside(values: np.ndarray, low, high) -> Optional[int]:
    """Row of the first value outside ``[low, high)`` (bounds scalar or per row); None if all inside."""
    bad = (values < low) | (values >= high)
    return int(np.argmax(bad)) if bad.any() else None


def check_part(folder: str, part: dict, table: np.ndarray, windows: np.ndarray, features: np.ndarray) -> None:
    """The content of one part (its shapes already match the manifest): :class:`CorruptIndexError`
    naming the file and row where a float is not finite or a number indexes outside its table."""
    videos_file, windows_file, features_file = (os.path.join(folder, f"{n}.npy")
                                                for n in ("videos", "windows", "features"))

    def refuse(file, what):
        raise CorruptIndexError(f"{file}: {what}; the file was altered after the index was written, "
                                f"rebuild the index")

    for file, array, fields in ((videos_file, table, [n for n, _ in VIDEO_FIELDS] + ["video_id", "split"]),
                                (windows_file, windows, list(WINDOW_DTYPE.names))):
        missing = [f for f in fields if f not in (array.dtype.names or ())]
        if missing:
            refuse(file, f"no field {missing[0]!r} (dtype {array.dtype})")
    if features.dtype.kind != "f":
        refuse(features_file, f"dtype {features.dtype}, expected float32 features")
    row = _first_non_finite(features)
    if row is not None:
        refuse(features_file, f"non-finite feature (NaN or inf) in step {row}")
    row = _first_non_finite(table["fps"])
    if row is not None:
        refuse(videos_file, f"row {row}: non-finite fps {float(table['fps'][row])}")

    first_piece, n_pieces = int(part["first_piece"]), len(table)
    first_window, n_windows, steps = int(part["first_window"]), len(windows), len(features)
    numbers = np.asarray(table["number"])
    row = _first_outside(numbers - np.arange(first_piece, first_piece + n_pieces), 0, 1)
    if row is not None:
        refuse(videos_file, f"row {row}: piece number {int(numbers[row])}, expected {first_piece + row} "
                            f"(this part holds pieces {first_piece}..{first_piece + n_pieces - 1})")
    offset, length = np.asarray(table["feature_offset"]), np.asarray(table["length"])
    row = _first_outside(offset, 0, steps)
    row = row if row is not None else _first_outside(length, 1, steps - offset + 1)
    if row is not None:
        refuse(videos_file, f"row {row}: features [{int(offset[row])}, {int(offset[row]) + int(length[row])}) "
                            f"outside the part's {steps} feature steps")
    starts, counts = np.asarray(table["first_window"]), np.asarray(table["windows"])
    row = _first_outside(starts, first_window, first_window + n_windows + 1)
    row = row if row is not None else _first_outside(counts, 0, first_window + n_windows - starts + 1)
    if row is not None:
        refuse(videos_file, f"row {row}: windows [{int(starts[row])}, {int(starts[row]) + int(counts[row])}) outside "
                            f"this part's windows {first_window}..{first_window + n_windows - 1}")

    ids = np.asarray(windows["id"])
    row = _first_outside(ids - np.arange(first_window, first_window + n_windows), 0, 1)
    if row is not None:
        refuse(windows_file, f"row {row}: window id {int(ids[row])}, expected {first_window + row}")
    owner = np.asarray(windows["video"])
    row = _first_outside(owner, first_piece, first_piece + n_pieces)
    if row is not None:
        refuse(windows_file, f"row {row}: piece number {int(owner[row])} outside the part's pieces "
                             f"{first_piece}..{first_piece + n_pieces - 1}")
    start, end = np.asarray(windows["start"]), np.asarray(windows["end"])
    row = _first_outside(start, 0, end)
    row = row if row is not None else _first_outside(end, start + 1, length[owner - first_piece] + 1)
    if row is not None:
        refuse(windows_file, f"row {row}: window [{int(start[row])}, {int(end[row])}) outside its piece "
                             f"{int(owner[row])} of {int(length[owner[row] - first_piece])} steps")


@dataclasses.dataclass
class VideoEmbedding:
    """One piece of a library video, embedded: what the Beam job hands to :meth:`LibraryIndex.append`.

    ``split``/``entry_index``/``label``: of the record the piece starts with (its *base*); ``merged``:
    (split, entry_index) of the other records of the same video merged into it (the job's counts).
    ``label`` is -1 where the merged records' labels differ.
    """

    video_id: str
    split: str
    entry_index: int
    label: int
    window_start: int  # where the piece's features start in the source video (feature steps)
    features: np.ndarray  # float32 [L, D]
    spans: np.ndarray  # int32 [N, 3] (start, end, scale), relative to the piece
    vectors: np.ndarray  # float32 [N, E]
    fps: float = -1.0
    frames_per_feature: int = FRAMES_PER_FEATURE
    merged: Tuple[Tuple[str, int], ...] = ()

    @property
    def source_span(self) -> Tuple[int, int]:
        """[start, end) of the piece in the source video's feature steps."""
        return int(self.window_start), int(self.window_start) + len(self.features)

    def to_bytes(self) -> bytes:
        """NumPy .npz bytes (no pickle): how the Beam job stages embedded pieces."""
        import io
        import json

        meta = json.dumps({"video_id": self.video_id, "split": self.split, "entry_index": int(self.entry_index),
                           "label": int(self.label), "window_start": int(self.window_start),
                           "fps": float(self.fps), "frames_per_feature": int(self.frames_per_feature),
                           "merged": [[str(s), int(e)] for s, e in self.merged]})
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(meta), features=np.asarray(self.features, np.float32),
                 spans=np.asarray(self.spans, np.int32), vectors=np.asarray(self.vectors, np.float32))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "VideoEmbedding":
        import io
        import json

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            meta["merged"] = tuple((str(s), int(e)) for s, e in meta.get("merged", ()))
            return cls(features=z["features"], spans=z["spans"], vectors=z["vectors"], **meta)


@dataclasses.dataclass(frozen=True)
class Video:
    """One piece of a library video: its metadata and (memmapped) features (``number``: the piece's)."""

    number: int
    video_id: str
    split: str
    entry_index: int
    label: int
    window_start: int
    fps: float
    frames_per_feature: int
    features: np.ndarray

    def seconds(self, index: int) -> Optional[float]:
        """Seconds of a source-video feature index, None where the frame rate is unknown."""
        return round(index * self.frames_per_feature / self.fps, 3) if self.fps > 0 else None


@contextlib.contextmanager
def one_faiss_thread():
    """FAISS on one thread for the duration: for a single query, OpenMP's fan-out costs more than the
    scan itself (measured on 28k windows, 2 busy cores: 24 ms with 2 threads, 0.33 ms with 1)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _save_npy(path: str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def _is_local_relative(path: Optional[str]) -> bool:
    return bool(path) and "://" not in path and not os.path.isabs(path)


def check_pca_file(source: Optional[str], features: Optional[FeatureSpec]) -> Optional[str]:
    """The sha256 of a local PCA file (None: none given, remote, or missing); FeatureMismatchError where
    it differs from the sha256 the data's spec recorded (the features were not made with this file)."""
    if not source or "://" in source or not os.path.isfile(source):
        return None
    sha = file_sha256(source)
    recorded = features.pca_sha256 if features else None
    if recorded and recorded != sha:
        raise FeatureMismatchError(f"the PCA {source} has sha256 {sha[:12]} but the data's features were made "
                                   f"with a PCA of sha256 {recorded[:12]}; restore that file or re-extract "
                                   f"the features")
    return sha


def _copy_pca(index_dir: str, source: Optional[str], features: Optional[FeatureSpec]):
    """(manifest "pca" entry, spec with the PCA path the index records): the PCA file copied into the
    index folder as ``pca<ext>`` (same bytes), so the index works from any folder and after the data moves.

    A remote PCA (``gs://...``) is recorded as given; a local one that is missing is recorded by its
    absolute path, with a warning (a video query then needs ``--pca``). A PCA whose bytes differ from
    the sha256 the data's spec recorded is refused (:func:`check_pca_file`).
    """
    if not source:
        return None, features
    recorded_sha = features.pca_sha256 if features else None
    if "://" in source:
        return {"file": source, "sha256": recorded_sha, "source": source}, features
    source = os.path.abspath(source)
    sha = check_pca_file(source, features)
    if sha is None:
        LOG.warning("the PCA %s of the data is missing: the index records its path; a video query will "
                    "need --pca", source)
        return ({"file": source, "sha256": recorded_sha, "source": source},
                features.with_pca_path(source) if features else None)
    name = PCA_NAME + (os.path.splitext(source)[1] or ".npz")
    dest = os.path.join(index_dir, name)
    if not (os.path.exists(dest) and os.path.samefile(source, dest)):
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
    return {"file": name, "sha256": sha, "source": source}, (features.with_pca_path(name) if features else None)


def _upgrade_v1(manifest: dict) -> dict:
    """A ``/1`` manifest in the ``/2`` shape (in memory; see the module docstring)."""
    m = dict(manifest)
    m["format"], m["upgraded_from"] = FORMAT, FORMAT_V1
    for old, new in (("videos", "pieces"), ("removed_videos", "removed_pieces"), ("live_videos", "live_pieces")):
        m[new] = m.pop(old)
    m["live_videos"] = None  # distinct video ids: counted once the parts are open
    m["parts"] = [{"name": p["name"], "pieces": p["videos"], "windows": p["windows"], "steps": p["steps"],
                   "first_piece": p["first_video"], "first_window": p["first_window"]} for p in m["parts"]]
    m.setdefault("relocalizer", "model")  # /1 indexes were always built with a model
    m.setdefault("features", None)
    pca = m.get("pca")
    if pca and _is_local_relative(pca.get("file")):  # /1 recorded it as given: relative to the current folder
        m["pca"] = {**pca, "file": os.path.abspath(pca["file"])}
    return m


def is_index_folder(path: str) -> bool:
    """Whether ``path`` holds a library index's manifest (a data folder's manifest.json has another format)."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        return False
    content = read_json(manifest_path, "manifest")
    return isinstance(content, dict) and str(content.get("format", "")).startswith("vreloc-search-index")


class Index:
    """A library index folder as an artifact: its path and its manifest, checked and (``/1``) upgraded
    in memory, without FAISS or the parts (:meth:`LibraryIndex.load` opens those).

    Why: this module owns ``INDEX/manifest.json``; :meth:`open` is its one reader and
    :meth:`write_manifest` its one writer, so the index job (pipeline/build_index.py), search, the
    server and the commands hand each other an ``Index`` instead of a folder name to open again.
    """

    def __init__(self, path: str, manifest: dict, format_on_disk: str = FORMAT):
        self.path, self.manifest = path, manifest
        self.format_on_disk = format_on_disk  # what the manifest file says (a /1 index until its next write)

    @classmethod
    def open(cls, path: str) -> "Index":
        """The index in ``path`` (its manifest only); :class:`IndexError_` naming the folder or file otherwise."""
        manifest_path = os.path.join(path, MANIFEST)
        if not os.path.isdir(path):
            raise IndexError_(f"--index {path}: no such folder; build one with `vreloc index build`")
        if not os.path.exists(manifest_path):
            raise IndexError_(f"--index {path}: not a library index (no {MANIFEST}); build one with "
                              f"`vreloc index build`")
        manifest = read_json(manifest_path, "index manifest")
        found = manifest.get("format") if isinstance(manifest, dict) else None
        if found not in (FORMAT, FORMAT_V1):
            raise IndexError_(f"{manifest_path}: not a {FORMAT} manifest (format {found!r}); rebuild the index")
        if found == FORMAT_V1:
            manifest = _upgrade_v1(manifest)
        return cls(os.path.abspath(path), manifest, found)

    def write_manifest(self) -> str:
        """Write ``INDEX/manifest.json`` (atomically, as the ``/2`` format): the last step of every write."""
        path = write_json_atomic(os.path.join(self.path, MANIFEST), self.manifest)
        self.format_on_disk = FORMAT
        return path

    # ------------------------------------------------------------------ what it holds (the manifest's word)

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["feature_dim"])

    @property
    def embedding(self) -> EmbeddingSpec:
        return EmbeddingSpec.from_json(self.manifest["embedding"])

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embedding"]["dim"])

    @property
    def relocalizer(self) -> str:
        """What the index was built to re-localize with: "model" (its run) or "frame-level" (no model)."""
        return str(self.manifest.get("relocalizer") or "model")

    @property
    def model_run(self) -> Optional[str]:
        """The run folder the index was built with, if any."""
        return (self.manifest.get("model") or {}).get("run")

    @property
    def feature_spec(self) -> Optional[FeatureSpec]:
        """What made the indexed features (the data's spec), its PCA path resolved against the index
        folder; None for indexes of data that recorded no spec (and ``/1`` indexes)."""
        spec = FeatureSpec.of_manifest(self.manifest, os.path.join(self.path, MANIFEST))
        return spec.with_pca_path(spec.resolved_pca(self.path)) if spec else None

    @property
    def pca_file(self) -> Optional[str]:
        """The PCA of the indexed features (the index's own copy where it holds one), or None."""
        path = (self.manifest.get("pca") or {}).get("file")
        return os.path.normpath(os.path.join(self.path, path)) if _is_local_relative(path) else path


class LibraryIndex(Index):
    """An open library index (see the module docstring): :meth:`create` one, or :meth:`load` an
    :class:`Index` (:meth:`open` a folder: both)."""

    def __init__(self, path: str, manifest: dict, faiss_index, parts: List[dict], removed: np.ndarray):
        super().__init__(path, manifest)
        self.faiss, self.parts = faiss_index, parts
        self.removed = removed
        self._first_windows = np.array([p["first_window"] for p in parts], np.int64)
        self._first_pieces = np.array([p["first_piece"] for p in parts], np.int64)
        if manifest.get("live_videos") is None:  # a /1 index: count the distinct live video ids once
            manifest["live_videos"] = len(self.live_video_ids())

    # ------------------------------------------------------------------ creating and opening

    @classmethod
    def create(cls, path: str, feature_dim: int, spec: EmbeddingSpec, embed_dim: int, model: Optional[dict],
               index_type: str = "auto", nprobe: int = DEFAULT_NPROBE, overwrite: bool = False,
               features: Optional[FeatureSpec] = None, pca_file: Optional[str] = None,
               relocalizer: Optional[str] = None) -> "LibraryIndex":
        """An empty index in ``path`` (refuses a folder holding one unless ``overwrite``).

        ``model``: what the manifest records of the run that re-localizes (None: no model);
        ``relocalizer``: "model" or "frame-level" (default: "model" where ``model`` names a run);
        ``features``: the data's FeatureSpec; ``pca_file``: the PCA to copy into the index
        (default: the spec's).
        """
        if index_type not in INDEX_TYPES:
            raise InputError(f"--index-type {index_type!r}: expected one of {', '.join(INDEX_TYPES)}")
        relocalizer = relocalizer or ("model" if (model or {}).get("run") else "frame-level")
        if relocalizer not in RELOCALIZERS:
            raise InputError(f"re-localizer {relocalizer!r}: expected one of {', '.join(RELOCALIZERS)}")
        if features is not None and features.feature_dim != int(feature_dim):
            raise FeatureMismatchError(f"the feature spec says {features.feature_dim}-d features but the index "
                                       f"is for {feature_dim}-d features")
        manifest_path = os.path.join(path, MANIFEST)
        if os.path.exists(manifest_path) and not overwrite:
            raise IndexError_(f"{path}: already holds an index; add videos with `vreloc index add`, "
                              f"or rebuild with --overwrite")
        if os.path.isdir(path) and overwrite:
            old_pca = None
            if os.path.exists(manifest_path):
                with contextlib.suppress(InputError, AttributeError, TypeError):
                    old_pca = (read_json(manifest_path, "index manifest").get("pca") or {}).get("file")
            for name in (FAISS_FILE, REMOVED_FILE, MANIFEST) + ((old_pca,) if _is_local_relative(old_pca) else ()):
                if os.path.exists(os.path.join(path, name)):
                    os.remove(os.path.join(path, name))
            shutil.rmtree(os.path.join(path, PARTS_DIR), ignore_errors=True)
        os.makedirs(os.path.join(path, PARTS_DIR), exist_ok=True)
        pca, features = _copy_pca(path, pca_file or (features.pca_file if features else None), features)
        manifest = {
            "format": FORMAT, "relocalizer": relocalizer, "model": model, "feature_dim": int(feature_dim),
            "features": features.to_json() if features else None, "pca": pca,
            "embedding": {**spec.to_json(), "dim": int(embed_dim)},
            "index": {"type": index_type, "file": FAISS_FILE, "bytes": 0, "sha256": None, "ntotal": 0,
                      "nprobe": int(nprobe)},
            "parts": [], "pieces": 0, "windows": 0, "removed_pieces": 0,
            "live_videos": 0, "live_pieces": 0, "live_windows": 0,
        }
        index = cls(os.path.abspath(path), manifest, None, [], np.zeros(0, np.int64))
        _save_npy(os.path.join(path, REMOVED_FILE), index.removed)
        index.write_manifest()
        return index

    @classmethod
    def open(cls, path: str) -> "LibraryIndex":
        """Open and check an index folder (:meth:`Index.open`, then :meth:`load`)."""
        return cls.load(Index.open(path))

    @classmethod
    def load(cls, index: Index) -> "LibraryIndex":
        """FAISS and the parts of an opened :class:`Index`, every file checked against its manifest;
        :class:`IndexError_` naming the file at fault otherwise."""
        import faiss

        path, manifest = index.path, index.manifest
        info = manifest["index"]
        faiss_index = None
        faiss_path = os.path.join(path, info["file"])
        if info["ntotal"] or info["sha256"]:
            if not os.path.exists(faiss_path):
                raise IndexError_(f"{faiss_path}: missing; the index is incomplete, rebuild it")
            size = os.path.getsize(faiss_path)
            if size != info["bytes"]:
                raise IndexError_(f"{faiss_path}: {size} bytes but the manifest says {info['bytes']} "
                                  f"(truncated or overwritten); rebuild the index")
            if file_sha256(faiss_path) != info["sha256"]:
                raise IndexError_(f"{faiss_path}: checksum differs from the manifest's (corrupt); rebuild the index")
            try:
                faiss_index = faiss.read_index(faiss_path)
            except RuntimeError as exc:
                raise IndexError_(f"{faiss_path}: FAISS cannot read it ({str(exc).splitlines()[0]}); "
                                  f"rebuild the index") from None
            if faiss_index.ntotal != info["ntotal"] or faiss_index.d != manifest["embedding"]["dim"]:
                raise IndexError_(f"{faiss_path}: holds {faiss_index.ntotal} vectors of dim {faiss_index.d}, "
                                  f"the manifest says {info['ntotal']} of dim {manifest['embedding']['dim']}; "
                                  f"rebuild the index")
        parts = [cls._open_part(path, p, manifest["feature_dim"]) for p in manifest["parts"]]
        removed_path = os.path.join(path, REMOVED_FILE)
        try:
            removed = np.load(removed_path)
        except (OSError, ValueError) as exc:
            raise IndexError_(f"{removed_path}: unreadable ({exc}); rebuild the index") from None
        if len(removed) != manifest["removed_pieces"]:
            raise IndexError_(f"{removed_path}: {len(removed)} removed pieces, the manifest says "
                              f"{manifest['removed_pieces']}; rebuild the index")
        if removed.dtype.kind not in "iu":
            raise CorruptIndexError(f"{removed_path}: dtype {removed.dtype}, expected piece numbers; rebuild the index")
        row = _first_outside(removed, 0, int(manifest["pieces"]))
        if row is not None:
            raise CorruptIndexError(f"{removed_path}: row {row}: piece number {int(removed[row])} outside the index's "
                                    f"pieces 0..{int(manifest['pieces']) - 1}; rebuild the index")
        loaded = cls(path, manifest, faiss_index, parts, removed.astype(np.int64))
        loaded.format_on_disk = index.format_on_disk
        return loaded

    @staticmethod
    def _open_part(path: str, part: dict, feature_dim: int) -> dict:
        folder = os.path.join(path, PARTS_DIR, part["name"])
        arrays = {}
        for name, shape in (("videos", (part["pieces"],)), ("windows", (part["windows"],)),
                            ("features", (part["steps"], feature_dim))):
            file = os.path.join(folder, f"{name}.npy")
            try:
                arrays[name] = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise IndexError_(f"{file}: unreadable ({str(exc).splitlines()[0]}); the part is truncated or "
                                  f"missing, rebuild the index") from None
            if tuple(arrays[name].shape) != tuple(shape):
                raise IndexError_(f"{file}: shape {tuple(arrays[name].shape)}, the manifest says {tuple(shape)}; "
                                  f"rebuild the index")
        check_part(folder, part, arrays["videos"], arrays["windows"], arrays["features"])
        return {**part, "table": arrays["videos"], "window_table": arrays["windows"], "features": arrays["features"]}

    # ------------------------------------------------------------------ what it holds

    @property
    def live_videos(self) -> int:
        """Distinct video ids with at least one live piece."""
        return int(self.manifest["live_videos"])

    @property
    def live_pieces(self) -> int:
        return int(self.manifest["live_pieces"])

    @property
    def live_windows(self) -> int:
        return int(self.manifest["live_windows"])

    def index_bytes(self) -> int:
        """Bytes on disk of the whole index folder (FAISS file, parts, manifest)."""
        total = 0
        for root, _, files in os.walk(self.path):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        return total

    def _row(self, number: int):
        i = int(np.searchsorted(self._first_pieces, number, side="right")) - 1
        part = self.parts[i]
        return part, part["table"][int(number - part["first_piece"])]

    def video(self, number: int) -> Video:
        """The piece ``number`` (its metadata and memmapped features)."""
        part, v = self._row(number)
        off, length = int(v["feature_offset"]), int(v["length"])
        return Video(int(v["number"]), str(v["video_id"]), str(v["split"]), int(v["entry_index"]), int(v["label"]),
                     int(v["window_start"]), float(v["fps"]), int(v["frames_per_feature"]),
                     part["features"][off:off + length])

    def video_id_of(self, number: int) -> str:
        return str(self._row(number)[1]["video_id"])

    def _live_rows(self, part: dict) -> np.ndarray:
        return ~np.isin(np.asarray(part["table"]["number"]), self.removed)

    def live_piece_numbers(self) -> np.ndarray:
        numbers = [np.asarray(p["table"]["number"])[self._live_rows(p)] for p in self.parts]
        return np.concatenate(numbers) if numbers else np.zeros(0, np.int64)

    def windows(self, ids: np.ndarray) -> np.ndarray:
        """WINDOW_DTYPE rows of the given window ids (column ``video``: the piece number)."""
        ids = np.asarray(ids, np.int64)
        out = np.empty(len(ids), WINDOW_DTYPE)
        which = np.searchsorted(self._first_windows, ids, side="right") - 1
        for i, (wid, p) in enumerate(zip(ids, which)):
            out[i] = self.parts[p]["window_table"][wid - self.parts[p]["first_window"]]
        return out

    def piece_numbers_of(self, video_ids: Sequence[str]) -> np.ndarray:
        """Global numbers of the live pieces of the videos ``video_ids``."""
        wanted = np.array(sorted(set(video_ids)), dtype=str)
        found = []
        for p in self.parts:
            vids = np.asarray(p["table"]["video_id"]).astype(str)
            found.append(np.asarray(p["table"]["number"])[np.isin(vids, wanted) & self._live_rows(p)])
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def live_video_ids(self, among: Optional[Sequence[str]] = None) -> Set[str]:
        """The distinct video ids with a live piece (only those in ``among``, if given)."""
        wanted = None if among is None else np.array(sorted(set(among)), dtype=str)
        ids: Set[str] = set()
        for p in self.parts:
            vids = np.asarray(p["table"]["video_id"]).astype(str)[self._live_rows(p)]
            if wanted is not None:
                vids = vids[np.isin(vids, wanted)]
            ids.update(np.unique(vids).tolist())
        return ids

    def live_spans(self, video_ids: Sequence[str]) -> Dict[str, List[Tuple[int, int]]]:
        """{video_id: [(start, end), ...]}: the source-video steps the live pieces of ``video_ids`` cover."""
        out: Dict[str, List[Tuple[int, int]]] = {}
        for number in self.piece_numbers_of(video_ids):
            _, v = self._row(int(number))
            start = int(v["window_start"])
            out.setdefault(str(v["video_id"]), []).append((start, start + int(v["length"])))
        return out

    def check_query_dim(self, vector: np.ndarray) -> None:
        if vector.shape[-1] != self.embed_dim:
            raise IndexError_(f"the query vector is {vector.shape[-1]}-d but the index {self.path} holds "
                              f"{self.embed_dim}-d vectors")

    # ------------------------------------------------------------------ nearest windows

    def nearest_windows(self, vector: np.ndarray, k: int,
                        exclude_pieces: Sequence[int] = ()) -> Tuple[np.ndarray, np.ndarray]:
        """(window ids, cosine similarities) of the ``k`` nearest live windows, best first,
        skipping windows of the piece numbers in ``exclude_pieces``."""
        vector = np.asarray(vector, np.float32).reshape(1, -1)
        self.check_query_dim(vector)
        if self.faiss is None or self.live_windows == 0:
            raise IndexError_(f"the index {self.path} holds no videos; add some with `vreloc index add`")
        exclude = np.asarray(list(exclude_pieces), np.int64)
        self._set_nprobe()
        fetch = min(self.faiss.ntotal, k + (0 if exclude.size == 0 else 4 * k))
        while True:
            with one_faiss_thread():
                sims, ids = self.faiss.search(vector, fetch)
            sims, ids = sims[0], ids[0]
            keep = ids >= 0
            sims, ids = sims[keep], ids[keep]
            if exclude.size:
                owners = self.windows(ids)["video"]
                keep = ~np.isin(owners, exclude)
                sims, ids = sims[keep], ids[keep]
            if len(ids) >= k or fetch >= self.faiss.ntotal:
                return ids[:k], sims[:k]
            fetch = min(self.faiss.ntotal, fetch * 4)

    def _set_nprobe(self) -> None:
        import faiss

        if self.manifest["index"].get("built_type") == "ivf":
            faiss.extract_index_ivf(self.faiss).nprobe = int(self.manifest["index"]["nprobe"])

    # ------------------------------------------------------------------ append and remove

    def append(self, pieces: Sequence[VideoEmbedding]) -> dict:
        """Add pieces as one new part; returns the part's manifest entry. The FAISS file is rewritten,
        nothing else is. A piece of a video already in the index becomes one more piece of it (the
        caller keeps pieces from overlapping: pipeline.build_index dead-letters those)."""
        if not pieces:
            return {}
        m = self.manifest
        for v in pieces:
            if v.features.ndim != 2 or v.features.shape[1] != self.feature_dim:
                raise IndexError_(f"video {v.video_id}: {tuple(v.features.shape)} features, the index holds "
                                  f"{self.feature_dim}-d features")
            if v.vectors.shape[1] != self.embed_dim:
                raise IndexError_(f"video {v.video_id}: {v.vectors.shape[1]}-d window vectors, the index holds "
                                  f"{self.embed_dim}-d vectors")
        new_ids = {v.video_id for v in pieces}
        new_videos = len(new_ids - self.live_video_ids(among=new_ids))
        first_piece, first_window = int(m["pieces"]), int(m["windows"])
        name = f"part-{len(m['parts']):05d}"
        folder = os.path.join(self.path, PARTS_DIR, name)
        os.makedirs(folder, exist_ok=True)
        id_width = max(len(v.video_id) for v in pieces)
        split_width = max(max(len(v.split) for v in pieces), 1)
        vdt = np.dtype([VIDEO_FIELDS[0], ("video_id", f"<U{id_width}"), ("split", f"<U{split_width}")]
                       + VIDEO_FIELDS[1:])
        table = np.zeros(len(pieces), vdt)
        n_windows = sum(len(v.spans) for v in pieces)
        windows = np.zeros(n_windows, WINDOW_DTYPE)
        offset = w = 0
        for i, v in enumerate(pieces):
            n = len(v.spans)
            table[i] = (first_piece + i, v.video_id, v.split, v.entry_index, v.label, v.window_start,
                        len(v.features), offset, first_window + w, n, v.fps, v.frames_per_feature)
            windows[w:w + n] = [(first_window + w + j, first_piece + i, s, e, sc)
                                for j, (s, e, sc) in enumerate(v.spans)]
            offset += len(v.features)
            w += n
        features = np.concatenate([np.asarray(v.features, np.float32) for v in pieces])
        vectors = np.ascontiguousarray(np.concatenate([v.vectors for v in pieces]), np.float32)
        _save_npy(os.path.join(folder, "videos.npy"), table)
        _save_npy(os.path.join(folder, "windows.npy"), windows)
        _save_npy(os.path.join(folder, "features.npy"), features)

        if self.faiss is None:
            self.faiss = self._new_faiss(vectors)
        self.faiss.add_with_ids(vectors, windows["id"].astype(np.int64))
        part = {"name": name, "pieces": len(pieces), "windows": int(n_windows), "steps": int(len(features)),
                "first_piece": first_piece, "first_window": first_window}
        m["parts"].append(part)
        m["pieces"] += len(pieces)
        m["windows"] += int(n_windows)
        m["live_pieces"] += len(pieces)
        m["live_windows"] += int(n_windows)
        m["live_videos"] += new_videos
        self._commit()
        self.parts.append(self._open_part(self.path, part, self.feature_dim))
        self._first_windows = np.append(self._first_windows, first_window)
        self._first_pieces = np.append(self._first_pieces, first_piece)
        return part

    def _new_faiss(self, vectors: np.ndarray):
        """The FAISS index of the first append: flat below IVF_MIN_WINDOWS windows ("auto"), else IVF
        trained on these vectors (later appends are assigned to its lists without retraining)."""
        import faiss

        info = self.manifest["index"]
        kind = info["type"]
        if kind == "auto":
            kind = "ivf" if len(vectors) >= IVF_MIN_WINDOWS else "flat"
        d = self.embed_dim
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        else:
            nlist = int(max(1, min(4 * np.sqrt(len(vectors)), len(vectors) // 39)))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vectors[np.random.default_rng(0).permutation(len(vectors))[: 64 * nlist]]  # k-means cost bound
            index.train(sample)
            index.referenced_objects = [quantizer]  # keep the quantizer alive with the index
            info["nlist"] = nlist
        info["built_type"] = kind
        return index

    def remove(self, video_ids: Sequence[str]) -> int:
        """Remove every live piece of the videos ``video_ids``; returns how many pieces. Their windows
        leave the FAISS index; their metadata stays in the parts, marked removed (tombstones)."""
        import faiss

        numbers = self.piece_numbers_of(video_ids)
        if numbers.size == 0:
            return 0
        videos = len(self.live_video_ids(among=video_ids))
        ids = []
        for number in numbers:
            _, v = self._row(int(number))
            ids.append(np.arange(int(v["first_window"]), int(v["first_window"]) + int(v["windows"]), dtype=np.int64))
        ids = np.concatenate(ids)
        removed = self.faiss.remove_ids(faiss.IDSelectorBatch(ids))
        if removed != len(ids):
            raise IndexError_(f"{self.path}: FAISS removed {removed} of {len(ids)} windows; rebuild the index")
        self.removed = np.concatenate([self.removed, numbers.astype(np.int64)])
        m = self.manifest
        m["removed_pieces"] = int(len(self.removed))
        m["live_pieces"] -= int(numbers.size)
        m["live_windows"] -= int(len(ids))
        m["live_videos"] -= videos
        self._commit()
        return int(numbers.size)

    def _commit(self) -> None:
        """FAISS file and tombstones first (temporary names, renamed), the manifest last."""
        import faiss

        info = self.manifest["index"]
        faiss_path = os.path.join(self.path, FAISS_FILE)
        with atomic_path(faiss_path) as tmp:
            faiss.write_index(self.faiss, tmp)
        info.update(bytes=os.path.getsize(faiss_path), sha256=file_sha256(faiss_path), ntotal=int(self.faiss.ntotal))
        _save_npy(os.path.join(self.path, REMOVED_FILE), self.removed)
        self.write_manifest()


def describe(index: LibraryIndex) -> Dict[str, object]:
    """A short summary of an index (what `vreloc index` commands print): ``videos`` counts distinct
    video ids, ``pieces`` their contiguous runs of features, ``windows`` the ANN vectors."""
    m = index.manifest
    spec = index.feature_spec
    return {"index": index.path, "format": index.format_on_disk, "videos": index.live_videos,
            "pieces": index.live_pieces, "windows": index.live_windows, "removed_pieces": m["removed_pieces"],
            "parts": len(m["parts"]),
            "relocalizer": index.relocalizer, "model": index.model_run,
            "faiss": m["index"].get("built_type") or m["index"]["type"], "feature_dim": m["feature_dim"],
            "features": spec.summary() if spec else None, "pca": index.pca_file,
            "embedding": m["embedding"], "bytes": index.index_bytes()}

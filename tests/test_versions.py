"""Versions as TF Serving treats them (issue #25 point 2): names, complete copies, released memory.

A version is a folder named by a base-10 integer that fits int64 (``007`` is version 7);
anything else is ignored with one warning. A version is loaded only once its whole tree
stopped changing, so a slow copy is served with its warm-up requests. A retired version's
memory goes back to the operating system.
"""
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from helpers import runs as H
from serving import signature as sig
from vreloc_tf.data import versions
from vreloc_tf.data.versions import ASSETS_EXTRA_DIR, SAVED_MODEL_FILE
from serving.client import predict
from serving.server import start_server

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUGE = "99999999999999999999"  # above int64's maximum 9223372036854775807


def _pair(seed=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((6, H.FEATURE_DIM)).astype(np.float32),
            rng.standard_normal((50, H.FEATURE_DIM)).astype(np.float32))


class _Records(logging.Handler):
    """The serving.model_manager log records (message, monotonic time) while installed."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.levelno, record.getMessage(), time.monotonic()))

    def __enter__(self):
        self._logger = logging.getLogger("serving.model_manager")
        self._level = self._logger.level
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def messages(self, level=logging.DEBUG):
        return [m for lvl, m, _ in self.records if lvl >= level]


def _wait(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _fake_version(base, name):
    os.makedirs(os.path.join(base, name))
    open(os.path.join(base, name, SAVED_MODEL_FILE), "wb").close()


# -- names (rows 3 and 4) ---------------------------------------------------------------------

def test_version_names_are_read_as_tf_serving_reads_them():
    """Base-10 ASCII digits that fit int64, leading zeros allowed; no sign, no spaces, no '²'."""
    cases = {"1": 1, "0": 0, "007": 7, "9223372036854775807": 2**63 - 1,
             "9223372036854775808": None, HUGE: None, "-1": None, "+3": None, " 7": None, "7 ": None,
             "1_0": None, "1.5": None, "\u00b2": None, "\u0667": None, "abc": None, "": None}
    assert {name: versions.parse_version(name) for name in cases} == cases


def test_folder_names_map_to_versions_and_duplicates_are_ignored(tmp_path):
    base = str(tmp_path)
    for name in ("1", "007", "3", "0003", HUGE, "-2", "+4"):
        _fake_version(base, name)
    os.makedirs(os.path.join(base, ".tmp-9-abc"))  # the exporter's half-written folder: silently skipped
    listing = versions.read_base(base)
    assert listing.folders == {1: "1", 7: "007"}  # 3 is named twice: neither folder is served
    assert listing.duplicates == {3: ["0003", "3"]}
    assert sorted(listing.ignored) == sorted(["'0003' and '3'", repr(HUGE), "'-2'", "'+4'"])
    assert "version 3" in listing.ignored["'0003' and '3'"] and "int64" in listing.ignored[repr(HUGE)]
    assert versions.list_versions(base) == [1, 7]
    assert versions.latest_version_dir(base) == os.path.join(base, "007")
    # An export takes the number after every version some folder names, and never a huge one.
    assert versions.existing_versions(base) == [1, 3, 7]
    assert versions.next_version(base) == 8


def test_locate_finds_version_7_in_folder_007(tmp_path):
    """`vreloc locate --model BASE` opens the newest version's folder by its name, not str(version)."""
    from vreloc_tf.data.artifacts import Export

    base = str(tmp_path)
    _fake_version(base, "1")
    _fake_version(base, "007")
    export = Export.open(base)
    assert (export.path, export.version, export.info) == (os.path.join(base, "007"), 7, None)


def test_export_refuses_a_version_a_zero_padded_folder_holds(tmp_path):
    """--version 7 beside a folder 007 would make two folders name version 7 (then neither is served)."""
    from serving.export import export_model
    from vreloc_tf.data.artifacts import Run

    base = str(tmp_path / H.MODEL_NAME)
    _fake_version(base, "007")
    with pytest.raises(FileExistsError, match="version 7 of vreloc was already exported"):
        export_model(Run.open(H.make_run(0)), base, version=7, jit_compile=False)
    assert sorted(os.listdir(base)) == ["007"]


def test_a_version_named_above_int64_is_ignored_and_predict_answers(tmp_path):
    """Row 3: it was loaded and served, and every Predict failed (its number does not fit the response)."""
    base = H.export_copy(str(tmp_path), seed=0, version=1, xla=False)
    shutil.copytree(os.path.join(base, "1"), os.path.join(base, HUGE))
    with _Records() as log:
        handle = start_server(base, port=0, rest_port=0, poll_interval=0.1)
        try:
            assert handle.models[H.MODEL_NAME].versions == [1]
            query, reference = _pair()
            out = predict(f"127.0.0.1:{handle.port}", query, reference, H.MODEL_NAME, timeout=60)
            assert out["version"] == 1 and 0 <= out["start"] <= out["end"] <= len(reference)
            body = json.dumps({"inputs": {sig.QUERY: query[None].tolist(), sig.REFERENCE: reference[None].tolist(),
                                          sig.QUERY_LENGTH: [len(query)],
                                          sig.REFERENCE_LENGTH: [len(reference)]}}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{handle.rest_port}/v1/models/{H.MODEL_NAME}:predict",
                                             data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200
            time.sleep(0.5)  # more polls: still one warning
        finally:
            handle.stop(grace=1)
    warnings = [m for m in log.messages(logging.WARNING) if HUGE in m]
    assert len(warnings) == 1 and "int64" in warnings[0] and base in warnings[0], log.messages()
    assert not [m for m in log.messages(logging.ERROR)], log.messages()


def test_a_version_folder_007_is_served_as_version_7(tmp_path):
    """Row 4: 007 was looked up as 7/, never loaded, and kept the old version pinned."""
    base = H.export_copy(str(tmp_path), seed=0, version=1, xla=False)
    source = os.path.join(H.export_copy(str(tmp_path / "src"), seed=1, version=1, xla=False), "1")
    with _Records() as log:
        handle = start_server(base, port=0, poll_interval=0.1)
        model = handle.models[H.MODEL_NAME]
        target = f"127.0.0.1:{handle.port}"
        query, reference = _pair()
        try:
            shutil.copytree(source, os.path.join(base, "007"))
            assert _wait(lambda: model.versions == [7]), (model.status(), log.messages())
            assert predict(target, query, reference, H.MODEL_NAME, timeout=60, version=7)["version"] == 7
            shutil.rmtree(os.path.join(base, "007"))  # the newest on disk is 1 again (TF Serving reloads it)
            assert _wait(lambda: model.versions == [1]), (model.status(), log.messages())
            assert predict(target, query, reference, H.MODEL_NAME, timeout=60)["version"] == 1
        finally:
            handle.stop(grace=1)
    loads = [m for m in log.messages() if "loaded version 7 " in m]
    assert len(loads) == 1 and os.path.join(base, "007") in loads[0], log.messages()
    assert not log.messages(logging.ERROR), log.messages()


# -- complete copies (row 5) --------------------------------------------------------------------

def _copy_slowly(source, target, pause, done):
    """Like a slow `cp -a`: saved_model.pb, then the variables, then assets.extra, ``pause`` s apart.

    copy2 keeps the source's old mtimes, as `cp -a` does, so only ctimes say the files are new.
    """
    os.makedirs(target)
    shutil.copy2(os.path.join(source, SAVED_MODEL_FILE), target)
    time.sleep(pause)
    for name in sorted(os.listdir(source)):
        if name not in (SAVED_MODEL_FILE, ASSETS_EXTRA_DIR):
            copy = shutil.copytree if os.path.isdir(os.path.join(source, name)) else shutil.copy2
            copy(os.path.join(source, name), os.path.join(target, name))
            time.sleep(pause)
    os.makedirs(os.path.join(target, ASSETS_EXTRA_DIR))  # an empty folder first, its files later
    time.sleep(pause)
    for name in sorted(os.listdir(os.path.join(source, ASSETS_EXTRA_DIR))):
        shutil.copy2(os.path.join(source, ASSETS_EXTRA_DIR, name), os.path.join(target, ASSETS_EXTRA_DIR))
        time.sleep(pause)
    done.append(time.monotonic())


def test_a_version_copied_slowly_is_loaded_with_its_warmup_requests(tmp_path):
    """Row 5: it went live once saved_model.pb and the variables were there, before assets.extra: 0 warm-ups."""
    base = H.export_copy(str(tmp_path), seed=0, version=1, xla=False)
    source = os.path.join(H.export_copy(str(tmp_path / "src"), seed=1, version=2, xla=False), "2")
    done = []
    with _Records() as log:
        handle = start_server(base, port=0, poll_interval=0.1, settle_seconds=2.0)  # the product default
        model = handle.models[H.MODEL_NAME]
        try:
            copier = threading.Thread(target=_copy_slowly, args=(source, os.path.join(base, "2"), 0.5, done))
            copier.start()
            copier.join(timeout=60)
            assert _wait(lambda: model.versions == [2]), (model.status(), log.messages())
            query, reference = _pair()
            assert predict(f"127.0.0.1:{handle.port}", query, reference, H.MODEL_NAME, timeout=60)["version"] == 2
        finally:
            handle.stop(grace=1)
    loads = [(m, t) for lvl, m, t in log.records if "loaded version 2 " in m]
    assert len(loads) == 1, log.messages()
    message, loaded_at = loads[0]
    assert loaded_at > done[0], f"loaded {done[0] - loaded_at:.2f} s before the copy ended: {message}"
    warmups = int(message.split("(")[1].split()[0])
    assert warmups > 0, message
    assert not log.messages(logging.ERROR), log.messages()  # never tried on a half-copied tree


def test_the_first_scan_waits_for_a_version_still_being_copied(tmp_path):
    """With polling off nothing scans again: start-up waits for a settling version instead of skipping it."""
    from serving.model_manager import ServedModel

    base = str(tmp_path / H.MODEL_NAME)
    os.makedirs(base)
    source = os.path.join(H.export_copy(str(tmp_path / "src"), seed=0, version=1, xla=False), "1")
    done = []
    copier = threading.Thread(target=_copy_slowly, args=(source, os.path.join(base, "1"), 0.2, done))
    copier.start()
    _wait(lambda: os.path.exists(os.path.join(base, "1", SAVED_MODEL_FILE)), 10)
    model = ServedModel(H.MODEL_NAME, base, settle_seconds=1.0)
    with _Records() as log:
        model.scan()
    copier.join(timeout=60)
    try:
        assert model.versions == [1], log.messages()
        loads = [m for m in log.messages() if "loaded version 1 " in m]
        assert len(loads) == 1 and int(loads[0].split("(")[1].split()[0]) > 0, log.messages()
    finally:
        model.close()


def test_old_files_are_settled_at_once_and_new_ones_after_the_settle_time(tmp_path):
    """A restart loads what is on disk without waiting; a folder changed just now waits."""
    from serving.model_manager import ServedModel

    base = str(tmp_path)
    _fake_version(base, "1")
    time.sleep(0.35)
    model = ServedModel(H.MODEL_NAME, base, settle_seconds=0.3)
    path = os.path.join(base, "1")
    assert model._settled(1, "1", path)  # first look: already still for longer than the settle time
    open(os.path.join(path, "late-file"), "w").close()
    assert not model._settled(1, "1", path)
    time.sleep(0.35)
    assert model._settled(1, "1", path)


# -- memory (row 16) ------------------------------------------------------------------------------

_SWAPS = r"""
import json, os, shutil, sys, time
import psutil
from serving.model_manager import ServedModel

source, base = sys.argv[1], sys.argv[2]
model = ServedModel("vreloc", base, settle_seconds=0.2)
process = psutil.Process()

def serve(version):
    deadline = time.monotonic() + 120
    while (model.versions != [version] or model.retired_versions) and time.monotonic() < deadline:
        model.scan()
        time.sleep(0.05)
    assert model.versions == [version], model.status()

shutil.copytree(source, os.path.join(base, "1"))
serve(1)
one = process.memory_info().rss
after = []
for version in range(2, 12):
    shutil.copytree(source, os.path.join(base, str(version)))
    serve(version)
    shutil.rmtree(os.path.join(base, str(version - 1)))
    after.append(process.memory_info().rss)
print(json.dumps({"one": one, "after": after}))
"""


def test_retired_versions_free_their_memory(tmp_path):
    """Row 16: RSS grew by a version's worth on every swap; after 10 swaps it stays within 10 % of one version."""
    source = os.path.join(H.export_copy(str(tmp_path / "src"), seed=0, version=1, xla=False), "1")
    base = tmp_path / "served"
    base.mkdir()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", _SWAPS, source, str(base)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rss = json.loads(result.stdout.strip().splitlines()[-1])
    one, after = rss["one"], rss["after"]
    ratios = [round(r / one, 3) for r in after]
    assert max(after) <= 1.10 * one, f"one version {one / 2**20:.0f} MiB; after each swap {ratios}"

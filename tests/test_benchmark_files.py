"""`vreloc benchmark fetch|where` and vreloc_tf.data.benchmark_files: pinned files, checked, cached, found.

The "upstream" here is a local HTTP server laid out like the repository (``<commit>/data/<file>``),
built from the benchmark files the suite already has (../shared or the cache; skipped without them).
"""
import functools
import hashlib
import http.server
import os
import shutil
import threading

import pytest

from vreloc import cli
from vreloc_tf.data import benchmark_files as bf
from vreloc_tf.errors import InputError


def _sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


class _Mirror:
    def __init__(self, root):
        self.root = root
        self.requests = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      functools.partial(Handler, directory=root))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def path(self, name):
        f = next(f for f in bf.FILES if f.name == name)
        return os.path.join(self.root, f.commit, f.path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(shared_splits_dir, tmp_path):
    """An HTTP server serving ``<commit>/<path>`` for every pinned file (LICENSE when the source has it)."""
    root = tmp_path / "mirror"
    for f in bf.FILES:
        src = os.path.join(shared_splits_dir, f.name)
        if os.path.exists(src):
            os.makedirs(root / f.commit / os.path.dirname(f.path), exist_ok=True)
            shutil.copyfile(src, root / f.commit / f.path)
    m = _Mirror(str(root))
    yield m
    m.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """VRELOC_CACHE in tmp_path; the folder fetch fills by default."""
    monkeypatch.setenv(bf.CACHE_ENV, str(tmp_path / "cache"))
    return bf.cache_dir()


@pytest.fixture
def nothing_found(tmp_path, monkeypatch, cache):
    """Neither ../shared nor the cache holds the files."""
    monkeypatch.setattr(bf, "shared_dir", lambda: str(tmp_path / "no-shared"))
    return cache


def _files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


# --------------------------------------------------------------------------- the pins


def test_the_pins_are_the_published_files(shared_splits_dir):
    """Every required pin matches the copies the suite reads; the URLs name the pinned commits."""
    assert [f.name for f in bf.REQUIRED] == ["train.json", "val.json", "test.json", "length.json", "perm.npy"]
    for f in bf.REQUIRED:
        path = os.path.join(shared_splits_dir, f.name)
        assert (_sha256(path), os.path.getsize(path)) == (f.sha256, f.size), f.name
        assert f.url() == f"https://raw.githubusercontent.com/fengyang0317/video_reloc/{f.commit}/data/{f.name}"
    assert bf.FILES[-1].url("http://m/x/") == f"http://m/x/{bf.LICENSE_COMMIT}/LICENSE"


def test_cache_dir_follows_vreloc_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("VRELOC_CACHE", str(tmp_path / "v"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert bf.cache_dir() == str(tmp_path / "v" / "benchmark" / "activitynet_reloc")
    monkeypatch.setenv("VRELOC_CACHE", "")
    assert bf.cache_dir() == str(tmp_path / "x" / "vreloc" / "benchmark" / "activitynet_reloc")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert bf.cache_dir() == str(tmp_path / "h" / ".cache" / "vreloc" / "benchmark" / "activitynet_reloc")


# --------------------------------------------------------------------------- fetch


def test_fetch_fills_the_cache_checked_and_a_second_fetch_downloads_nothing(mirror, cache):
    result = bf.fetch(base_url=mirror.url)
    assert result.folder == cache
    expected = [f.name for f in bf.FILES if os.path.exists(mirror.path(f.name))]
    assert result.downloaded == expected and result.kept == [] and result.unavailable == []
    assert _files_under(cache) == sorted(expected)
    for f in bf.FILES:
        if f.name in expected:
            assert _sha256(os.path.join(cache, f.name)) == f.sha256, f.name
    assert sorted(mirror.requests) == sorted(f"/{f.commit}/{f.path}" for f in bf.FILES if f.name in expected)
    assert bf.problems(cache) == [] and bf.find_splits(cache) in (cache, bf.shared_dir())
    assert _files_under(os.path.dirname(cache)) == [os.path.join("activitynet_reloc", n) for n in sorted(expected)]

    n_requests = len(mirror.requests)
    again = bf.fetch(base_url=mirror.url)
    assert again.downloaded == [] and again.kept == expected
    assert len(mirror.requests) == n_requests  # nothing downloaded again

    os.remove(os.path.join(cache, "val.json"))  # one file lost: only it comes back
    assert bf.fetch(base_url=mirror.url).downloaded == ["val.json"]
    assert mirror.requests[n_requests:] == [f"/{bf.SPLITS_COMMIT}/data/val.json"]


def test_a_tampered_file_is_refused_naming_it_and_nothing_is_kept(mirror, cache, tmp_path):
    with open(mirror.path("val.json"), "ab") as fh:
        fh.write(b" ")
    bad = _sha256(mirror.path("val.json"))
    with pytest.raises(InputError) as err:
        bf.fetch(base_url=mirror.url)
    message = str(err.value)
    pin = next(f for f in bf.FILES if f.name == "val.json")
    assert "val.json" in message and bad in message and pin.sha256 in message
    assert f"{mirror.url}/{bf.SPLITS_COMMIT}/data/val.json" in message
    assert _files_under(str(tmp_path / "cache")) == []  # not the bad file, not the good ones, no staging left


def test_a_missing_license_is_a_warning_the_split_files_are_kept(mirror, cache):
    if os.path.exists(mirror.path("LICENSE")):
        os.remove(mirror.path("LICENSE"))
    result = bf.fetch(base_url=mirror.url)
    assert result.unavailable == ["LICENSE"] and "LICENSE" not in result.downloaded
    assert bf.problems(cache) == []
    assert "not available: LICENSE" in result.summary()


def test_a_server_error_names_the_url(mirror, cache, tmp_path):
    with pytest.raises(InputError, match=r"train\.json: http://127\.0\.0\.1:\d+/wrong/69f6bfb[0-9a-f]+/data/train\.json: "
                                         r"HTTP 404"):
        bf.fetch(base_url=mirror.url + "/wrong")
    assert _files_under(str(tmp_path / "cache")) == []


def test_fetch_to_dest(mirror, cache, tmp_path):
    dest = str(tmp_path / "elsewhere")
    assert bf.fetch(dest, base_url=mirror.url).folder == dest
    assert bf.problems(dest) == [] and not os.path.exists(cache)


# --------------------------------------------------------------------------- find_splits


def _copy(src, dest, corrupt=None):
    os.makedirs(dest)
    for f in bf.REQUIRED:
        shutil.copyfile(os.path.join(src, f.name), os.path.join(dest, f.name))
    if corrupt:
        with open(os.path.join(dest, corrupt), "ab") as fh:
            fh.write(b"\n")
    return str(dest)


def test_find_splits_order_explicit_then_shared_then_cache(shared_splits_dir, tmp_path, monkeypatch, cache):
    explicit = _copy(shared_splits_dir, tmp_path / "explicit")
    shared = _copy(shared_splits_dir, tmp_path / "shared")
    cached = _copy(shared_splits_dir, cache)
    monkeypatch.setattr(bf, "shared_dir", lambda: shared)
    assert bf.candidates(explicit) == [explicit, shared, cached]
    assert bf.find_splits(explicit) == explicit
    assert bf.find_splits() == shared
    os.remove(os.path.join(shared, "perm.npy"))
    assert bf.find_splits() == cached
    assert bf.problems(shared) == ["perm.npy missing"]
    with open(os.path.join(cached, "length.json"), "ab") as fh:  # a changed file does not count
        fh.write(b"\n")
    assert bf.find_splits() is None and bf.find_splits(explicit) == explicit
    assert bf.problems(cached)[0].startswith("length.json has sha256 ")
    assert bf.find_splits(str(tmp_path / "nowhere")) is None
    with pytest.raises(InputError, match=r"^--splits: not given, and the benchmark files .* are not in any of: "
                                         r".*perm\.npy missing.*length\.json has sha256 .*; "
                                         r"run `vreloc benchmark fetch` to download them \(or give --splits\)$"):
        bf.require_splits("--splits")


# --------------------------------------------------------------------------- the commands


def test_cli_where_prints_the_folder(shared_splits_dir, capsys):
    assert cli.main(["benchmark", "where"]) == 0
    assert capsys.readouterr().out.strip() == shared_splits_dir


def test_cli_where_without_files_says_to_fetch(nothing_found, capsys):
    assert cli.main(["benchmark", "where"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vreloc benchmark: error: the benchmark files ")
    assert err.endswith("run `vreloc benchmark fetch` to download them")


def test_cli_fetch_then_where(mirror, nothing_found, capsys):
    assert cli.main(["benchmark", "fetch", "--base-url", mirror.url]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"benchmark files in {nothing_found}: ") and "0 already there" in out
    assert cli.main(["benchmark", "where"]) == 0
    assert capsys.readouterr().out.strip() == nothing_found
    assert cli.main(["benchmark", "fetch", "--base-url", mirror.url]) == 0
    assert "0 downloaded; " in capsys.readouterr().out


def test_cli_fetch_refusal_is_one_line(mirror, cache, capsys):
    with open(mirror.path("train.json"), "ab") as fh:
        fh.write(b"x")
    assert cli.main(["benchmark", "fetch", "--base-url", mirror.url]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vreloc benchmark: error: train.json: http://127.0.0.1:")
    assert not os.path.exists(cache)


def test_cli_fetch_unreachable_server_is_one_line(cache, capsys):
    assert cli.main(["benchmark", "fetch", "--base-url", "http://127.0.0.1:9", "--timeout", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train.json: http://127.0.0.1:9/" in err and "download failed" in err


@pytest.fixture
def synth_calls(monkeypatch):
    """`vreloc synth` with pipeline.synth.generate recording its arguments instead of writing."""
    from pipeline import synth

    calls = []

    def fake(out, **kw):
        calls.append((kw["lengths"], kw["splits_dir"]))
        return {"videos": 0, "rows": 0, "dim": kw["dim"], "hdf5": "x", "family": kw["family"], "entries": 0,
                "geometry": "g", "seconds": 0}

    monkeypatch.setattr(synth, "generate", fake)
    return calls


def test_synth_splits_and_lengths_defaults(shared_splits_dir, synth_calls, tmp_path):
    out = str(tmp_path / "o")
    found = (os.path.join(shared_splits_dir, "length.json"), shared_splits_dir)
    runs = {
        (): (None, None),  # no flag: synth's own geometry, as before
        ("--splits",): found,
        ("--lengths",): found,
        ("--splits", "--lengths"): found,
        ("--splits", "/d"): ("/d/length.json", "/d"),
        ("--lengths", "/d/l.json"): ("/d/l.json", "/d"),
        ("--lengths", "/a/l.json", "--splits", "/b"): ("/a/l.json", "/b"),  # explicit paths: exactly as given
    }
    for flags, expected in runs.items():
        assert cli.main(["synth", "--out", out, *flags]) == 0, flags
        assert synth_calls[-1] == expected, flags


def test_commands_without_the_benchmark_files_name_the_fetch_command(nothing_found, synth_calls, tmp_path, capsys):
    out = str(tmp_path / "o")
    for argv, flag in ((["synth", "--out", out, "--splits"], "--splits"),
                       (["ingest-activitynet", "--features", "f.hdf5", "--out", out], "--splits"),
                       (["quality", "--out", out], "--benchmark-splits")):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"vreloc {argv[0]}: error: {flag}: not given, and "), err
        assert "run `vreloc benchmark fetch`" in err, err
    assert synth_calls == [] and not os.path.exists(out)


def test_the_shared_copy_is_looked_for_beside_the_checkout():
    """../shared/data/activitynet_reloc is found relative to the repository root, wherever the module lives in the
    package (a move into vreloc_tf/data/ once made it look inside the checkout, and the tests needing it skipped)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert bf.shared_dir() == os.path.normpath(os.path.join(repo, "..", "shared", "data", "activitynet_reloc"))

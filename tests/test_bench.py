"""`vreloc bench`: parts run in their own processes and the report has every key the docs promise."""
import json

from vreloc import cli
from vreloc.bench import driver

PROMISED = ["matmul_gflops", "train.pairs_per_s", "train.fraction_of_matmul", "inference.p50_ms",
            "inference.p99_ms", "grpc.p50_ms", "grpc.p99_ms", "grpc.requests_per_s_8_clients",
            "grpc.model_p50_ms", "grpc.p50_over_model_p50", "grpc.requests_per_s_over_one_at_a_time",
            "latency_ms_by_lr",
            "decode_ms_lr1000", "ingest.records_per_s", "c3d.clips_per_s", "peak_rss_mb.train",
            "peak_rss_mb.serve", "cgbm.train.pairs_per_s", "cgbm.inference.p50_ms", "cgbm.inference.p99_ms",
            "cgbm.parameters", "backbones.c3d.seconds_per_video_minute", "backbones.clip.seconds_per_video_minute",
            "backbones.c3d.fraction_of_matmul", "backbones.clip.fraction_of_matmul", "backbones.clip_over_c3d",
            "backbones.c3d.gflops_per_s", "backbones.clip.gflops_per_s",
            "backbones.decode.c3d_seconds_per_video_minute", "backbones.decode.clip_seconds_per_video_minute",
            "records.read_ms_p50", "records.tensorflow_read_ms_p50", "records.tensorflow_over_ours"]


def _get(doc, dotted):
    for key in dotted.split("."):
        assert key in doc, f"missing {dotted}"
        doc = doc[key]
    return doc


def test_cheap_parts_measure_and_every_promised_key_exists(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--quick", "--config", "tiny", "--only", "matmul", "--only", "decode",
                     "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    for key in PROMISED:
        _get(doc, key)
    assert doc["matmul_gflops"] > 0.5
    assert 0 < doc["decode_ms_lr1000"] < 1000 and doc["decode_graph_ms_lr1000"] > 0
    assert doc["train"]["pairs_per_s"] is None  # not run: reported as missing, never invented
    assert doc["cgbm"]["train"]["pairs_per_s"] is None and doc["cgbm"]["inference"]["p50_ms"] is None
    text = capsys.readouterr().out
    assert "dense matmul (yardstick)" in text and "Eq. 20 decoding, Lr 1000" in text and "n/a pairs/s" in text
    assert "CGBM (Feng et al.), training" in text and "CGBM inference, one pair" in text


def test_a_failing_part_is_reported_not_hidden(monkeypatch):
    monkeypatch.setattr(driver, "run_part", lambda name, config, quick: {"error": f"part {name} exited 1: boom"})
    result = driver.collect("tiny", True, parts=("matmul",), progress=lambda *_: None)
    assert result["errors"] == {"matmul": "part matmul exited 1: boom"}
    assert "ERROR in matmul" in driver.format_report(result)


def test_grpc_ratios_are_taken_within_the_grpc_part():
    raw = {"grpc": {"inference": {"p50_ms": 20.0}, "in_process": {"p50_ms": 22.0},
                    "grpc": {"p50_ms": 30.0, "p99_ms": 41.0}, "grpc_overhead_p50_ms": 8.0, "throughput": {"requests_per_s": 80.0}},
           "inference": {"p50_ms": 50.0, "p99_ms": 60.0}}  # another process, another load: not in the ratios
    g = driver.summarize(raw, "tiny", True)["grpc"]
    assert g["model_p50_ms"] == 20.0 and abs(g["p50_over_model_p50"] - 1.5) < 1e-12
    assert abs(g["requests_per_s_over_one_at_a_time"] - 80.0 * 30.0 / 1000.0) < 1e-12
    text = driver.format_report(driver.summarize(raw, "tiny", True))
    assert "gRPC / compiled model, p50      1.50" in text and "(2.40 x one at a time)" in text


def test_backbones_part_reports_compute_per_video_minute_against_the_same_process_matmul():
    """Tiny batches (one clip, one frame, one round): the figures' keys and their arithmetic, no speed thresholds."""
    from pipeline.backbones import BackboneOptions, open_backbone
    from vreloc.bench.backbones import measure_backbones

    assert "backbones" in driver.DEFAULT_PARTS and "c3d" not in driver.PARTS
    raw = measure_backbones(batch_sizes={"c3d": 1, "clip": 1}, batches=1, rounds=1, matmul_repeats=1)
    assert len(raw["matmul_gflops"]) == 2 and all(v > 0 for v in raw["matmul_gflops"])
    for name, per_minute in (("c3d", 60 * 25 / 16), ("clip", 60 * 0.5)):
        b = raw[name]
        bb = open_backbone(BackboneOptions(name=name, random_seed=0, batch_size=1))
        assert b["batch_size"] == 1 and b["features_per_s"] > 0
        assert b["features_per_video_minute"] == per_minute == bb.features_per_minute(25.0)
        assert abs(b["seconds_per_video_minute"] - per_minute / b["features_per_s"]) < 1e-9 * per_minute
        assert abs(b["gflops_per_s"] - b["features_per_s"] * bb.gflops_per_feature) < 1e-6 * b["gflops_per_s"]
        assert abs(b["fraction_of_matmul"] - b["gflops_per_s"] / max(raw["matmul_gflops"])) < 1e-9
        assert b["fraction_of_matmul_per_cpu_second"] > 0
        assert b["end_to_end_seconds_per_video_minute"] > b["seconds_per_video_minute"]
    assert raw["c3d"]["input_shape"] == [16, 112, 112, 3] and raw["clip"]["input_shape"] == [360, 640, 3]
    c3d_s, clip_s = raw["c3d"]["seconds_per_video_minute"], raw["clip"]["seconds_per_video_minute"]
    assert abs(raw["clip_over_c3d"] - clip_s / c3d_s) < 1e-12
    assert abs(raw["clip_over_c3d_analytic"] - 30 * 8.81762304 / (93.75 * 77.09392896)) < 1e-6  # 1/27.3
    d = raw["decode"]
    assert d["video"] == "bikes.mp4" and d["seconds_of_video"] == 10.0
    assert d["c3d"]["seconds_per_video_minute"] == d["c3d"]["seconds"] * 6 > 0 and d["clip"]["seconds"] > 0

    result = driver.summarize({"backbones": raw}, "tiny", True)
    b = result["backbones"]
    assert b["c3d"]["seconds_per_video_minute"] == raw["c3d"]["seconds_per_video_minute"]
    assert b["clip_over_c3d"] == raw["clip_over_c3d"] and result["c3d"]["clips_per_s"] == raw["c3d"]["features_per_s"]
    assert b["decode"]["clip_seconds_per_video_minute"] == d["clip"]["seconds_per_video_minute"]
    text = driver.format_report(result)
    for label in ("c3d compute per video minute", "clip compute per video minute", "c3d GFLOP/s, share of matmul",
                  "clip / c3d, compute per minute", "matmul in the same process", "PyAV decode, per video minute",
                  "NOT backbone compute", "decode + compute, per minute"):
        assert label in text, label


def test_records_part_reads_back_every_record_with_both_readers():
    """The figures' keys and arithmetic on a small file; no speed threshold (timings belong to `vreloc bench`)."""
    from vreloc.bench.records import measure_record_reads

    r = measure_record_reads(records=50, dim=8, steps=10, rounds=1)
    assert r["same_bytes"] is True and r["records"] == 50 and r["record_kb"] == 8 * 10 * 4 / 1e3
    assert r["read_ms_p50"] > 0 and r["tensorflow_read_ms_p50"] > 0 and r["scan_mb_per_s"] > 0
    assert abs(r["tensorflow_over_ours"] - r["tensorflow_read_ms_p50"] / r["read_ms_p50"]) < 1e-12
    assert r["file_mb"] == 50 * (8 * 10 * 4 + 16) / 1e6
    text = driver.format_report(driver.summarize({"records": r}, "tiny", True))
    assert "TFRecord read by offset" in text and "in-order scan" in text

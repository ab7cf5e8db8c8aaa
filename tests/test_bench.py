"""`vreloc bench`: parts run in their own processes and the report has every key the docs promise."""
import json

from vreloc import cli
from vreloc import bench

PROMISED = ["matmul_gflops", "train.pairs_per_s", "train.fraction_of_matmul", "inference.p50_ms",
            "inference.p99_ms", "grpc.p50_ms", "grpc.p99_ms", "grpc.requests_per_s_8_clients",
            "grpc.model_p50_ms", "grpc.p50_over_model_p50", "grpc.requests_per_s_over_one_at_a_time",
            "latency_ms_by_lr",
            "decode_ms_lr1000", "ingest.records_per_s", "c3d.clips_per_s", "peak_rss_mb.train",
            "peak_rss_mb.serve", "cgbm.train.pairs_per_s", "cgbm.inference.p50_ms", "cgbm.inference.p99_ms",
            "cgbm.parameters"]


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
    monkeypatch.setattr(bench, "run_part", lambda name, config, quick: {"error": f"part {name} exited 1: boom"})
    result = bench.collect("tiny", True, parts=("matmul",), progress=lambda *_: None)
    assert result["errors"] == {"matmul": "part matmul exited 1: boom"}
    assert "ERROR in matmul" in bench.format_report(result)


def test_grpc_ratios_are_taken_within_the_grpc_part():
    raw = {"grpc": {"inference": {"p50_ms": 20.0}, "in_process": {"p50_ms": 22.0},
                    "grpc": {"p50_ms": 30.0, "p99_ms": 41.0}, "grpc_overhead_p50_ms": 8.0, "throughput": {"requests_per_s": 80.0}},
           "inference": {"p50_ms": 50.0, "p99_ms": 60.0}}  # another process, another load: not in the ratios
    g = bench.summarize(raw, "tiny", True)["grpc"]
    assert g["model_p50_ms"] == 20.0 and abs(g["p50_over_model_p50"] - 1.5) < 1e-12
    assert abs(g["requests_per_s_over_one_at_a_time"] - 80.0 * 30.0 / 1000.0) < 1e-12
    text = bench.format_report(bench.summarize(raw, "tiny", True))
    assert "gRPC / compiled model, p50      1.50" in text and "(2.40 x one at a time)" in text

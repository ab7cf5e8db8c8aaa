"""The jobs' default runner runs in process and never tries Beam's Prism runner (nor downloads it);
unknown job arguments go to Beam unless they look like typos (pipeline.options.add_beam_arguments)."""
import urllib.request

import apache_beam as beam
import pytest
from apache_beam.runners.portability import prism_runner

from pipeline import options


@pytest.fixture
def prism_guard(monkeypatch):
    """Records every attempt at Prism (its run_pipeline) and at a download (urlopen); both fail at once."""
    tried = []

    def no_prism(self, pipeline, opts):
        tried.append("PrismRunner.run_pipeline")
        raise RuntimeError("test: no Prism")

    def no_download(*args, **kwargs):
        tried.append(f"urlopen {args[:1]}")
        raise OSError("test: offline")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    return tried


def _run(runner, beam_args, out):
    with beam.Pipeline(options=options.pipeline_options(runner, beam_args)) as p:
        (p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2) | beam.combiners.ToList()
         | beam.Map(lambda xs: open(out, "w").write(",".join(map(str, sorted(xs))))))
        runner_used = p.runner
    with open(out) as fh:
        return runner_used, fh.read()


def test_default_runner_runs_in_process_and_never_tries_prism(prism_guard, tmp_path):
    runner, result = _run(options.DEFAULT_RUNNER, [], str(tmp_path / "out.txt"))
    assert result == "2,4,6"
    assert type(runner).__name__ == "InProcessDirectRunner" and options.is_direct_runner(options.DEFAULT_RUNNER)
    assert prism_guard == []
    # the guard does catch Beam's own DirectRunner trying Prism first (then falling back)
    _, result = _run("apache_beam.runners.direct.direct_runner.DirectRunner", [], str(tmp_path / "beam.txt"))
    assert result == "2,4,6" and prism_guard == ["PrismRunner.run_pipeline"]


def test_explicit_direct_runner_and_its_multi_process_mode(prism_guard, tmp_path):
    opts = options.pipeline_options("DirectRunner", [], multiprocess=True, cores=8).get_all_options()
    assert opts["runner"] == options.IN_PROCESS_RUNNER
    assert opts["direct_running_mode"] == "multi_processing" and opts["direct_num_workers"] == 7
    # two worker processes, which read the pipeline options from the runner's provision info
    runner, result = _run("DirectRunner", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                          str(tmp_path / "mp.txt"))
    assert result == "2,4,6" and prism_guard == []


def _parse(capsys, *argv):
    from vreloc import cli

    with pytest.raises(SystemExit) as exit_:
        cli.build_parser("ingest-activitynet").parse_args(
            ["ingest-activitynet", "--features", "f.h5", "--splits", "d", "--out", "o", *argv])
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


def test_a_typo_of_a_job_flag_or_a_beam_option_is_an_error_not_a_beam_argument(capsys):
    assert _parse(capsys, "--ovewrite") == [
        "vreloc ingest-activitynet: error: unrecognized arguments: --ovewrite (did you mean --overwrite?)"]
    assert _parse(capsys, "--runer", "DaskRunner") == [
        "vreloc ingest-activitynet: error: unrecognized arguments: --runer (did you mean --runner?)"]
    assert _parse(capsys, "--direct_num_worker=2") == [
        "vreloc ingest-activitynet: error: unrecognized arguments: --direct_num_worker=2 "
        "(did you mean --direct_num_workers?)"]
    assert _parse(capsys, "-x") == [
        "vreloc ingest-activitynet: error: unrecognized arguments: -x (Beam takes --name flags only)"]


def test_beam_options_and_unknown_far_flags_pass_through(capsys):
    from vreloc import cli

    def beam_args(*argv):
        return cli.build_parser("ingest-activitynet").parse_args(
            ["ingest-activitynet", "--features", "f.h5", "--splits", "d", "--out", "o", *argv]).beam_args

    assert beam_args("--direct_num_workers=2", "--project", "X", "--region", "us-central1",
                     "--some_service_flag=1") == ["--direct_num_workers=2", "--project", "X", "--region",
                                                  "us-central1", "--some_service_flag=1"]
    # a runner's own options are Beam's once its module is loaded (DaskRunner: --dask_client_address)
    assert beam_args("--runner", "DaskRunner", "--dask_client_address=tcp://h:1") == ["--dask_client_address=tcp://h:1"]
    assert _parse(capsys, "--runner", "DaskRunner", "--dask_client_adress=tcp://h:1") == [
        "vreloc ingest-activitynet: error: unrecognized arguments: --dask_client_adress=tcp://h:1 "
        "(did you mean --dask_client_address?)"]

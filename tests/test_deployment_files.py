"""The real TF Serving files agree with the export and with serving/signature.py.

Names, ports and paths are compared across docker-compose.yaml, models.config
(parsed as a ModelServerConfig), k8s/deployment.yaml, the layout `vreloc export`
writes, and the saved_model_cli output pasted in serving/README.md.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from helpers import runs as H
from serving import signature as sig
from vreloc_tf.data.versions import ASSETS_EXTRA_DIR, METADATA_FILE, SAVED_MODEL_FILE, VARIABLES_DIR, WARMUP_FILE

SERVING_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving")
NAME = sig.DEFAULT_MODEL_NAME
BASE_IN_CONTAINER = sig.container_base_path(NAME)


def _models_config(text):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


@pytest.fixture(scope="module")
def models_config():
    with open(os.path.join(SERVING_DIR, "models.config")) as fh:
        return _models_config(fh.read())


@pytest.fixture(scope="module")
def compose():
    with open(os.path.join(SERVING_DIR, "docker-compose.yaml")) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def k8s():
    with open(os.path.join(SERVING_DIR, "k8s", "deployment.yaml")) as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    return {d["kind"]: d for d in docs}


def _flags(args):
    """['--a=1', ...] -> {'a': '1'}."""
    out = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, arg
        key, value = arg[2:].split("=", 1)
        out[key] = value
    return out


def _default(value):
    """'${VAR:-default}' -> 'default' (compose interpolation with a default)."""
    match = re.fullmatch(r"\$\{\w+:-(.+)\}", value)
    return match.group(1) if match else value


def test_models_config_names_pins_and_labels_the_export(models_config):
    configs = models_config.model_config_list.config
    assert len(configs) == 1
    config = configs[0]
    assert config.name == NAME
    assert config.base_path == BASE_IN_CONTAINER
    assert config.model_platform == "tensorflow"
    pinned = list(config.model_version_policy.specific.versions)
    assert pinned == sorted(pinned) and len(pinned) == 2
    assert sorted(config.version_labels) == sorted(sig.VERSION_LABELS)
    assert config.version_labels["stable"] == pinned[0] and config.version_labels["canary"] == pinned[1]
    assert set(config.version_labels.values()) <= set(pinned)


def test_compose_runs_the_official_image_on_the_export(compose, models_config):
    (service,) = compose["services"].values()
    assert _default(service["image"]).startswith("tensorflow/serving:")
    assert sorted(service["ports"]) == sorted([f"{sig.GRPC_PORT}:{sig.GRPC_PORT}", f"{sig.REST_PORT}:{sig.REST_PORT}"])
    mounts = {v["target"]: v for v in service["volumes"]}
    export_mount = mounts[BASE_IN_CONTAINER]
    assert export_mount["read_only"] is True
    assert os.path.basename(os.path.normpath(_default(export_mount["source"]))) == NAME
    flags = _flags(service["command"])
    config_path = flags["model_config_file"]
    assert config_path in mounts and os.path.basename(mounts[config_path]["source"]) == "models.config"
    assert flags["allow_version_labels_for_unavailable_models"] == "true"
    assert flags["xla_cpu_compilation_enabled"] == "true"  # the export's model call is an XLA function
    assert service["environment"]["MODEL_NAME"] == NAME
    assert models_config.model_config_list.config[0].base_path == export_mount["target"]


def test_kubernetes_deployment_and_service_agree(k8s, models_config):
    assert set(k8s) == {"ConfigMap", "Deployment", "Service"}
    config_map, deployment, service = k8s["ConfigMap"], k8s["Deployment"], k8s["Service"]
    assert _models_config(config_map["data"]["models.config"]) == models_config

    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("tensorflow/serving:")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": sig.GRPC_PORT, "http": sig.REST_PORT}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts[BASE_IN_CONTAINER]["readOnly"] is True
    assert "persistentVolumeClaim" in volumes[mounts[BASE_IN_CONTAINER]["name"]]
    flags = _flags(container["args"])
    assert flags["xla_cpu_compilation_enabled"] == "true"
    config_dir, config_file = os.path.split(flags["model_config_file"])
    assert config_file == "models.config"
    assert volumes[mounts[config_dir]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{NAME}"

    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert service_ports == {"grpc": (sig.GRPC_PORT, "grpc"), "http": (sig.REST_PORT, "http")}


def test_export_layout_is_what_the_files_mount(tmp_path, models_config):
    """`vreloc export --out BASE/<name>` writes integer versions under the folder mounted at base_path."""
    base = H.export_copy(str(tmp_path), seed=0, version=1)
    assert os.path.basename(base) == models_config.model_config_list.config[0].name
    version = os.path.join(base, "1")
    assert os.path.isfile(os.path.join(version, SAVED_MODEL_FILE))
    assert os.path.isdir(os.path.join(version, VARIABLES_DIR))
    # TF Serving reads its warm-up file from exactly this path.
    assert os.path.isfile(os.path.join(version, "assets.extra", "tf_serving_warmup_requests"))
    assert ASSETS_EXTRA_DIR == "assets.extra" and WARMUP_FILE == "tf_serving_warmup_requests"


PLAIN_LOAD = """
import json, sys
import numpy as np
import tensorflow as tf
arrays = {k: np.array(v, dtype=np.float32 if k in ("query", "reference") else np.int32)
          for k, v in json.loads(sys.stdin.read()).items()}
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = {k: v.numpy().tolist() for k, v in fn(**{k: tf.constant(v) for k, v in arrays.items()}).items()}
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("vreloc_tf", "vreloc", "serving", "pipeline"))
print(json.dumps({"outputs": out, "imported": ours}))
"""


def test_the_export_runs_with_plain_tensorflow(tmp_path):
    """The contract with the real TF Serving: tf.saved_model.load alone runs the (XLA) signature."""
    base = H.export_copy(str(tmp_path), seed=0, version=1)
    rng = np.random.default_rng(2)
    arrays = H.random_batch(rng, lq=(5, 3), lr=(40, 23))
    proc = subprocess.run([sys.executable, "-c", PLAIN_LOAD, os.path.join(base, "1")],
                          input=json.dumps({k: v.tolist() for k, v in arrays.items()}), capture_output=True,
                          text=True, cwd=str(tmp_path), timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=""))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported"] == []  # none of this project's packages: TensorFlow alone
    want = H.saved_model_outputs(os.path.join(base, "1"), arrays)
    assert result["outputs"]["start"] == want["start"].tolist() and result["outputs"]["end"] == want["end"].tolist()
    np.testing.assert_allclose(np.array(result["outputs"]["probabilities"]), want["probabilities"], atol=1e-6)
    info = json.load(open(os.path.join(base, "1", ASSETS_EXTRA_DIR, METADATA_FILE)))
    assert info["jit_compile"] is True


def test_readme_saved_model_cli_output_shows_the_signature():
    with open(os.path.join(SERVING_DIR, "README.md")) as fh:
        readme = fh.read()
    start = readme.index(f"signature_def['{sig.SIGNATURE_NAME}']:")
    block = readme[start:readme.index("Method name is:", start)]
    for spec in sig.INPUTS + sig.OUTPUTS:
        kind = "inputs" if spec.name in sig.INPUT_NAMES else "outputs"
        match = re.search(rf"{kind}\['{spec.name}'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)", block)
        assert match, spec.name
        assert match.group(1) == spec.datatype, spec.name
        dims = [d.strip() for d in match.group(2).split(",")]
        assert len(dims) == spec.rank, spec.name
        assert all(d == "-1" for d, want in zip(dims, spec.shape) if want is None), spec.name
    assert f"Method name is: {sig.METHOD_NAME}" in readme[start:]


def test_tf_serving_and_vreloc_serve_read_one_monitoring_config(compose, k8s, tmp_path):
    """serving/monitoring.config turns on TF Serving's Prometheus endpoint in both deployment files, and
    `vreloc serve --monitoring-config-file` reads the same file to the same path."""
    from serving.metrics import PROMETHEUS_PATH, read_monitoring_config

    local = os.path.join(SERVING_DIR, "monitoring.config")
    assert read_monitoring_config(local) == PROMETHEUS_PATH
    (service,) = compose["services"].values()
    mounts = {v["target"]: v for v in service["volumes"]}
    target = _flags(service["command"])["monitoring_config_file"]
    assert os.path.basename(mounts[target]["source"]) == "monitoring.config" and mounts[target]["read_only"]
    (container,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    config_dir, config_file = os.path.split(_flags(container["args"])["monitoring_config_file"])
    assert config_file == "monitoring.config"
    carried = tmp_path / "monitoring.config"
    carried.write_text(k8s["ConfigMap"]["data"]["monitoring.config"])
    with open(local) as fh:
        assert carried.read_text().split() == fh.read().split()
    assert read_monitoring_config(str(carried)) == PROMETHEUS_PATH

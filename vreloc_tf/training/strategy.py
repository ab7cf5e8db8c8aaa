"""Which tf.distribute strategy a run uses, and how the CPU becomes several devices.

* ``TF_CONFIG`` set -> ``MultiWorkerMirroredStrategy`` (one process per worker). Launch two
  workers on one machine (or two machines) with the same command and data folder::

      TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                  "task": {"type": "worker", "index": 0}}' vreloc train ... --out runs/mw &
      TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                  "task": {"type": "worker", "index": 1}}' vreloc train ... --out runs/mw-worker1

  Worker 0 is the chief and writes the run folder; the others need an out dir of their
  own (Keras writes their checkpoints there and they can be deleted). Every worker
  builds the same seeded pair plan; ``AutoShardPolicy.DATA`` gives each its share.
* GPUs visible -> ``MirroredStrategy`` over all of them (``--devices N``: the first N).
* Otherwise ``MirroredStrategy`` over the CPU; ``--devices N`` first splits the CPU
  into N logical devices, so the distributed code path (replica split of the global
  batch, all-reduce, mirrored variables) runs and is tested without a GPU. This must
  happen before TensorFlow initialises its devices, i.e. before the first op.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

from vreloc_tf.errors import InputError

log = logging.getLogger(__name__)


def split_cpu(devices: int) -> None:
    """Configure ``devices`` logical CPU devices (before TensorFlow's first op)."""
    import tensorflow as tf

    if devices < 1:
        raise InputError(f"--devices must be >= 1, got {devices}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == devices:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError as exc:
        raise RuntimeError(f"--devices {devices}: TensorFlow has already initialised its devices; "
                           "split the CPU before any TensorFlow op runs (fresh process)") from exc


def make_strategy(devices: Optional[int] = None):
    """The strategy for this process (see the module docstring)."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
        log.info("TF_CONFIG set (task %s): MultiWorkerMirroredStrategy", task)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [f"/gpu:{i}" for i in range(len(gpus) if devices is None else min(devices, len(gpus)))]
        if devices is not None and devices > len(gpus):
            raise InputError(f"--devices {devices}: only {len(gpus)} GPU(s) visible")
        return tf.distribute.MirroredStrategy(names)
    if devices is not None and devices > 1:
        split_cpu(devices)
    cpus = tf.config.list_logical_devices("CPU")
    n = 1 if devices is None else devices
    if len(cpus) < n:
        raise RuntimeError(f"--devices {n}: only {len(cpus)} logical CPU device(s) exist")
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])


def is_chief(strategy) -> bool:
    """True for the process that writes the run folder (always, except non-chief multi-workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None) or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0
                                                      and "chief" not in resolver.cluster_spec().as_dict())


def is_multi_worker(strategy) -> bool:
    """True when the strategy spans several worker processes (a TF_CONFIG cluster of more than one task)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, ())) for job in ("chief", "worker")) > 1


def scale_loss_for_replicas(loss):
    """A per-replica loss divided by the replicas in sync, as Keras scales its compiled losses.

    Why: each replica computes the mean loss of its share of the global batch and the
    gradients are *summed* across replicas, so dividing by the replica count makes the
    update that of the global batch's mean loss.
    """
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * tf.cast(1.0 / replicas, loss.dtype)
    return loss

"""The one place that relies on a private Keras API, and why it cannot be avoided.

Keras 3's TensorFlow trainer calls ``Model._maybe_symbolic_build`` at the start of
``fit()``: under a distribution strategy it takes one batch from the distributed
iterator and reduces it with ``strategy.reduce("MEAN", batch, axis=None)`` to build
the model's layers, compiled loss and metrics symbolically. Under
``MultiWorkerMirroredStrategy`` that reduce fails for a dict of per-replica tensors
(our batches), so multi-worker training cannot start. Keras offers no public switch
for this step.

Our trainer wraps a functional model that is built when it is constructed and has no
compiled loss or metrics, so the only thing left to build is the optimizer, which
the public ``optimizer.build(variables)`` does. :class:`PrebuiltFit` overrides the hook
to do just that and skip the peek. ``tests/test_keras_compat.py`` fails with a clear
message when a Keras release renames the hook or stops calling it from ``fit()``.
"""
from __future__ import annotations

SYMBOLIC_BUILD_HOOK = "_maybe_symbolic_build"  # private Keras trainer method overridden below


class PrebuiltFit:
    """Mixin for a ``keras.Model`` whose layers are built before ``fit()`` (see the module docstring)."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not self.built or self.optimizer is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

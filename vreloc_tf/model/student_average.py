"""A running average of the student's weights: the second target of weak "ours" (a mean teacher).

Why: the label-free teacher (vreloc_tf.model.teacher) names the right segment for about two thirds of
the `demo` pairs. The student overtakes it within a few hundred steps and, trained on, then
learns the teacher's errors as well: val average 80.6 at step 200, 69.2 at step 1,000
(docs/QUALITY_HISTORY.md, "Does weak training drift?"). An exponential moving average of the student's
weights (Tarvainen & Valpola 2017) is the student of the last ~1 / (1 - momentum) steps; once
the student is better than its teacher, so is the average. The segment it decodes (Eq. 20) is
blended into the target (``loss.self_target_*``, vreloc_tf.model.losses.per_example_loss), which holds
the student near what it has learnt instead of pulling it back to the teacher's mistakes.

The averages are the trainer's variables, separate from the student's (BackupAndRestore saves
and restores them with the run). They are updated with aggregation "mean" so that the update
also runs in a tf.distribute replica context: every replica holds the same weights, so the mean
is the value. The average is evaluated with ``stateless_call`` of the student itself: no second
copy of the model. With ``loss.self_target_as_model`` (the default) the saved model is the
average: :meth:`StudentAverage.swapped_into` lends its weights to the student while the model is
evaluated and saved. The layer itself is never saved as a model, so it has no config (it is not
registered for serialization).
"""
from __future__ import annotations

import contextlib

import keras
from keras import ops

from vreloc_tf.contract import PROBABILITIES, REFERENCE_LENGTH
from vreloc_tf.model.decoding import decode_full


class StudentAverage(keras.layers.Layer):
    """EMA of a model's trainable weights, and the segments that model decodes with them."""

    def __init__(self, student: keras.Model, momentum: float = 0.99, **kwargs):
        super().__init__(trainable=False, **kwargs)
        if isinstance(momentum, bool) or not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"StudentAverage: momentum must be in [0, 1), got {momentum!r}")
        if not student.built:
            raise ValueError("StudentAverage: the student model must be built (its weights exist)")
        self.momentum = float(momentum)
        # the student itself is NOT stored: as an attribute its weights would become this layer's
        self.averages = []
        for i, variable in enumerate(student.trainable_variables):
            average = self.add_weight(shape=variable.shape, dtype=variable.dtype, initializer="zeros",
                                      trainable=False, aggregation="mean", name=f"average_{i}")
            average.assign(variable)
            self.averages.append(average)
        self.built = True

    def _check(self, student):
        if len(student.trainable_variables) != len(self.averages):
            raise ValueError(f"StudentAverage: the student has {len(student.trainable_variables)} trainable "
                             f"variables, the average {len(self.averages)}: not the model it was made for")

    def update(self, student: keras.Model) -> None:
        """average <- momentum * average + (1 - momentum) * weight, for every trainable weight."""
        self._check(student)
        for average, variable in zip(self.averages, student.trainable_variables):
            average.assign(self.momentum * average + (1.0 - self.momentum) * variable)

    @contextlib.contextmanager
    def swapped_into(self, student: keras.Model):
        """Inside the block, ``student`` holds the averaged weights; its own come back after it.

        What saves or evaluates "the model" then sees the average (``loss.self_target_as_model``).
        Assigning in the cross-replica context sets every replica of a mirrored variable.
        """
        self._check(student)
        own = [ops.convert_to_numpy(v.value) for v in student.trainable_variables]
        try:
            for variable, average in zip(student.trainable_variables, self.averages):
                variable.assign(average.value)
            yield student
        finally:
            for variable, value in zip(student.trainable_variables, own):
                variable.assign(value)

    def probabilities(self, student: keras.Model, inputs: dict):
        """The student's inference-mode probabilities [B, Lr, 4] with the averaged weights (no gradient)."""
        self._check(student)
        outputs, _ = student.stateless_call([a.value for a in self.averages],
                                            [v.value for v in student.non_trainable_variables], inputs,
                                            training=False)
        return ops.stop_gradient(outputs[PROBABILITIES])

    def segments(self, student: keras.Model, inputs: dict, max_length):
        """[B, 2] int32 [start, end): Eq. 20 decoding of :meth:`probabilities` (the self target)."""
        start, end, _ = decode_full(self.probabilities(student, inputs), inputs[REFERENCE_LENGTH], max_length)
        return ops.stack([start, end], axis=1)

"""The running average of the student (weak "ours"' second target and saved model): its update, forward pass,
segments and the swap that saves it."""
import keras
import numpy as np
import pytest

from helpers import reference_numpy as ref
from vreloc_tf.config import load_config
from vreloc_tf.model.functional import build_model
from vreloc_tf.model.student_average import StudentAverage

DIM = 6


def random_inputs(rng, batch=3, max_query=5, max_reference=14):
    """A padded batch; the padded tails hold garbage that must not matter."""
    query_length = rng.integers(1, max_query + 1, size=batch).astype("int32")
    reference_length = rng.integers(2, max_reference + 1, size=batch).astype("int32")
    query = rng.normal(size=(batch, max_query, DIM)).astype("float32")
    reference = rng.normal(size=(batch, max_reference, DIM)).astype("float32")
    for b in range(batch):
        query[b, query_length[b]:] = 1e3
        reference[b, reference_length[b]:] = -1e3
    return {"query": query, "query_length": query_length, "reference": reference,
            "reference_length": reference_length}


@pytest.fixture(scope="module")
def student():
    keras.utils.set_random_seed(3)
    return build_model(load_config("tiny"), DIM)


def test_update_is_an_exponential_moving_average(student):
    average = StudentAverage(student, momentum=0.9)
    start = [v.numpy().copy() for v in student.trainable_variables]
    for a, v in zip(average.averages, start):  # it starts at the student's weights
        np.testing.assert_array_equal(a.numpy(), v)
    rng = np.random.default_rng(0)
    moved = [v + rng.normal(size=v.shape).astype(v.dtype) for v in start]
    try:
        for variable, value in zip(student.trainable_variables, moved):
            variable.assign(value)
        average.update(student)
        average.update(student)
        for a, old, new in zip(average.averages, start, moved):  # two steps towards the new weights
            np.testing.assert_allclose(a.numpy(), 0.81 * old + 0.19 * new, rtol=1e-5, atol=1e-6)
    finally:
        for variable, value in zip(student.trainable_variables, start):
            variable.assign(value)
    assert not average.trainable and all(not a.trainable for a in average.averages)


def test_its_probabilities_and_segments_are_the_student_with_the_averaged_weights(student):
    average = StudentAverage(student, momentum=0.5)
    rng = np.random.default_rng(1)
    start = [v.numpy().copy() for v in student.trainable_variables]
    for variable, value in zip(student.trainable_variables, start):
        variable.assign(value + 0.3 * rng.normal(size=value.shape).astype(value.dtype))
    average.update(student)  # now halfway between the two: neither the student's weights nor the old ones
    inputs = random_inputs(rng)
    twin = build_model(load_config("tiny"), DIM)
    for variable, a in zip(twin.trainable_variables, average.averages, strict=True):
        variable.assign(a.numpy())
    for variable, v in zip(twin.non_trainable_variables, student.non_trainable_variables, strict=True):
        variable.assign(v.numpy())
    want = np.asarray(twin(inputs, training=False)["probabilities"])
    got = np.asarray(average.probabilities(student, inputs))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    own = np.asarray(student(inputs, training=False)["probabilities"])
    assert np.max(np.abs(own - got)) > 1e-4  # the student's own weights give something else
    segments = np.asarray(average.segments(student, inputs, max_length=8))
    for b, n in enumerate(inputs["reference_length"]):
        s, e, _ = ref.decode_full_bruteforce(got[b, :n].astype(np.float64), max_length=8)
        assert tuple(segments[b]) == (s, e)
    # padding changes nothing: the same pairs cut to their own lengths
    b = int(np.argmax(inputs["reference_length"]))
    alone = {k: v[b:b + 1] for k, v in inputs.items()}
    alone["query"] = alone["query"][:, :int(alone["query_length"][0])]
    np.testing.assert_array_equal(np.asarray(average.segments(student, alone, max_length=8))[0], segments[b])
    for variable, value in zip(student.trainable_variables, start):
        variable.assign(value)


def test_swapped_into_lends_the_averaged_weights_and_gives_the_students_back(student):
    average = StudentAverage(student, momentum=0.5)
    rng = np.random.default_rng(2)
    start = [v.numpy().copy() for v in student.trainable_variables]
    try:
        for variable, value in zip(student.trainable_variables, start):
            variable.assign(value + 0.3 * rng.normal(size=value.shape).astype(value.dtype))
        average.update(student)
        own = [v.numpy().copy() for v in student.trainable_variables]
        inputs = random_inputs(rng)
        want = np.asarray(average.probabilities(student, inputs))
        with average.swapped_into(student) as net:
            assert net is student
            for variable, a in zip(student.trainable_variables, average.averages, strict=True):
                np.testing.assert_array_equal(variable.numpy(), a.numpy())
            np.testing.assert_array_equal(np.asarray(student(inputs, training=False)["probabilities"]), want)
        for variable, value in zip(student.trainable_variables, own, strict=True):  # bit for bit back
            np.testing.assert_array_equal(variable.numpy(), value)
        with pytest.raises(RuntimeError, match="inside"):  # also when the block fails
            with average.swapped_into(student):
                raise RuntimeError("inside")
        for variable, value in zip(student.trainable_variables, own, strict=True):
            np.testing.assert_array_equal(variable.numpy(), value)
    finally:
        for variable, value in zip(student.trainable_variables, start):
            variable.assign(value)


def test_bad_momentum_and_another_model_are_refused(student):
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="momentum"):
            StudentAverage(student, momentum=bad)
    average = StudentAverage(student)
    other = build_model(load_config("tiny", ["model.similarity_features=false", "model.self_attention=false"]), DIM)
    with pytest.raises(ValueError, match="not the model it was made for"):
        average.update(other)
    with pytest.raises(ValueError, match="not the model it was made for"):
        with average.swapped_into(other):
            pass

import numpy as np
import pytest

from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.separation import score_auc


def _pairwise(pos, neg):
    """The definition, pair by pair: wins count 1, ties 1/2."""
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_the_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=rng.integers(1, 40)).astype(float)  # small integers: many ties
    neg = rng.integers(0, 6, size=rng.integers(1, 40)).astype(float)
    assert score_auc(pos, neg) == pytest.approx(_pairwise(pos, neg), abs=1e-12)
    cont_p, cont_n = rng.normal(size=50), rng.normal(0.5, size=30)
    assert score_auc(cont_p, cont_n) == pytest.approx(_pairwise(cont_p, cont_n), abs=1e-12)


def test_auc_ends_and_middle():
    assert score_auc([3, 4], [1, 2]) == 1.0
    assert score_auc([1, 2], [3, 4]) == 0.0
    assert score_auc([2, 2, 2], [2, 2]) == 0.5


def test_empty_or_non_finite_scores_are_refused_by_name():
    with pytest.raises(InputError, match="no negative scores"):
        score_auc([1.0], [])
    with pytest.raises(InputError, match="positive scores hold a non-finite value"):
        score_auc([np.nan], [1.0])

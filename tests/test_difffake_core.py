import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from detectors.difffake import GmmScorer, combine


def test_gmm_scorer_matches_sklearn():
    rng = np.random.default_rng(0)
    x = combine(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)))
    gmm = GaussianMixture(3, covariance_type="full", random_state=0).fit(x)
    s = GmmScorer.from_sklearn(gmm)
    np.testing.assert_allclose(s.score_samples(x[:50]), gmm.score_samples(x[:50]), rtol=1e-9, atol=1e-8)


def test_combine_modes_and_errors():
    a, b = np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])
    np.testing.assert_allclose(combine(a, b, "sq"), [[1 / np.sqrt(17), 4 / np.sqrt(17)]])
    np.testing.assert_allclose(np.linalg.norm(combine(a, b, "diff"), axis=1), 1.0)
    with pytest.raises(ValueError):
        combine(a, b, "bogus")

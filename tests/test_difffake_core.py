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


def test_diagonal_gmm_scores_like_sklearn_and_round_trips():
    """High-dimensional embeddings (1280-d EfficientNet features) use a diagonal GMM: (K, D) precisions."""
    import numpy as np
    from sklearn.mixture import GaussianMixture

    from detectors.difffake import GmmScorer

    x = np.random.default_rng(0).normal(size=(200, 16))
    g = GaussianMixture(2, covariance_type="diag", random_state=0).fit(x)
    s = GmmScorer.from_sklearn(g)
    assert s.diagonal and s.prec_chol.shape == (2, 16)
    assert np.allclose(s.score_samples(x), g.score_samples(x), atol=1e-9)
    assert np.allclose(GmmScorer.from_arrays(s.to_arrays()).score_samples(x), g.score_samples(x), atol=1e-9)
    with pytest.raises(ValueError, match="only covariance_type"):
        GmmScorer.from_sklearn(GaussianMixture(1, covariance_type="spherical").fit(x))

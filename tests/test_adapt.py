"""embedder.scoring.adapt: the ridge term is the closed-form ridge regression to one-hot class targets."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from byakugan.embedder.scoring.adapt import Adaptation


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), classes=st.integers(2, 6), ridge=st.sampled_from([0.03, 0.1, 1.0]),
       weight=st.sampled_from([0.1, 1.0]))
def test_the_term_is_the_ridge_regressions_output(seed, classes, ridge, weight):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, classes)
    X = rng.normal(size=(int(sizes.sum()), 16))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.repeat(np.arange(classes), sizes)
    groups = [np.flatnonzero(y == c) for c in range(classes)]
    Q = rng.normal(size=(7, 16))
    # ridge as least squares on rows stacked with sqrt(ridge)·I: min |XW - Y|² + ridge·|W|²
    Y = np.eye(classes)[y]
    W, *_ = np.linalg.lstsq(np.vstack([X, np.sqrt(ridge) * np.eye(16)]), np.vstack([Y, np.zeros((16, classes))]), rcond=None)
    got = Adaptation(weight, ridge).terms(Q, X, groups)
    np.testing.assert_allclose(got, weight * Q @ W, rtol=1e-4, atol=1e-4)


def test_from_a_grams_and_sums_kept_by_edits_it_is_the_same():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 8)).astype(np.float32)
    groups = [np.arange(0, 5), np.arange(5, 12)]
    a = Adaptation(0.3, 0.1)
    gram = sum(np.outer(x, x) for x in X.astype(np.float64))  # as enrolments add them, one at a time
    sums = np.stack([X[g].sum(0) for g in groups])
    np.testing.assert_allclose(a.directions(gram, sums), a.fit(X, groups), rtol=1e-5, atol=1e-6)


def test_a_query_is_pulled_towards_the_class_its_direction_separates():
    # two classes alike in one direction, apart in another: the term favours the right one
    X = np.array([[1, 0.1, 0], [1, 0.12, 0], [1, -0.1, 0], [1, -0.12, 0]], np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    terms = Adaptation(1.0, 0.1).terms(np.array([[1, 0.05, 0]]), X, [np.array([0, 1]), np.array([2, 3])])
    assert terms[0, 0] > terms[0, 1]


@pytest.mark.parametrize("copies", [False, True])
def test_a_reference_left_out_gets_the_terms_a_fit_without_it_gives(copies):
    from byakugan.embedder.scoring.adapt import left_out

    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = X + 0.1 * rng.normal(size=X.shape)  # a query form a little unlike the stored one
    own = np.array([0] * 4 + [1] * 6)
    groups = [np.arange(0, 4), np.arange(4, 10)]
    a = Adaptation(0.5, 0.2)
    # with copies: reference 5 and 6 are each other's near-copy, left out together
    near = {5: [6], 6: [5]} if copies else {}
    gram, sums = X.T @ X, np.stack([X[g].sum(0) for g in groups])
    inside, out = left_out(gram, sums, X, Q, own, a, [X[near.get(i, [])] for i in range(10)])
    np.testing.assert_allclose(inside, Q @ a.directions(gram, sums).T, atol=1e-5)
    for i in range(10):
        keep = np.ones(10, bool)
        keep[[i] + near.get(i, [])] = False
        D = a.directions(X[keep].T @ X[keep], np.stack([X[g[keep[g]]].sum(0) for g in groups]))
        np.testing.assert_allclose(out[i], Q[i] @ D.T, atol=1e-4)


def test_settings_are_checked_and_named():
    assert Adaptation.from_dict({"weight": 0.3, "ridge": 0.1}) == Adaptation(0.3, 0.1)
    for bad in ({"weight": 0}, {"weight": True, "ridge": 0.1}, {"weight": 0.3, "ridge": float("nan")}, [0.3], None,
                {"weight": 0.3, "ridge": 0.1, "x": 1}, {"weight": 3, "ridge": 0.1}, {"weight": 0.3, "ridge": 1e-300},
                {"weight": 10**400, "ridge": 0.1}, {"weight": float("inf"), "ridge": 0.1}):
        with pytest.raises(ValueError, match="adapt"):
            Adaptation.from_dict(bad)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), share=st.sampled_from([1.0, 30.0]))
def test_a_cohort_in_the_fit_is_rows_of_target_zero(seed, share):
    """cohort C: the ridge regression with C's rows, each weighted share/|C|, as examples of no class."""
    rng = np.random.default_rng(seed)
    X, C, Q = (rng.normal(size=(n, 12)) for n in (9, 20, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    groups = [np.arange(0, 4), np.arange(4, 9)]
    a = Adaptation(0.5, 0.1, share)
    Y = np.zeros((9 + 20, 2))
    Y[:4, 0] = Y[4:9, 1] = 1
    rows = np.vstack([X, np.sqrt(share / len(C)) * C, np.sqrt(0.1) * np.eye(12)])
    W, *_ = np.linalg.lstsq(rows, np.vstack([Y, np.zeros((12, 2))]), rcond=None)
    np.testing.assert_allclose(a.terms(Q, X, groups, C), 0.5 * Q @ W, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(Adaptation(0.5, 0.1).terms(Q, X, groups, C), Adaptation(0.5, 0.1).terms(Q, X, groups))
    assert a.to_dict() == {"weight": 0.5, "ridge": 0.1, "cohort": share}
    assert Adaptation.from_dict(a.to_dict()) == a and Adaptation(0.5, 0.1).to_dict() == {"weight": 0.5, "ridge": 0.1}
    for bad in (-1, float("nan"), 1e4, "30"):
        with pytest.raises(ValueError, match="adapt cohort"):
            Adaptation.from_dict({"weight": 0.5, "ridge": 0.1, "cohort": bad})

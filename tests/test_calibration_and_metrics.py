import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model.calibration import expected_calibration_error, fit_temperature, softmax
from model.metrics import classification_report


@given(st.floats(min_value=0.2, max_value=5.0))
def test_softmax_rows_sum_to_one(temperature: float) -> None:
    logits = np.random.default_rng(0).normal(size=(50, 5)) * 10
    probs = softmax(logits, temperature)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (probs >= 0).all()


@settings(max_examples=10, deadline=None)
@given(st.floats(min_value=0.4, max_value=3.0))
def test_fit_temperature_recovers_the_generating_temperature(true_temperature: float) -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(20000, 4)) * 3
    probs = softmax(logits, true_temperature)
    labels = np.array([rng.choice(4, p=row) for row in probs])
    assert abs(fit_temperature(logits, labels) - true_temperature) / true_temperature < 0.1


def test_temperature_scaling_lowers_ece_of_overconfident_scores() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5000, 3)) * 2
    labels = np.array([rng.choice(3, p=row) for row in softmax(logits, 1.0)])
    overconfident = logits * 3
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, fit_temperature(overconfident, labels)), labels)
    assert before > 0.1
    assert after < 0.03


def test_classification_report_matches_hand_computation() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    predictions = np.array([0, 1, 1, 1, 0])
    report = classification_report(labels, predictions, ["a", "b", "c"])
    assert report["accuracy"] == 0.6
    assert report["per_class"]["a"]["precision"] == 0.5
    assert report["per_class"]["b"]["recall"] == 1.0
    assert report["per_class"]["c"]["f1"] == 0.0
    f1_a, f1_b = 0.5, 2 * (2 / 3) / (2 / 3 + 1)
    assert abs(report["macro_f1"] - (f1_a + f1_b + 0.0) / 3) < 1e-9

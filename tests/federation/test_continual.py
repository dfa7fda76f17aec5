import pytest

from federation.continual import forgetting
from federation.errors import FederationError


def test_forgetting_hand_computed():
    acc = [[0.9, 0.1, 0.0],
           [0.7, 0.8, 0.2],
           [0.5, 0.6, 0.9]]
    f = forgetting(acc)
    # phase 0: max(0.9, 0.7) - 0.5 = 0.4 ; phase 1: max(0.8) - 0.6 = 0.2
    assert f["per_phase"] == pytest.approx([0.4, 0.2])
    assert f["mean"] == pytest.approx(0.3)
    assert f["final_mean_accuracy"] == pytest.approx(2.0 / 3)


def test_forgetting_needs_square_matrix():
    with pytest.raises(FederationError, match="square"):
        forgetting([[1.0, 0.0]])

"""The embedded scene's hands: joint layout, gesture shapes and trajectories, view validity, capsules."""

import itertools

import numpy as np
import pytest

from bridge.embedded.hands import BONES, JOINT_NAMES, HandAnimator, HandModelError, hand_capsules, hand_pose
from bridge.tasks import GESTURES

THUMB_TIP, INDEX_TIP, WRIST, PALM = 5, 10, 1, 0
PHASES = np.linspace(0.0, 1.0, 24, endpoint=False)


def _mean_pose(gesture, side="right"):
    return np.mean([hand_pose(gesture, p, side) for p in PHASES], axis=0)


def test_joint_layout_is_openxr():
    assert len(JOINT_NAMES) == 26
    assert JOINT_NAMES[:6] == (
        "palm",
        "wrist",
        "thumb_metacarpal",
        "thumb_proximal",
        "thumb_distal",
        "thumb_tip",
    )
    assert JOINT_NAMES[6:11] == (
        "index_metacarpal",
        "index_proximal",
        "index_intermediate",
        "index_distal",
        "index_tip",
    )
    assert JOINT_NAMES[21] == "little_metacarpal" and JOINT_NAMES[25] == "little_tip"
    children = [c for _, c in BONES]
    assert sorted(children) == list(range(2, 26))  # a tree rooted at the wrist; the palm is drawn separately
    assert all(0 <= p < 26 for p, _ in BONES)


def test_hand_pose_shape_and_bone_lengths_scale():
    big, small = hand_pose("open_palm", 0.3, "right"), hand_pose("open_palm", 0.3, "right", scale=0.8)
    assert big.shape == (26, 3)
    for a, b in BONES:
        assert np.linalg.norm(small[a] - small[b]) == pytest.approx(0.8 * np.linalg.norm(big[a] - big[b]))


def test_pinch_closes_thumb_and_index_tips_open_palm_spreads_them():
    pinch, open_palm = hand_pose("pinch", 0.5, "right"), hand_pose("open_palm", 0.5, "right")
    assert np.linalg.norm(pinch[THUMB_TIP] - pinch[INDEX_TIP]) < 0.02
    assert np.linalg.norm(open_palm[THUMB_TIP] - open_palm[INDEX_TIP]) > 0.06


def test_point_extends_the_index_and_curls_the_rest():
    j = hand_pose("point", 0.5, "right")
    index_reach = np.linalg.norm(j[INDEX_TIP] - j[WRIST])
    middle_reach = np.linalg.norm(j[15] - j[WRIST])
    assert index_reach > 0.16 and middle_reach < 0.10


@pytest.mark.parametrize("side", ["right", "left"])
def test_swipes_move_the_wrist_left_and_right(side):
    left_start, left_end = hand_pose("swipe_left", 0.05, side), hand_pose("swipe_left", 0.7, side)
    right_start, right_end = hand_pose("swipe_right", 0.05, side), hand_pose("swipe_right", 0.7, side)
    assert left_end[WRIST, 0] - left_start[WRIST, 0] < -0.15
    assert right_end[WRIST, 0] - right_start[WRIST, 0] > 0.15


def test_left_hand_mirrors_the_right():
    right, left = hand_pose("thumbs_up", 0.25, "right"), hand_pose("thumbs_up", 0.25, "left")
    assert np.allclose(left, right * np.array([-1.0, 1.0, 1.0]))


def test_every_pair_of_gestures_differs_by_more_than_2_cm():
    means = {g: _mean_pose(g) for g in GESTURES}
    for a, b in itertools.combinations(GESTURES, 2):
        gap = np.linalg.norm(means[a] - means[b], axis=1).mean()
        assert gap > 0.02, (a, b, gap)


def test_raised_hands_stay_inside_a_60_degree_cone():
    for g, side, p in itertools.product(GESTURES[1:], ("left", "right"), PHASES):
        j = hand_pose(g, p, side)
        off_axis_deg = np.degrees(np.arccos(j[:, 2] / np.linalg.norm(j, axis=1)))
        assert off_axis_deg.max() < 30.0, (g, side, p)
        assert 0.3 <= j[PALM, 2] <= 0.45 and -0.2 < j[PALM, 1] < 0.0  # in front, below eye level


def test_gesture_not_in_vocabulary_is_rejected():
    with pytest.raises(HandModelError, match="gesture"):
        hand_pose("salute", 0.0, "right")
    with pytest.raises(HandModelError, match="side"):
        hand_pose("pinch", 0.0, "middle")


# ------------------------------------------------------------------ animator
def _steps(anim, gesture, n, dt_s=0.1):
    return [anim.step(dt_s, gesture) for _ in range(n)]


def test_hands_hang_out_of_view_without_a_gesture():
    anim = HandAnimator(rng=np.random.default_rng(0))
    for joints, valid in _steps(anim, "none", 20):
        assert joints.shape == (2, 26, 3) and joints.dtype == np.float32
        assert not valid.any()
        assert joints[:, PALM, 1].max() < -0.4  # well below the eyes


@pytest.mark.parametrize(("handedness", "dominant"), [("right", 1), ("left", 0)])
def test_gesture_raises_the_dominant_hand_into_view_and_lowers_it(handedness, dominant):
    anim = HandAnimator(rng=np.random.default_rng(1), handedness=handedness)
    _steps(anim, "none", 5)
    raised = _steps(anim, "wave", 5)  # 0.5 s
    assert raised[-1][1][dominant] and not raised[-1][1][1 - dominant]
    lowered = _steps(anim, "none", 5)
    assert not lowered[-1][1].any()


def test_animator_pinch_touches_and_swipe_left_moves_left():
    anim = HandAnimator(rng=np.random.default_rng(2), gesture_duration_s=1.2)
    _steps(anim, "none", 3)
    pinch = _steps(anim, "pinch", 6)[-1][0][1]
    assert np.linalg.norm(pinch[THUMB_TIP] - pinch[INDEX_TIP]) < 0.02
    swipe = [j[1, WRIST, 0] for j, _ in _steps(anim, "swipe_left", 8)]
    assert swipe[-1] - swipe[1] < -0.1


def test_narrow_fov_can_be_passed_per_step():
    anim = HandAnimator(rng=np.random.default_rng(3))
    _steps(anim, "open_palm", 5)
    assert anim.step(0.1, "open_palm")[1][1]
    assert not anim.step(0.1, "open_palm", fov_deg=(10.0, 10.0))[1][1]


def test_animator_is_deterministic_per_seed():
    script = ["none"] * 3 + ["grab"] * 8 + ["thumbs_up"] * 8 + ["none"] * 3

    def run(seed):
        anim = HandAnimator(rng=np.random.default_rng(seed), hand_scale=0.9)
        return np.stack([anim.step(0.1, g)[0] for g in script])

    assert np.array_equal(run(4), run(4))
    assert not np.array_equal(run(4), run(5))


def test_animator_rejects_bad_settings():
    with pytest.raises(HandModelError, match="handedness"):
        HandAnimator(rng=np.random.default_rng(0), handedness="both")
    with pytest.raises(HandModelError, match="gesture"):
        HandAnimator(rng=np.random.default_rng(0)).step(0.1, "salute")
    with pytest.raises(HandModelError, match="fov_deg"):
        HandAnimator(rng=np.random.default_rng(0), fov_deg=(0.0, 90.0))


# ------------------------------------------------------------------ capsules
def test_capsules_cover_bones_and_palm_of_valid_hands_only():
    joints = np.stack([hand_pose("open_palm", 0.0, "left"), hand_pose("open_palm", 0.0, "right")])
    one = hand_capsules(joints, np.array([False, True]))
    # 24 bones + 3 knuckle-line + 3 base-line + 4 metacarpal + 1 thumb web = 35 per hand
    assert len(one) == 35
    assert len(hand_capsules(joints, np.array([True, True]))) == 70
    assert hand_capsules(joints, np.array([False, False])) == []
    p0, p1, radius = one[0]
    assert np.allclose(p0, joints[1, WRIST]) and np.allclose(p1, joints[1, 2])
    assert all(0.005 < r < 0.02 for _, _, r in one)
    small = hand_capsules(
        np.stack([hand_pose("open_palm", 0.0, s, scale=0.8) for s in ("left", "right")]), [False, True]
    )
    assert small[0][2] == pytest.approx(0.8 * radius)
    with pytest.raises(HandModelError, match="joints_head"):
        hand_capsules(np.zeros((26, 3)), np.array([True, True]))

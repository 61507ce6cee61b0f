import numpy as np
import pytest

from ferkit import labels as L


@pytest.mark.parametrize("alias,name", [("Anger", "angry"), ("HAPPINESS", "happy"), ("sadness", "sad"),
                                        ("surprised", "surprise"), ("neutrality", "neutral"), ("Fearful", "fear"),
                                        ("disgusted", "disgust"), ("contempt", "contempt")])
def test_aliases_resolve_case_free(alias, name):
    assert L.canonical(alias) == name


def test_unknown_label_is_a_clear_error():
    with pytest.raises(L.UnknownLabelError, match="unknown emotion label 'bored'"):
        L.canonical("bored")
    assert L.try_canonical("NF") is None


def test_spaces():
    assert L.space("fer2013") == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert set(L.space("8")) == set(L.FER2013_7) | {"contempt"}
    assert set(L.space("6")) == set(L.space("8")) - {"disgust", "contempt"}
    assert L.space(["Happiness", "anger"]) == ("happy", "angry")


def test_three_way_grouping_follows_seed_003():
    assert L.group_of("happy") == "positive"
    assert {L.group_of(x) for x in ("neutral", "surprise")} == {"neutral"}
    assert {L.group_of(x) for x in ("angry", "contempt", "disgust", "fear", "sad")} == {"negative"}


def _mapped(scores, target, **kw):
    g = target if isinstance(target, L.Grouping) else L.Grouping("x", L.space(target))
    return dict(zip(g.labels, L.map_probs(list(scores.values()), list(scores), target, **kw)))


def test_map_probs_sums_into_groups_by_name():
    scores = {"angry": 0.1, "disgust": 0.05, "fear": 0.05, "happy": 0.4, "sad": 0.1, "surprise": 0.2, "neutral": 0.1}
    out = _mapped(scores, L.grouping("3"))
    assert out == pytest.approx({"positive": 0.4, "neutral": 0.3, "negative": 0.3})


def test_map_probs_drops_and_renormalises_for_six_classes():
    scores = {"angry": 0.2, "disgust": 0.5, "happy": 0.3}
    out = _mapped(scores, L.grouping("6"))
    assert out["angry"] == pytest.approx(0.4) and out["happy"] == pytest.approx(0.6)
    assert "disgust" not in out and out["fear"] == 0.0
    raw = _mapped(scores, "6", renormalise=False)
    assert sum(raw.values()) == pytest.approx(0.5)


def test_map_probs_between_orders_keeps_names():
    ferplus_order = dict(zip(L.FERPLUS_8, [0.1, 0.3, 0.05, 0.05, 0.2, 0.1, 0.1, 0.1]))
    out = _mapped(ferplus_order, "8")
    assert list(out) == list(L.BASIC_8)
    assert out["happy"] == pytest.approx(0.3) and out["contempt"] == pytest.approx(0.1)


def test_map_probs_maps_batches_and_leaves_empty_rows_uniform():
    probs = np.array([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0]])
    out = L.map_probs(probs, ["angry", "disgust", "happy"], "6")
    assert out.shape == (2, 6)
    assert out[0][L.BASIC_6.index("happy")] == pytest.approx(0.6)
    assert out[1] == pytest.approx(np.full(6, 1 / 6))  # only disgust, which the 6 classes drop

"""Metrics against values worked out by hand (the arithmetic is in each test)."""

import math

import pytest

from dora_bench.tasks import metrics


def test_accuracy_and_f1():
    predictions = [1, 1, 0, 1, 0, 0]
    labels = [1, 0, 0, 1, 1, 0]
    # correct at positions 0, 2, 3, 5: 4 of 6
    assert metrics.accuracy(predictions, labels) == pytest.approx(4 / 6)
    # class 1: TP = 2 (pos 0, 3), FP = 1 (pos 1), FN = 1 (pos 4): P = R = 2/3, F1 = 2/3
    assert metrics.f1(predictions, labels) == pytest.approx(2 / 3)


def test_matthews_correlation():
    predictions = [1, 1, 1, 0, 0, 0, 1, 0]
    labels = [1, 1, 0, 0, 0, 1, 1, 0]
    # TP = 3 (0, 1, 6), TN = 3 (3, 4, 7), FP = 1 (2), FN = 1 (5)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 - 1) / sqrt(4*4*4*4) = 8/16
    assert metrics.mcc(predictions, labels) == pytest.approx(0.5)
    assert metrics.mcc([1] * 8, labels) == 0.0  # constant predictions: no correlation


def test_pearson_and_spearman():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [1.0, 3.0, 2.0, 4.0]
    # deviations from the mean 2.5: x -> (-1.5, -0.5, 0.5, 1.5), y -> (-1.5, 0.5, -0.5, 1.5)
    # sum of products = 2.25 - 0.25 - 0.25 + 2.25 = 4; both sums of squares = 5: r = 4/5
    assert metrics.pearson(x, y) == pytest.approx(0.8)
    # ranks equal the values: d = (0, 1, 1, 0), rho = 1 - 6*2 / (4*(16-1)) = 1 - 12/60
    assert metrics.spearman(x, y) == pytest.approx(0.8)
    assert metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0  # constant prediction, not nan


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple, a pear  ", "apple pear"),
        ("Theory of the Atom", "theory of atom"),  # "the" inside "Theory" stays
        ("U.S.A.", "usa"),
    ],
)
def test_squad_normalisation(text, normalised):
    assert metrics.normalize_answer(text) == normalised


def test_squad_f1_and_exact_match():
    # pred "the big red fox" -> [big, red, fox]; gold "a red fox jumped" -> [red, fox, jumped]
    # common 2: P = 2/3, R = 2/3, F1 = 2/3
    assert metrics.squad_f1("the big red fox", "a red fox jumped") == pytest.approx(2 / 3)
    assert metrics.squad_exact("The Fox.", "fox") == 1.0
    scores = metrics.squad_metrics(
        {"q1": "red fox", "q2": "Paris", "q3": "", "q4": "something"},
        {
            "q1": ["the big red fox", "red fox"],  # max over golds: exact match with the 2nd
            "q2": ["London"],  # 0 / 0
            "q3": [],  # v2 no-answer, predicted "": 1 / 1
            "q4": [""],  # golds that normalise to nothing count as no answer: 0 / 0
        },
    )
    # EM = (1 + 0 + 1 + 0) / 4; F1 = (1 + 0 + 1 + 0) / 4
    assert scores == pytest.approx({"exact_match": 0.5, "f1": 0.5})


def test_squad_v2_scores_of_a_small_dev_set_by_hand():
    # The official SQuAD v2.0 evaluation: normalise (lowercase, drop punctuation, drop a/an/the,
    # collapse whitespace); a question's gold answers that normalise to nothing are dropped and a
    # question with none left has the single gold "" (no answer); EM and token F1 take the best
    # gold; F1 is 1 when both sides are empty and 0 when only one is.
    gold = {
        "broncos": ["Denver Broncos", "the Denver Broncos"],
        "no_answer_kept": [],
        "no_answer_missed": [],
        "answer_missed": ["Saint Bernadette Soubirous"],
        "car": ["a red car", "red truck"],
        "distance": ["1,000 km"],
        "repeat": ["Anna Brun"],
    }
    predictions = {
        "broncos": "Broncos",  # [broncos] vs [denver, broncos]: P 1, R 1/2, F1 2/3, EM 0 (both golds alike)
        "no_answer_kept": "",  # "" vs "": EM 1, F1 1
        "no_answer_missed": "in 1921",  # an answer where there is none: 0, 0
        "answer_missed": "",  # no answer where there is one: 0, 0
        "car": "The red car!",  # -> "red car" = gold 1: EM 1, F1 1
        "distance": "1000 km",  # "1,000" loses its comma: EM 1, F1 1
        "repeat": "Anna Brun Anna",  # common tokens count once each: 2 of 3 predicted, 2 of 2 gold:
        #                            P 2/3, R 1, F1 = 2 (2/3) / (5/3) = 4/5; EM 0
    }
    scores = metrics.squad_metrics(predictions, gold)
    assert scores["exact_match"] == pytest.approx((0 + 1 + 0 + 0 + 1 + 1 + 0) / 7)
    assert scores["f1"] == pytest.approx((2 / 3 + 1 + 0 + 0 + 1 + 1 + 4 / 5) / 7)
    # the unanswerable half alone: one of two right
    only_none = {k: gold[k] for k in ("no_answer_kept", "no_answer_missed")}
    assert metrics.squad_metrics(predictions, only_none) == pytest.approx({"exact_match": 0.5, "f1": 0.5})


def test_squad_missing_prediction_scores_zero():
    scores = metrics.squad_metrics({"q1": "a cat"}, {"q1": ["cat"], "q2": ["dog"]})
    assert scores == pytest.approx({"exact_match": 0.5, "f1": 0.5})
    # the missing one first: the questions after it are still scored (1 of 2 right, not 0)
    scores = metrics.squad_metrics({"q2": "dog"}, {"q1": ["cat"], "q2": ["dog"]})
    assert scores == pytest.approx({"exact_match": 0.5, "f1": 0.5})


def test_squad_of_no_questions_is_zero_under_both_names():
    assert metrics.squad_metrics({}, {}) == {"exact_match": 0.0, "f1": 0.0}


def test_f1_without_any_positive_is_zero_not_one():
    # TP = FP = FN = 0 (every label and prediction negative): F1 is undefined, scored 0 as GLUE's
    # scripts (sklearn's zero_division=0) do; zero_division=1 would give 1.0
    assert metrics.f1([0, 0, 0], [0, 0, 0]) == 0.0


def test_correlation_of_two_points_and_of_labels_one_apart():
    # two distinct points lie on a line: r = 1 (not "too few to correlate")
    assert metrics.pearson([1.0, 2.0], [3.0, 5.0]) == pytest.approx(1.0)
    # labels spanning exactly 1 are not constant: y = 0.5 x + 0.25 over x in [-0.5, 1.5], r = 1
    assert metrics.pearson([-0.5, 0.5, 1.5], [0.0, 0.5, 1.0]) == pytest.approx(1.0)
    assert metrics.pearson([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0  # constant labels: 0, not nan


def test_rouge_with_stemming():
    # reference "the cats sat on the mat", prediction "the cat sat": stems the/cat/sat/on/the/mat vs the/cat/sat
    # ROUGE-1: 3 overlaps, P = 3/3, R = 3/6 -> F = 2/3
    # ROUGE-2: bigrams pred {the cat, cat sat} both in ref: P = 2/2, R = 2/5 -> F = 2*0.4/1.4 = 4/7
    # ROUGE-L: LCS = 3 -> same as ROUGE-1
    scores = metrics.rouge(["the cat sat"], ["the cats sat on the mat"], stemmer=True)
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(4 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)
    two = metrics.rouge(["the cat sat", "nothing"], ["the cats sat on the mat", "everything"], stemmer=True)
    assert two["rouge1"] == pytest.approx((2 / 3 + 0) / 2)  # mean over examples
    assert not math.isnan(metrics.rouge([""], ["a summary"])["rougeL"])


def test_rouge_without_stemming_is_the_default():
    # unstemmed, "cat" != "cats": ROUGE-1 overlaps the, sat: P = 2/3, R = 2/6 -> F = 2*(2/9)/(1) = 4/9
    assert metrics.rouge(["the cat sat"], ["the cats sat on the mat"])["rouge1"] == pytest.approx(4 / 9)

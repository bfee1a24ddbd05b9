"""Evaluation metrics, computed offline (``evaluate.load`` would fetch scripts from the Hub).

Every function returns a fraction (0.7123, not 71.23); tables multiply by 100.

- Classification: accuracy, binary F1 of class 1, Matthews correlation (scikit-learn).
- Regression (STS-B): Pearson and Spearman correlation (scipy).
- SQuAD: exact match and token F1 after the official normalisation, max over gold answers;
  an unanswerable question (SQuAD v2) has the single gold answer "" (the empty prediction).
- Summarisation: ROUGE-1/2/L F-measure with Porter stemming (rouge-score), averaged over examples.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

# -- classification and regression ---------------------------------------------------------


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def f1(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


def mcc(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation (CoLA); 0 when a prediction or label column is constant."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    return _correlation("pearsonr", predictions, labels)


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    return _correlation("spearmanr", predictions, labels)


def _correlation(name: str, predictions: Sequence[float], labels: Sequence[float]) -> float:
    import scipy.stats

    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    # A constant column (an untrained model) has no defined correlation; scipy warns and
    # returns nan, which would poison best-epoch selection. Score it as no correlation.
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(getattr(scipy.stats, name)(x, y)[0])


#: Metrics of a sequence-classification task, by the names used in conf/task/*.yaml.
CLASSIFICATION_METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}

# -- SQuAD ---------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lowercase, drop punctuation, drop the articles
    a/an/the, collapse whitespace (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token F1 between normalised strings; an empty side scores 1 only against empty."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], gold_answers: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Mean exact match and F1 over ``gold_answers`` (id -> answer texts).

    Each question scores its best gold answer. Gold answers that normalise to nothing
    are dropped, and a question left with none (SQuAD v2 "no answer") has gold ``""``:
    only an empty prediction scores there. A question with no prediction scores 0.
    """
    if not gold_answers:
        return {"exact_match": 0.0, "f1": 0.0}
    exact_total = f1_total = 0.0
    for qid, answers in gold_answers.items():
        golds = [a for a in answers if normalize_answer(a)] or [""]
        prediction = predictions.get(qid)
        if prediction is None:
            continue
        exact_total += max(squad_exact(prediction, g) for g in golds)
        f1_total += max(squad_f1(prediction, g) for g in golds)
    return {"exact_match": exact_total / len(gold_answers), "f1": f1_total / len(gold_answers)}


# -- summarisation -------------------------------------------------------------------------


def rouge(predictions: Sequence[str], references: Sequence[str], stemmer: bool = False) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure, keys rouge1, rouge2, rougeL. ``stemmer``: Porter stemming
    of both sides (off by default, as ``evaluate``'s rouge, which the paper's released code
    called; on, scores come out higher, as many summarisation papers report them)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=stemmer)
    totals = dict.fromkeys(kinds, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # (target, prediction)
        for kind in kinds:
            totals[kind] += scores[kind].fmeasure
    return {kind: total / max(len(predictions), 1) for kind, total in totals.items()}

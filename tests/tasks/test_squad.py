"""SQuAD: features over windows, span post-processing on hand-made logits, evaluation on a tiny model."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dora_bench.errors import DataError
from dora_bench.tasks import load_task
from dora_bench.tasks.squad import NOT_CONTEXT, best_answers, build_features, read_squad_json

LONG = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
    "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland "
    "and Norway who, under their leader Rollo, agreed to swear fealty to King Charles III."
)
SHORT = "Café Müller opened in 1921 in Zürich; its owner was Anna Brun."


def squad_json(version_2: bool) -> dict:
    qas_long = [
        {
            "id": "q1",
            "question": "Where is Normandy?",
            "answers": [{"text": "France", "answer_start": LONG.index("France")}],
        },
        {
            "id": "q2",
            "question": "Who led the raiders?",
            "answers": [{"text": "Rollo", "answer_start": LONG.index("Rollo")}],
        },
    ]
    qas_short = [
        {
            "id": "q3",
            "question": "Who owned the café?",
            "answers": [{"text": "Anna Brun", "answer_start": SHORT.index("Anna Brun")}],
        }
    ]
    if version_2:
        qas_short.append(
            {
                "id": "q4",
                "question": "When did it close?",
                "answers": [],
                "is_impossible": True,
                "plausible_answers": [{"text": "1921", "answer_start": SHORT.index("1921")}],
            }
        )
    return {
        "version": "2.0" if version_2 else "1.1",
        "data": [
            {"title": "t", "paragraphs": [{"context": LONG, "qas": qas_long}, {"context": SHORT, "qas": qas_short}]}
        ],
    }


@pytest.fixture
def squad_dir(tmp_path):
    (tmp_path / "train-v1.1.json").write_text(json.dumps(squad_json(False)))
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(squad_json(False)))
    (tmp_path / "train-v2.0.json").write_text(json.dumps(squad_json(True)))
    (tmp_path / "dev-v2.0.json").write_text(json.dumps(squad_json(True)))
    return tmp_path


SMALL = {"max_length": 64, "doc_stride": 24, "max_query_length": 16}  # several windows over LONG


@pytest.fixture(params=["byte_tokenizer", "roberta_tokenizer"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def test_train_targets_point_at_the_answer(squad_dir, tokenizer):
    examples = read_squad_json(squad_dir / "train-v2.0.json")
    features = build_features(examples, tokenizer, train=True, **SMALL)
    ids = features["input_ids"]
    windows = len(ids["offsets"]) - 1
    assert windows > len(examples)  # the long context was split
    found = set()
    for f in range(windows):
        row = ids["values"][ids["offsets"][f] : ids["offsets"][f + 1]]
        assert len(row) <= SMALL["max_length"]
        s, e = features["start_positions"][f].item(), features["end_positions"][f].item()
        if s:
            found.add(tokenizer.decode(row[s : e + 1]).strip())
        else:
            assert e == 0
    # every answer is targeted in at least one window; the no-answer question (q4) nowhere
    assert found == {"France", "Rollo", "Anna Brun"}


def one_hot_logits(train_features, eval_features, windows):
    """Logits that put all weight on the training target of each window: a perfect model."""
    lengths = (eval_features["input_ids"]["offsets"][1:] - eval_features["input_ids"]["offsets"][:-1]).tolist()
    starts, ends = [], []
    for f in range(windows):
        start, end = np.zeros(lengths[f]), np.zeros(lengths[f])
        start[train_features["start_positions"][f]] = 10.0
        end[train_features["end_positions"][f]] = 10.0
        starts.append(start)
        ends.append(end)
    return starts, ends


@pytest.mark.parametrize("version_2", [False, True])
def test_perfect_logits_give_exact_answers(squad_dir, tokenizer, version_2):
    name = "train-v2.0.json" if version_2 else "train-v1.1.json"
    examples = read_squad_json(squad_dir / name)
    train = build_features(examples, tokenizer, train=True, **SMALL)
    dev = build_features(examples, tokenizer, train=False, **SMALL)
    windows = len(dev["example_index"])
    assert windows == len(train["start_positions"])  # the same windows either way
    starts, ends = one_hot_logits(train, dev, windows)
    offsets = [
        dev["offsets"]["values"][dev["offsets"]["offsets"][f] : dev["offsets"]["offsets"][f + 1]].numpy()
        for f in range(windows)
    ]
    texts = best_answers(
        [e.context for e in examples], dev["example_index"].tolist(), offsets, starts, ends, allow_null=version_2
    )
    expected = ["France", "Rollo", "Anna Brun"] + ([""] if version_2 else [])
    assert texts == expected


def test_post_processing_rules_on_hand_made_logits():
    context = "The cat sat on the mat."
    #               tokens: q  q  The cat sat on the mat .
    spans = np.array(
        [(NOT_CONTEXT, NOT_CONTEXT)] * 2 + [(0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22), (22, 23)]
    )
    start = np.array([0.0, 9.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # 9.0 sits on a question token: not allowed
    end = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 0.0])
    # candidates: "cat ... mat" (3: cat, 7: mat) = 2 + 3 = 5 beats "The ... mat" = 1 + 3 and "cat" = 2 + 1
    assert best_answers([context], [0], [spans], [start], [end]) == ["cat sat on the mat"]
    # at most 3 tokens: "cat sat on the mat" (5 tokens) is out, "cat" (2 + 1 = 3) is best
    assert best_answers([context], [0], [spans], [start], [end], max_answer_length=3) == ["cat"]
    # an end before every start is never chosen
    late_start = np.array([0, 0, 0, 0, 0, 0, 0, 5.0, 0])
    early_end = np.array([0, 0, 4.0, 0, 0, 0, 0, 1.0, 0])  # (7, 2) would score 9; (7, 7) scores 6
    assert best_answers([context], [0], [spans], [late_start], [early_end]) == ["mat"]
    # v2: null score start[0] + end[0] = 6 against the best span 5: "" with threshold 0, the span with threshold 2
    null_start, null_end = start.copy(), end.copy()
    null_start[0], null_end[0] = 3.0, 3.0
    assert best_answers([context], [0], [spans], [null_start], [null_end], allow_null=True) == [""]
    assert best_answers([context], [0], [spans], [null_start], [null_end], allow_null=True, null_threshold=2.0) == [
        "cat sat on the mat"
    ]
    # two windows of one example: the better span wins across windows
    other = np.array([0, 0, 0, 0, 0, 0, 9.0, 0, 0])
    assert best_answers([context], [0, 0], [spans, spans], [start, other], [end, end]) == ["the mat"]


# -- several windows of one context, logits by hand ------------------------------------------
#
# The rule is BERT's run_squad.py (google-research/bert, write_predictions) as kept by Hugging
# Face's examples/pytorch/question-answering/utils_qa.py (postprocess_qa_predictions): the best
# span is taken over every window of a question; its null score is start[0] + end[0] of the
# window where that sum is *lowest* ("min_null_prediction": every window must want no answer),
# and "" is predicted when null_score - best_span > null_score_diff_threshold (strictly).

WORDS = "Rollo led the Norse raiders to Normandy in 911".split()
WINDOWS = [(0, 4), (2, 6), (4, 9)]  # words [first, last) of each window: overlapping, as doc_stride makes them


def word_spans(words):
    spans, at = [], 0
    for word in words:
        spans.append((at, at + len(word)))
        at += len(word) + 1
    return spans


def window(first, last):
    """Offsets of one feature: <s> (the null slot) and a question token, the window's words, </s>."""
    return np.array([(NOT_CONTEXT, NOT_CONTEXT)] * 2 + word_spans(WORDS)[first:last] + [(NOT_CONTEXT, NOT_CONTEXT)])


def logits(first, last, null, starts=(), ends=()):
    """(start, end) logits of a window: ``null`` split over position 0, and {word: value} for words."""
    start, end = np.zeros(2 + last - first + 1), np.zeros(2 + last - first + 1)
    start[0] = end[0] = null / 2
    for word, value in dict(starts).items():
        start[2 + word - first] = value
    for word, value in dict(ends).items():
        end[2 + word - first] = value
    return start, end


def windows_of(nulls):
    """The three windows of one question with the given null scores. The best span is "Norse raiders"
    (start 4 + end 4 = 8), which only window 2 scores; window 1 offers "Rollo" (3 + 3 = 6), window 3
    "Normandy in 911" (2 + 2 = 4)."""
    spans = [({0: 3.0}, {0: 3.0}), ({3: 4.0}, {4: 4.0}), ({6: 2.0}, {8: 2.0})]
    return [logits(a, b, null, s, e) for (a, b), null, (s, e) in zip(WINDOWS, nulls, spans)]


def predict(questions, threshold=0.0, allow_null=True):
    """best_answers over several questions, their windows interleaved (window k of every
    question, then window k + 1), as features of one batch may come."""
    context = " ".join(WORDS)
    example_index, offsets, starts, ends = [], [], [], []
    for k, (first, last) in enumerate(WINDOWS):
        for q, windows in enumerate(questions):
            example_index.append(q)
            offsets.append(window(first, last))
            starts.append(windows[k][0])
            ends.append(windows[k][1])
    return best_answers(
        [context] * len(questions),
        example_index,
        offsets,
        starts,
        ends,
        allow_null=allow_null,
        null_threshold=threshold,
    )


def test_the_best_span_is_chosen_across_windows():
    # every window wants an answer (null 0): window 2's 8 beats window 1's 6 and window 3's 4
    assert predict([windows_of([0.0, 0.0, 0.0])], allow_null=False) == ["Norse raiders"]
    assert predict([windows_of([0.0, 0.0, 0.0])]) == ["Norse raiders"]
    # window 2 alone decides: with its span scored lower, window 1's "Rollo" wins
    weaker = windows_of([0.0, 0.0, 0.0])
    weaker[1] = logits(2, 6, 0.0, {3: 2.0}, {4: 2.0})
    assert predict([weaker]) == ["Rollo"]


def test_null_score_is_the_lowest_over_the_windows():
    # best span 8 in every case below
    lowest_wins = [
        windows_of([14.0, 2.0, 12.0]),  # min 2 -> the span; first (14), last (12), max (14), mean (9.3) -> ""
        windows_of([1.0, 9.0, 12.0]),  # min 1 -> the span; the null of the best span's own window (9) -> ""
        windows_of([9.0, 9.0, 8.5]),  # min 8.5 > 8 -> "" (every window wants no answer)
    ]
    assert predict(lowest_wins) == ["Norse raiders", "Norse raiders", ""]
    # v1 (no null answer): always the span
    assert predict(lowest_wins, allow_null=False) == ["Norse raiders"] * 3


def test_no_answer_needs_the_null_score_above_the_span_by_more_than_the_threshold():
    question = [windows_of([9.0, 9.0, 8.5])]  # null 8.5, best span 8: the difference is 0.5
    assert predict(question, threshold=0.49) == [""]
    assert predict(question, threshold=0.5) == ["Norse raiders"]  # not more than the threshold: the span
    # a negative threshold leans to "": null 6 (the lowest) is 2 below the span
    assert predict([windows_of([6.0, 6.5, 7.0])], threshold=-2.5) == [""]
    assert predict([windows_of([6.0, 6.5, 7.0])], threshold=-1.5) == ["Norse raiders"]


def test_defaults_are_bert_s_20_best_starts_30_tokens_and_no_null_answer():
    words = [f"w{i}" for i in range(40)]
    context = " ".join(words)
    spans = np.array([(NOT_CONTEXT, NOT_CONTEXT)] * 2 + word_spans(words))  # a null slot, a question token

    def peaks(start_at, end_at, null=0.0):
        start, end = np.zeros(len(spans)), np.zeros(len(spans))
        start[2 + start_at], end[2 + end_at] = 5.0, 5.0
        start[0] = end[0] = null / 2
        return [start], [end]

    # at most 30 tokens: w0..w29 is an answer, w0..w30 is not
    assert best_answers([context], [0], [spans], *peaks(0, 29)) == [" ".join(words[:30])]
    assert best_answers([context], [0], [spans], *peaks(0, 30)) != [" ".join(words[:31])]
    # no null answer unless asked for: a null score far above the span still gives the span
    assert best_answers([context], [0], [spans], *peaks(3, 4, null=200.0)) == ["w3 w4"]

    # only the 20 best starts are tried: 21 question positions, the first 20 of them scored above
    # the context; nothing is answerable from those, and the answer is ""
    few = np.array([(NOT_CONTEXT, NOT_CONTEXT)] * 21 + word_spans(words[:3]))
    start, end = np.zeros(len(few)), np.zeros(len(few))
    start[:20] = np.arange(30.0, 10.0, -1.0)
    start[20] = -1.0
    end[21:] = 1.0
    assert best_answers([context], [0], [few], [start], [end]) == [""]
    assert best_answers([context], [0], [few], [start], [end], n_best=21) != [""]  # the 21st start is w0..w2


@pytest.mark.parametrize("name", ["squad_v1", "squad_v2"])
def test_squad_task_evaluates_a_tiny_model(name, squad_dir, byte_tokenizer, task_cfg, tiny_model, run_eval):
    task = load_task(task_cfg(name, data_dir=str(squad_dir), **SMALL), byte_tokenizer)
    assert task.model_kind == "question_answering" and task.main_metric == "f1"
    assert task.eval_examples == (4 if name == "squad_v2" else 3)
    batch = next(iter(task.train_loader(4, seed=0)))
    assert {"input_ids", "attention_mask", "start_positions", "end_positions"} == set(batch)
    model = tiny_model("tiny", "question_answering")
    assert model(**batch).loss.isfinite()
    model.train()
    scores = run_eval(task, model, batch_size=3)
    assert set(scores) == {"exact_match", "f1"} and 0.0 <= scores["exact_match"] <= scores["f1"] <= 1.0
    assert model.training


class ScriptedQA(torch.nn.Module):
    """A QA model whose logits are looked up by the input row: ``spans[row] = [(start, end, weight)]``."""

    def __init__(self, spans):
        super().__init__()
        self.spans = spans

    def forward(self, input_ids, attention_mask):
        start, end = torch.zeros(input_ids.shape), torch.zeros(input_ids.shape)
        for r in range(len(input_ids)):
            for s, e, weight in self.spans[tuple(input_ids[r][attention_mask[r].bool()].tolist())]:
                start[r, s] += weight
                end[r, e] += weight
        return SimpleNamespace(start_logits=start, end_logits=end)


def confident_model(task):
    """10 on each window's training target (the answer, or position 0: no answer in this window)
    and, in windows of the unanswerable q4, 1 on its plausible answer "1921": what the post-processing
    answers for q4 then depends on whether it may answer "" at all."""
    plausible = (SHORT.index("1921"), SHORT.index("1921") + 4)
    spans = {}
    for f in range(len(task.dev)):
        ids = tuple(task.dev[f]["input_ids"].tolist())
        assert ids == tuple(task.train_set[f]["input_ids"].tolist())  # train and dev: one file, same windows
        target = task.train_set[f]
        spans[ids] = [(int(target["start_positions"]), int(target["end_positions"]), 10.0)]
        example = int(task.dev.columns["example_index"][f])
        offsets = task.dev_offsets[f].tolist()
        if task.dev_examples["answers"][example] == [] and plausible[0] in [o[0] for o in offsets]:
            at = ([o[0] for o in offsets].index(plausible[0]), [o[1] for o in offsets].index(plausible[1]))
            spans[ids].append((*at, 1.0))
    return ScriptedQA(spans)


def test_version_2_the_threshold_and_the_answer_length_reach_the_post_processing_from_the_task_config(
    squad_dir, byte_tokenizer, task_cfg, run_eval
):
    v2 = task_cfg("squad_v2", data_dir=str(squad_dir), **SMALL)
    task = load_task(v2, byte_tokenizer)
    model = confident_model(task)
    # q4 has no answer: null 20 against "1921" at 1 in its windows -> "", right; the three others right
    assert run_eval(task, model) == {"exact_match": 1.0, "f1": 1.0}
    # a threshold above the difference (19) keeps the span: q4 answers "1921", wrong on both counts
    assert run_eval(load_task({**v2, "null_threshold": 25.0}, byte_tokenizer), model) == pytest.approx(
        {"exact_match": 3 / 4, "f1": 3 / 4}
    )
    # answers of at most 3 tokens (bytes here): "Fra", "Rol", "Ann"... match nothing; q4 still right
    short = load_task({**v2, "max_answer_length": 3}, byte_tokenizer)
    assert run_eval(short, model) == pytest.approx({"exact_match": 1 / 4, "f1": 1 / 4})
    # the same questions read as v1 (version_2: false) can't answer ""
    v1 = {**v2, "version_2": False}
    assert run_eval(load_task(v1, byte_tokenizer), model) == pytest.approx({"exact_match": 3 / 4, "f1": 3 / 4})


def test_bad_answer_offset_is_a_data_error(tmp_path):
    data = squad_json(False)
    data["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = len(SHORT)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad\.json question q3: answer_start .* outside the context"):
        read_squad_json(tmp_path / "bad.json")


def test_byte_offsets_follow_multibyte_characters(byte_tokenizer):
    from dora_bench.tasks.squad import context_tokens

    ((ids, spans),) = context_tokens(byte_tokenizer, ["é a"])
    assert len(ids) == 4  # é is two bytes
    assert spans == [(0, 1), (0, 1), (1, 2), (2, 3)]
    assert torch.tensor(ids).tolist() == byte_tokenizer("é a", add_special_tokens=False)["input_ids"]


def test_second_load_reads_the_cache(squad_dir, byte_tokenizer, task_cfg, monkeypatch, tmp_path):
    from dora_bench.tasks import squad

    calls = []
    build = squad.build_features
    monkeypatch.setattr(squad, "build_features", lambda *a, **k: calls.append(k["train"]) or build(*a, **k))
    cfg = task_cfg("squad_v2", data_dir=str(squad_dir), **SMALL)
    first = load_task(cfg, byte_tokenizer, cache_dir=tmp_path / "cache")
    second = load_task(cfg, byte_tokenizer, cache_dir=tmp_path / "cache")
    assert calls == [True, False]  # train and dev features built once
    assert second.dev_examples == first.dev_examples and torch.equal(
        second.dev_offsets.values, first.dev_offsets.values
    )


def test_data_fingerprint_sees_a_changed_dev_answer(squad_dir, byte_tokenizer, task_cfg):
    cfg = task_cfg("squad_v1", data_dir=str(squad_dir), **SMALL)
    before = load_task(cfg, byte_tokenizer).data_fingerprint()
    dev = squad_json(False)
    # a second gold answer for q1: dev features are unchanged (no answers in them), the scoring is not
    dev["data"][0]["paragraphs"][0]["qas"][0]["answers"].append(
        {"text": "a region", "answer_start": LONG.index("a region")}
    )
    (squad_dir / "dev-v1.1.json").write_text(json.dumps(dev))
    assert load_task(cfg, byte_tokenizer).data_fingerprint() != before


def word_tokenizer():
    """A fast word-level tokenizer, ``<cls> A <sep> B <sep>`` around a pair: offsets come from the Rust side
    (the path a real RoBERTa tokenizer takes, without the developers' files)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<cls>", "<sep>", "<unk>", "a", "b", "Who", "led", "Rollo", "the", "raiders"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<cls> $A <sep>", pair="<cls> $A <sep> $B <sep>", special_tokens=[("<cls>", 1), ("<sep>", 2)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, cls_token="<cls>", sep_token="<sep>", pad_token="<pad>")


def test_a_fast_tokenizer_windows_by_its_offsets_and_targets_one_token_answers():
    from dora_bench.tasks.squad import QAExample, context_tokens

    tokenizer, context = word_tokenizer(), "Rollo led the raiders"
    assert context_tokens(tokenizer, [context]) == [([8, 7, 9, 10], [(0, 5), (6, 9), (10, 13), (14, 21)])]
    examples = [
        QAExample("two", "Who led", context, ["the raiders"], [10]),
        QAExample("one", "Who led", context, ["Rollo"], [0]),  # one token: first == last
        QAExample("gap", "Who led", context, [" "], [5]),  # the space between two tokens covers none
    ]
    features = build_features(examples, tokenizer, train=True, max_length=64, doc_stride=4, max_query_length=16)
    # <cls> Who led <sep> | Rollo led the raiders <sep>: the context starts at position 4
    assert features["input_ids"]["values"][:9].tolist() == [1, 6, 7, 2, 8, 7, 9, 10, 2]
    assert features["start_positions"].tolist() == [6, 4, 0] and features["end_positions"].tolist() == [7, 4, 0]
    dev = build_features(examples[:1], tokenizer, train=False, max_length=64, doc_stride=4, max_query_length=16)
    spans = [(0, 5), (6, 9), (10, 13), (14, 21)]
    assert dev["offsets"]["values"].tolist() == [[NOT_CONTEXT, NOT_CONTEXT]] * 4 + [list(s) for s in spans] + [
        [NOT_CONTEXT, NOT_CONTEXT]
    ]


def test_a_window_no_longer_than_the_stride_is_refused():
    from dora_bench.errors import ConfigError
    from dora_bench.tasks.squad import QAExample

    example = QAExample("q", "Who led", "Rollo led the raiders", ["Rollo"], [0])
    # max_length 9 - question 2 - template 3 = 4 context tokens a window: not more than doc_stride 4
    with pytest.raises(ConfigError, match="leaves 4 context tokens per window, not more than task.doc_stride=4"):
        build_features([example], word_tokenizer(), train=True, max_length=9, doc_stride=4, max_query_length=16)
    build_features([example], word_tokenizer(), train=True, max_length=10, doc_stride=4, max_query_length=16)

"""Token tagging: word alignment, readers, entity F1, serving, round trips."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor  # noqa: E402
from mtl_keras.batching import make_batches  # noqa: E402
from mtl_keras.data import DataValidationError, FileSource  # noqa: E402
from mtl_keras.entities import EntityF1  # noqa: E402
from mtl_keras.export import export_saved_model, load_for_serving, load_keras_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ann", "lee", "went", "to",
         "rome", "new", "york", "##er", "!", "."]  # fmt: skip
NER = Task("ner", "tagging", 5, label_names=("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))


def _preprocessor(length=16, label_piece="first"):
    return TextPreprocessor(VOCAB, sequence_length=length, align_words=True,
                            label_piece=label_piece)


def test_each_word_label_goes_to_its_first_piece():
    # "yorker!" is one word of three pieces (york ##er !): only "york" is labelled.
    raw = tf.data.Dataset.from_tensor_slices((
        {"text": ["ann went to yorker!", "rome ."]},
        {"ner": tf.ragged.constant([[1, 0, 0, 3], [3, 0]], dtype="int32")},
        {"ner": [1.0, 0.0]},  # the second row carries no ner label
    ))  # fmt: skip
    x, y, w = next(iter(make_batches(raw, _preprocessor(), 4, keep_order=True)))
    ids = x["token_ids"].numpy()
    assert ids[0, :8].tolist() == [2, 5, 7, 8, 11, 12, 13, 3]
    assert y["ner"].numpy()[0, :8].tolist() == [0, 1, 0, 0, 3, 0, 0, 0]
    assert w["ner"].numpy()[0, :8].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
    assert w["ner"].numpy()[1].sum() == 0  # unlabelled row: masked everywhere
    assert y["ner"].shape == x["token_ids"].shape  # cut to the batch's bucket
    # label_piece="last": the same labels on each word's last piece ("!").
    x, y, w = next(iter(make_batches(raw, _preprocessor(label_piece="last"), 4, keep_order=True)))
    assert y["ner"].numpy()[0, :8].tolist() == [0, 1, 0, 0, 0, 0, 3, 0]
    assert w["ner"].numpy()[0, :8].tolist() == [0, 1, 1, 1, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="label_piece must be one of"):
        _preprocessor(label_piece="all")


def test_truncation_keeps_whole_words_and_counts_the_cut_ones():
    preprocessor = _preprocessor(length=6)  # 4 pieces between [CLS] and [SEP]
    x, found = preprocessor.word_alignment(["ann went yorker! rome", "yorkerererer"])
    assert x["word_ids"].numpy()[0].tolist() == [-1, 0, 1, -1, -1, -1]  # not half of "yorker!"
    assert found["cut_words"].numpy().tolist() == [2, 0]
    # One over-long word keeps its first pieces (and its label).
    assert x["word_ids"].numpy()[1].tolist() == [-1, 0, 0, 0, 0, -1]


def test_a_word_without_pieces_becomes_unk_and_keeps_its_label():
    x = _preprocessor()(["ann \u200b rome"])  # a zero-width space alone
    assert x["token_ids"].numpy()[0, :5].tolist() == [2, 5, 1, 9, 3]
    assert x["word_ids"].numpy()[0, :5].tolist() == [-1, 0, 1, 2, -1]


def test_words_split_as_python_splits():
    texts = ["a\u00a0b\u2003c\x1cd\u200be", "  x  ", ""]
    _, found = _preprocessor().word_alignment(texts)
    assert [[w.decode() for w in row] for row in found["words"].to_list()] == [t.split() for t in texts]


CONLL = """-DOCSTART- -X- O O

Ann NNP B-PER
Lee NNP I-PER
went VBD O
\t
Rome NNP B-LOC
"""
CONLLU = """# sent_id = 1
# text = Ann won't go.
1\tAnn\tAnn\tPROPN\tNNP\t_\t3\tnsubj\t_\t_
2-3\twon't\t_\t_\t_\t_\t_\t_\t_\t_
2\two\twill\tAUX\tMD\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
3.1\tgo\t_\t_\t_\t_\t_\t_\t_\t_
4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

"""


def test_conll_reader_skips_docstart_and_splits_on_blank_lines(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL)
    examples = FileSource(path, tasks={"ner": -1}).read([NER])
    assert examples.text.tolist() == ["Ann Lee went", "Rome"]
    assert [v.tolist() for v in examples.labels["ner"]] == [[1, 2, 0], [3]]
    pos = Task("pos", "tagging", 3, label_names=("NNP", "VBD", "UH"))
    assert FileSource(path, tasks={"pos": 1}).read([pos]).labels["pos"][0].tolist() == [0, 0, 1]


def test_conllu_reader_keeps_syntactic_words_only(tmp_path):
    path = tmp_path / "dev.conllu"
    path.write_text(CONLLU)
    upos = Task("upos", "tagging", 5, label_names=("PROPN", "AUX", "PART", "VERB", "PUNCT"))
    examples = FileSource(path, tasks={"upos": "upos"}).read([upos])
    assert examples.text.tolist() == ["Ann wo n't go ."]
    assert examples.labels["upos"][0].tolist() == [0, 1, 2, 3, 4]


CONLL2003_NER = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def _conll2003_sentences(self, split, **kwargs):  # tfds' `_as_dataset`, mocked
    return tf.data.Dataset.from_tensor_slices({
        "tokens": tf.ragged.constant([["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]),
        "ner": tf.ragged.constant([[3, 0, 7, 0], [1, 2]], dtype=tf.int64),
        "pos": tf.ragged.constant([[22, 42, 16, 21], [22, 22]], dtype=tf.int64),
        "chunks": tf.ragged.constant([[11, 21, 11, 12], [11, 12]], dtype=tf.int64),
    }).map(lambda row: {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in row.items()})


def test_tfds_conll2003_tokens_and_tags_are_read_and_class_order_checked():
    import tensorflow_datasets as tfds

    from mtl_keras.data import TfdsSource

    ner = Task("ner", "tagging", 9, label_names=CONLL2003_NER)
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_conll2003_sentences):
        examples = TfdsSource("conll2003", "train", "tokens", {"ner": "ner"}).read([ner])
        assert examples.text.tolist() == ["EU rejects German call", "Peter Blackburn"]
        assert [v.tolist() for v in examples.labels["ner"]] == [[3, 0, 7, 0], [1, 2]]
        renamed = Task("ner", "tagging", 9, label_names=[f"tag{i}" for i in range(9)])
        assert TfdsSource("conll2003", "train", "tokens", ["ner"]).read([renamed]).labels["ner"][1].tolist() == [1, 2]
        swapped = Task("ner", "tagging", 9, label_names=("O", "B-ORG", "I-ORG", "B-PER", "I-PER") + CONLL2003_NER[5:])
        with pytest.raises(DataValidationError, match=r"class 'B-ORG' is index 1 in label_names but index 3 in feature 'ner'"):
            TfdsSource("conll2003", "train", "tokens", ["ner"]).read([swapped])


def test_bad_tags_are_named_with_file_lines_and_value(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("Ann B-PER\nLee I-PRE\n")
    with pytest.raises(DataValidationError, match=r"word 2 of 2, tag 'I-PRE'.*bad.conll, lines 1-2"):
        FileSource(path, tasks={"ner": 1}).read([NER])
    rows = tmp_path / "bad.jsonl"
    rows.write_text(json.dumps({"tokens": ["Ann", "Lee"], "ner": ["B-PER"]}) + "\n")
    with pytest.raises(DataValidationError, match=r"1 tags for 2 words.*bad.jsonl, line 1"):
        FileSource(rows, text="tokens", tasks={"ner": "ner"}).read([NER])
    rows.write_text(json.dumps({"tokens": ["New York"], "ner": ["B-LOC"]}) + "\n")
    with pytest.raises(DataValidationError, match=r"token 0 'New York' contains whitespace"):
        FileSource(rows, text="tokens", tasks={"ner": "ner"}).read([NER])


@pytest.mark.skipif(not (SHARED / "ud_ewt").is_dir(), reason="no ../shared/data/ud_ewt")
def test_readers_agree_with_the_published_jsonl_on_real_excerpts(tmp_path):
    lines = (SHARED / "ud_ewt" / "en_ewt-ud-dev.conllu").read_text().split("\n")
    excerpt = tmp_path / "dev.conllu"
    excerpt.write_text("\n".join(lines[:2000]) + "\n\n")
    rows = [json.loads(line) for line in open(SHARED / "ud_ewt" / "dev.jsonl")]
    names = sorted({t for r in rows for t in r["upos"]})
    upos = Task("upos", "tagging", len(names), label_names=names)
    examples = FileSource(excerpt, tasks={"upos": "upos"}).read([upos])
    assert len(examples) > 50
    for text, labels, row in zip(examples.text[:-1], examples.labels["upos"], rows):
        assert text == " ".join(row["tokens"])
        assert [names[i] for i in labels] == row["upos"]
    wnut = (SHARED / "wnut17" / "train.conll").read_text().split("\n")
    excerpt = tmp_path / "train.conll"
    excerpt.write_text("\n".join(wnut[:3000]))  # sentences end with a lone tab here
    tags = ["O"] + [f"{p}-{t}" for t in ("corporation", "creative-work", "group",
                                         "location", "person", "product") for p in "BI"]  # fmt: skip
    ner = Task("ner", "tagging", 13, label_names=tags)
    examples = FileSource(excerpt, tasks={"ner": 1}).read([ner])
    rows = [json.loads(line) for line in open(SHARED / "wnut17" / "train.jsonl")]
    assert len(examples) > 100
    for text, labels, row in zip(examples.text[:-1], examples.labels["ner"], rows):
        assert text == " ".join(row["tokens"]) and [tags[i] for i in labels] == row["ner"]


def _f1(classes, truth, predicted):
    metric = EntityF1(classes)
    width = max(map(len, truth))
    pad = [[0] * (width - len(t)) for t in truth]
    labels = [t + p for t, p in zip(truth, pad)]
    guesses = [g + p for g, p in zip(predicted, pad)]
    weights = [[1.0] * len(t) + [0.0] * len(p) for t, p in zip(truth, pad)]
    metric.update_state(labels, tf.one_hot(guesses, len(classes)), sample_weight=weights)
    return metric.values()


IOB = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.mark.parametrize(
    "truth, predicted, expected",  # (precision, recall) overall
    [
        ([[1, 2, 0]], [[1, 2, 0]], (1.0, 1.0)),
        ([[1, 2, 0]], [[1, 0, 0]], (0.0, 0.0)),  # a shorter span is wrong
        ([[1, 2, 0]], [[2, 2, 0]], (1.0, 1.0)),  # I- without B- starts a span
        ([[1, 2, 0]], [[3, 4, 0]], (0.0, 0.0)),  # right span, wrong type
        ([[1, 1, 0]], [[1, 2, 0]], (0.0, 0.0)),  # two one-word spans vs one
        ([[1, 0, 3]], [[1, 0, 0]], (1.0, 0.5)),
        ([[0, 0, 0]], [[2, 4, 0]], (0.0, 0.0)),  # I-PER I-LOC: two spans, none true
        ([[1], [2]], [[1], [2]], (1.0, 1.0)),  # spans never cross sentences
    ],
)
def test_entity_spans_follow_conlleval(truth, predicted, expected):
    found = _f1(IOB, truth, predicted)["overall"]
    assert (found["precision"], found["recall"]) == pytest.approx(expected)


def test_bioes_spans():
    tags = ["O", "B-X", "I-X", "E-X", "S-X"]
    assert _f1(tags, [[1, 2, 3, 4]], [[1, 2, 3, 4]])["overall"]["f1"] == 1.0
    # E ends a span: "B E E" is two spans for conlleval.
    found = _f1(tags, [[1, 3, 0]], [[1, 3, 3]])["overall"]
    assert (found["precision"], found["recall"]) == (0.5, 1.0)


@pytest.mark.skipif(not (SHARED / "wnut17").is_dir(), reason="no ../shared/data/wnut17")
def test_entity_f1_equals_seqeval_on_300_wnut_sentences():
    rows = [json.loads(line) for line in open(SHARED / "wnut17" / "dev.jsonl")][:300]

    def corrupt(tags, i):  # deterministic errors, many of them I- without B-
        out = []
        for j, t in enumerate(tags):
            k = (i * 7 + j) % 5
            if k == 0:
                if t.startswith("B-"):
                    t = "I-" + t[2:]
                elif t.startswith("I-"):
                    t = "O"
                else:
                    t = "I-person" if (i + j) % 2 else "B-location"
            elif k == 1 and t.startswith("I-") and i % 3 == 0:
                t = "I-group"
            out.append(t)
        return out

    types = ("corporation", "creative-work", "group", "location", "person", "product")
    tags = ["O"] + [f"{p}-{t}" for t in types for p in "BI"]
    truth = [[tags.index(t) for t in r["ner"]] for r in rows]
    predicted = [[tags.index(t) for t in corrupt(r["ner"], i)] for i, r in enumerate(rows)]
    found = _f1(tags, truth, predicted)
    # seqeval 1.2.2 (default, conlleval-compatible mode) on the same lists:
    # precision_score, recall_score, f1_score and classification_report.
    assert found["overall"]["precision"] == pytest.approx(0.20821917808219179)
    assert found["overall"]["recall"] == pytest.approx(0.8085106382978723)
    assert found["overall"]["f1"] == pytest.approx(0.33115468409586063)
    expected = {"corporation": 0.833333, "creative-work": 0.602740, "group": 0.470588,
                "location": 0.121593, "person": 0.370370, "product": 0.791667}  # fmt: skip
    for kind, f1 in expected.items():
        assert found[kind]["f1"] == pytest.approx(f1, abs=1e-6)
    assert found["person"]["support"] == 158


def _tagging_model(learning_rate=1e-3, label_piece="first", length=16):
    preprocessor = _preprocessor(length, label_piece)
    encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=16, num_layers=1, num_heads=2)
    model = MultiTaskModel([NER, Task("exclaims", "binary")], encoder, preprocessor)
    model.compile(learning_rate=learning_rate)
    return model


TEXTS = ["ann  went to rome !", "new yorker ann lee", "rome"]


def _word_logits_by_predict(model, texts):
    """Per text, `model.predict`'s logits at each word's label piece, by hand."""
    x = model.preprocessor(texts)
    logits = model.predict({k: x[k] for k in ("token_ids", "padding_mask")}, verbose=0)["ner"]
    last = model.preprocessor.label_piece == "last"
    found = []
    for row, word_ids in enumerate(x["word_ids"].numpy()):
        near = np.concatenate([word_ids[1:], [-1]]) if last else np.concatenate([[-1], word_ids[:-1]])
        found.append(logits[row, [i for i, w in enumerate(word_ids) if w >= 0 and near[i] != w]])
    return found


def _word_tags_by_predict(model, texts):
    return [[NER.classes[int(np.argmax(z))] for z in row]
            for row in _word_logits_by_predict(model, texts)]  # fmt: skip


@pytest.mark.parametrize("label_piece", ["first", "last"])
def test_saved_model_and_keras_file_serve_the_tags_predict_gives(tmp_path, label_piece):
    model = _tagging_model(label_piece=label_piece)
    expected = _word_tags_by_predict(model, TEXTS)
    assert len(expected[1]) == 4  # "yorker" (two pieces) has one tag
    served = model.serve_text(tf.constant(TEXTS))["ner_probabilities"].numpy()
    for row, logits in enumerate(_word_logits_by_predict(model, TEXTS)):  # the same piece
        np.testing.assert_allclose(served[row, : len(logits)], tf.nn.softmax(logits), atol=1e-5)
    rows = model.predict_labels(TEXTS)
    assert [r["ner"]["label"] for r in rows] == expected
    assert rows[0]["ner"]["words"] == ["ann", "went", "to", "rome", "!"]
    export_saved_model(model, tmp_path / "export")
    served = load_for_serving(tmp_path / "export").predict(TEXTS)
    assert [r["ner"]["label"] for r in served] == expected
    for row, text in zip(served, TEXTS):  # character offsets into the input
        for entity in row["ner"]["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    model.save(tmp_path / "model.keras")
    loaded = load_keras_model(tmp_path / "model.keras")
    assert loaded.preprocessor.align_words and loaded.preprocessor.label_piece == label_piece
    assert _word_tags_by_predict(loaded, TEXTS) == expected
    ids = model.preprocessor(TEXTS)
    for key, value in loaded.preprocessor(TEXTS).items():  # same ids after loading
        np.testing.assert_array_equal(value.numpy(), ids[key].numpy())


def test_alignment_is_the_same_in_tf_data_eagerly_and_in_a_tf_function():
    preprocessor = _preprocessor()
    eager = preprocessor(TEXTS)
    traced = tf.function(lambda t: preprocessor(t))(tf.constant(TEXTS))
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(TEXTS).batch(3).map(preprocessor)))
    for key in ("token_ids", "padding_mask", "word_ids"):
        np.testing.assert_array_equal(eager[key].numpy(), traced[key].numpy())
        np.testing.assert_array_equal(eager[key].numpy(), mapped[key].numpy())


def test_a_tagging_and_a_sentence_task_train_together():
    model = _tagging_model(learning_rate=1e-2)
    texts = ["ann went to rome !", "lee went to new york", "rome !", "ann lee"]
    raw = tf.data.Dataset.from_tensor_slices((
        {"text": texts},
        {"ner": tf.ragged.constant([[1, 0, 0, 3, 0], [1, 0, 0, 3, 4], [3, 0], [1, 2]], dtype="int32"),
         "exclaims": [1.0, 0.0, 1.0, 0.0]},
        {"ner": [1.0] * 4, "exclaims": [1.0] * 4},
    ))  # fmt: skip
    batches = make_batches(raw, model.preprocessor, 4)
    before = model.evaluate(batches, verbose=0, return_dict=True)["ner_loss"]
    model.fit(batches.repeat(), steps_per_epoch=40, verbose=0)
    logs = model.evaluate(batches, verbose=0, return_dict=True)
    assert logs["ner_loss"] < before / 2
    assert logs["ner_token_accuracy"] == 1.0 and logs["ner_entity_f1"] == 1.0


def test_evaluate_counts_every_word_once_whatever_the_batch_lengths():
    # Keras' own accuracy weights a word by 1 / (its batch's padded length):
    # batches of 1 short and 1 long text gave a different answer than the count.
    model = _tagging_model(length=128)
    texts = ["rome", "ann went to rome ! new york lee went to rome . " * 4, "lee", "ann lee"]
    tags = [[3], [1, 0, 0, 3, 0, 3, 4, 1, 0, 0, 3, 0] * 4, [1], [1, 2]]
    raw = tf.data.Dataset.from_tensor_slices((
        {"text": texts}, {"ner": tf.ragged.constant(tags, dtype="int32")}, {"ner": [1.0] * 4},
    ))  # fmt: skip
    predicted = _word_tags_by_predict(model, texts)
    counted = np.mean([NER.classes[t] == p for row, p_row in zip(tags, predicted)
                       for t, p in zip(row, p_row)])  # fmt: skip
    assert 0 < counted < 1  # some right, some wrong: the weighting shows
    for batch_size in (1, 2, 4):
        batches = make_batches(raw, model.preprocessor, batch_size, keep_order=True)
        if batch_size == 1:
            assert len({int(x["token_ids"].shape[1]) for x, _, _ in batches}) > 1
        logs = model.evaluate(batches, verbose=0, return_dict=True)
        assert logs["ner_token_accuracy"] == pytest.approx(counted, abs=1e-6), batch_size

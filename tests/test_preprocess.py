import collections
import doctest
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras import batching, preprocess  # noqa: E402
from mtl_keras.batching import bucket_lengths, make_batches  # noqa: E402
from mtl_keras.preprocess import TextPreprocessor, learn_vocabulary  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while cats sleep".split()
# Edge cases: empty, blank, invalid UTF-8 (alone, inside and after a word),
# a truncated multi-byte character, non-ASCII text and a too-long text.
EDGE_TEXTS = [
    b"",
    b"   \t\n",
    b"\xff",
    b"the d\xffog",
    b"lazy dog\xff",
    b"fox \xe2\x82",
    "Über café naïve".encode(),
    b"The Quick brown fox jumps over the lazy dog " * 3,
]


def sentences(count=40, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=n)) for n in rng.integers(0, 30, count)]


@pytest.fixture(scope="module")
def vocab():
    return learn_vocabulary(sentences(), vocabulary_size=120)


def ids(outputs):
    return outputs["token_ids"].numpy().tolist()


def test_learn_vocabulary(vocab):
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 40 < len(vocab) <= 120
    assert len(set(vocab)) == len(vocab)
    assert "fox" in vocab
    dataset = tf.data.Dataset.from_tensor_slices(sentences()).batch(7)
    assert learn_vocabulary(dataset, vocabulary_size=120) == vocab
    assert learn_vocabulary([b"ok \xff", ""], 30)[0] == "[PAD]"


def test_learn_vocabulary_errors():
    with pytest.raises(ValueError, match="start with"):
        learn_vocabulary(["a b"], 20, reserved_tokens=("[UNK]", "[PAD]"))
    with pytest.raises(ValueError, match="contain"):
        learn_vocabulary(["a b"], 20, reserved_tokens=("[PAD]", "[UNK]"))
    with pytest.raises(ValueError, match="dataset of strings"):
        learn_vocabulary(tf.data.Dataset.range(3), 20)


def test_single_text_packing(vocab):
    preprocessor = TextPreprocessor(vocab, sequence_length=8)
    out = preprocessor(["The fox", "the " * 20])
    cls, sep, fox = (vocab.index(t) for t in ("[CLS]", "[SEP]", "fox"))
    the = vocab.index("the")
    assert ids(out) == [[cls, the, fox, sep, 0, 0, 0, 0], [cls] + [the] * 6 + [sep]]
    assert out["token_ids"].dtype == tf.int32
    assert out["padding_mask"].dtype == tf.bool
    assert out["padding_mask"].numpy().sum(axis=1).tolist() == [4, 8]
    short = preprocessor(["The fox"], sequence_length=3)
    assert ids(short) == [[cls, the, sep]]
    assert preprocessor.vocabulary_size == len(vocab)
    assert tuple(preprocessor("the fox")["token_ids"].shape) == (8,)


def test_eager_tf_data_and_tf_function_agree(vocab):
    preprocessor = TextPreprocessor(vocab, sequence_length=12)
    texts = tf.constant(EDGE_TEXTS + [s.encode() for s in sentences(6)])
    eager = ids(preprocessor(texts))
    one_by_one = [ids(preprocessor(t)) for t in texts]
    mapped = tf.data.Dataset.from_tensor_slices(texts).map(preprocessor)
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(5).map(preprocessor)
    serve = tf.function(
        lambda t: preprocessor(t), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    assert one_by_one == eager
    assert [x["token_ids"].tolist() for x in mapped.as_numpy_iterator()] == eager
    assert sum((ids(x) for x in batched), []) == eager
    assert ids(serve(texts)) == eager
    assert ids(preprocessor(texts[:0])) == []


def test_empty_and_invalid_utf8_policy(vocab):
    preprocessor = TextPreprocessor(vocab, sequence_length=6)
    cls, sep, unk = (vocab.index(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
    lazy, dog = vocab.index("lazy"), vocab.index("dog")
    texts = [b"", b"  ", b"\xff", b"dog \xff", b"lazy d\xffog", "lazy d\ufffdog"]
    out = preprocessor(texts)
    assert ids(out) == [
        [cls, sep, 0, 0, 0, 0],
        [cls, sep, 0, 0, 0, 0],
        [cls, unk, sep, 0, 0, 0],
        [cls, dog, unk, sep, 0, 0],
        [cls, lazy, unk, sep, 0, 0],
        [cls, lazy, unk, sep, 0, 0],
    ]
    assert out["padding_mask"].numpy()[0].tolist() == [True, True] + [False] * 4


def test_pair_packing(vocab):
    cls, sep, fox, dog, the = (
        vocab.index(t) for t in ("[CLS]", "[SEP]", "fox", "dog", "the")
    )
    preprocessor = TextPreprocessor(vocab, sequence_length=8, pair=True)
    out = preprocessor(["fox", "", "the the the the the"], ["dog", "", "dog dog"])
    assert ids(out) == [
        [cls, fox, sep, dog, sep, 0, 0, 0],
        [cls, sep, sep, 0, 0, 0, 0, 0],
        [cls, the, the, the, sep, dog, dog, sep],
    ]
    assert out["padding_mask"].numpy().sum(axis=1).tolist() == [5, 3, 8]
    waterfall = TextPreprocessor(vocab, 6, pair=True, truncate="waterfall")
    assert ids(waterfall(["the the the"], ["dog dog"])) == [
        [cls, the, the, the, sep, sep]
    ]
    dataset = tf.data.Dataset.from_tensor_slices((["fox"], ["dog"])).map(preprocessor)
    assert next(dataset.as_numpy_iterator())["token_ids"].tolist() == ids(out)[0]
    with pytest.raises(ValueError, match="pair"):
        preprocessor(["fox"])
    with pytest.raises(ValueError, match="pair"):
        TextPreprocessor(vocab, 8)(["fox"], ["dog"])


def test_vocabulary_file_and_validation(vocab, tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    from_file = TextPreprocessor(str(path), sequence_length=8)
    from_list = TextPreprocessor(vocab, sequence_length=8)
    assert ids(from_file(EDGE_TEXTS)) == ids(from_list(EDGE_TEXTS))
    with pytest.raises(ValueError, match="id 0"):
        TextPreprocessor(["[UNK]", "[PAD]", "[CLS]", "[SEP]"], 8)
    with pytest.raises(ValueError, match="truncate"):
        TextPreprocessor(vocab, 8, pair=True, truncate="longest_first")


@pytest.mark.parametrize("pair", [False, True])
def test_keras_file_round_trip(vocab, tmp_path, pair):
    preprocessor = TextPreprocessor(vocab, sequence_length=10, pair=pair)
    inputs = [keras.Input(shape=(), dtype="string") for _ in range(1 + pair)]
    model = keras.Model(inputs, preprocessor(*inputs))
    texts = [tf.constant(EDGE_TEXTS), tf.constant(EDGE_TEXTS[::-1])][: 1 + pair]
    expected = model(texts)

    path = str(tmp_path / "preprocessor.keras")
    model.save(path)
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith("tokenizer/vocabulary.txt") for n in names)
    assert preprocessor.get_config()["vocabulary"] is None
    restored = keras.saving.load_model(path, safe_mode=True)
    assert ids(restored(texts)) == ids(expected)
    layer = restored.layers[-1]
    assert isinstance(layer, TextPreprocessor)
    assert (layer.pair, layer.sequence_length) == (pair, 10)
    assert layer.vocabulary_size == len(vocab)


def test_strings_in_saved_model(vocab, tmp_path):
    preprocessor = TextPreprocessor(vocab, sequence_length=10)
    archive = keras.export.ExportArchive()
    archive.track(preprocessor)
    archive.add_endpoint(
        "serve",
        lambda text: preprocessor(text),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    archive.write_out(str(tmp_path / "saved_model"), verbose=False)
    restored = tf.saved_model.load(str(tmp_path / "saved_model"))
    texts = tf.constant(EDGE_TEXTS)
    assert ids(restored.serve(texts)) == ids(preprocessor(texts))


def raw_dataset(texts, pair=False):
    """Raw examples whose labels identify them: `index` and a one-hot."""
    count = len(texts)
    features = {"text": texts}
    if pair:
        features["text_pair"] = texts[::-1]
    labels = {
        "index": np.arange(count, dtype="int32"),
        "onehot": np.eye(count, dtype="float32"),
    }
    masks = {"index": np.ones(count, "float32"), "onehot": np.arange(count) % 2}
    masks["onehot"] = masks["onehot"].astype("float32")
    return tf.data.Dataset.from_tensor_slices((features, labels, masks))


def test_bucket_lengths():
    assert bucket_lengths(128) == (16, 32, 64, 128)
    assert bucket_lengths(100) == (16, 32, 64, 100)
    assert bucket_lengths(10) == (10,)
    assert bucket_lengths(40, [32, 8, 8, 64, 0]) == (8, 32, 40)


@pytest.mark.parametrize("pair", [False, True])
def test_make_batches_buckets(vocab, pair):
    texts = sentences(53, seed=1) + [t.decode("utf-8", "replace") for t in EDGE_TEXTS]
    preprocessor = TextPreprocessor(vocab, sequence_length=40, pair=pair)
    expected = preprocessor(texts, texts[::-1]) if pair else preprocessor(texts)
    expected_ids = expected["token_ids"].numpy()
    lengths = expected["padding_mask"].numpy().sum(axis=1)
    buckets = (8, 16, 40)

    batches = make_batches(
        raw_dataset(texts, pair), preprocessor, batch_size=8, bucket_boundaries=[8, 16]
    )
    seen = collections.Counter()
    shapes = set()
    for x, y, sample_weight in batches.as_numpy_iterator():
        batch_size, length = x["token_ids"].shape
        shapes.add(length)
        assert x["padding_mask"].shape == (batch_size, length)
        assert y["onehot"].shape == (batch_size, len(texts))
        assert sample_weight["index"].shape == (batch_size,)
        # Padded to the smallest bucket that holds the batch's longest text.
        longest = x["padding_mask"].sum(axis=1).max()
        assert length == min(b for b in buckets if b >= longest)
        for row, index in enumerate(y["index"]):
            seen[index] += 1
            # Labels, masks and texts stay aligned.
            assert y["onehot"][row].argmax() == index
            assert sample_weight["onehot"][row] == index % 2
            n = lengths[index]
            assert x["token_ids"][row, :n].tolist() == expected_ids[index, :n].tolist()
            assert not x["token_ids"][row, n:].any()
            assert not x["padding_mask"][row, n:].any()
    assert seen == collections.Counter(range(len(texts)))
    assert shapes <= set(buckets) and len(shapes) > 1


def test_make_batches_default_buckets_and_drop_remainder(vocab):
    texts = sentences(50, seed=2)
    preprocessor = TextPreprocessor(vocab, sequence_length=20)
    batches = make_batches(
        raw_dataset(texts), preprocessor, batch_size=4, drop_remainder=True
    )
    shapes = {tuple(x["token_ids"].shape) for x, _, _ in batches}
    assert {s[0] for s in shapes} == {4}
    assert {s[1] for s in shapes} <= set(bucket_lengths(20))


def test_make_batches_fixed_length_and_shuffle(vocab):
    texts = sentences(21, seed=3)
    preprocessor = TextPreprocessor(vocab, sequence_length=24)
    fixed = make_batches(raw_dataset(texts), preprocessor, 8, pad_to_fixed_length=True)
    assert fixed.element_spec[0]["token_ids"].shape.as_list() == [None, 24]
    batches = list(fixed.as_numpy_iterator())
    assert [x["token_ids"].shape for x, _, _ in batches] == [(8, 24), (8, 24), (5, 24)]
    order = np.concatenate([y["index"] for _, y, _ in batches])
    assert order.tolist() == list(range(21))
    all_ids = np.concatenate([x["token_ids"] for x, _, _ in batches])
    assert all_ids.tolist() == ids(preprocessor(texts))

    def shuffled_order(seed):
        dataset = make_batches(
            raw_dataset(texts), preprocessor, 8, shuffle_buffer=32, seed=seed
        )
        return [i for _, y, _ in dataset.as_numpy_iterator() for i in y["index"]]

    assert sorted(shuffled_order(7)) == list(range(21))
    assert shuffled_order(7) == shuffled_order(7)


def test_make_batches_groups_each_chunk_by_bucket(vocab):
    """Chunks of 32 batches are grouped by bucket, stream order kept within a
    bucket: in a chunk, the batches' bucket ranges do not overlap, and only
    the last chunk has a partial batch."""
    texts = sentences(150, seed=4)
    preprocessor = TextPreprocessor(vocab, sequence_length=40)
    lengths = preprocessor(texts)["padding_mask"].numpy().sum(axis=1)
    buckets = np.searchsorted(bucket_lengths(40, [8, 16]), lengths)
    batch_size = 4
    chunk = batch_size * batching._BATCHES_PER_CHUNK

    def batch_indices(seed=None, drop_remainder=False):
        batches = make_batches(
            raw_dataset(texts), preprocessor, batch_size, bucket_boundaries=[8, 16],
            seed=seed, drop_remainder=drop_remainder,
        )  # fmt: skip
        return [y["index"].tolist() for _, y, _ in batches.as_numpy_iterator()]

    batches = batch_indices()
    sizes = [len(b) for b in batches]
    assert sorted(sizes) == [150 % batch_size] + [batch_size] * (150 // batch_size)
    partial = batches[sizes.index(150 % batch_size)]
    assert min(partial) >= 150 // chunk * chunk
    spans = collections.defaultdict(list)  # per chunk: each batch's buckets
    for indices in batches:
        assert len({i // chunk for i in indices}) == 1  # never across chunks
        spans[indices[0] // chunk].append(sorted(buckets[indices]))
        for bucket in set(buckets[indices]):  # stream order within a bucket
            same = [i for i in indices if buckets[i] == bucket]
            assert same == sorted(same)
    for chunk_spans in spans.values():
        chunk_spans.sort()
        for lower, higher in zip(chunk_spans, chunk_spans[1:]):
            assert lower[-1] <= higher[0]
    # The batch order within a chunk is shuffled by the seed, reproducibly.
    assert batch_indices(seed=1) == batch_indices(seed=1) != batch_indices(seed=2)
    assert sorted(map(sorted, batch_indices(seed=1))) == sorted(map(sorted, batches))
    # drop_remainder drops only the final partial batch.
    kept = [i for b in batch_indices(drop_remainder=True) for i in b]
    assert sorted(kept) == sorted(set(range(150)) - set(partial))


def test_make_batches_errors(vocab):
    preprocessor = TextPreprocessor(vocab, sequence_length=16)
    tagging = tf.data.Dataset.from_tensors(
        ({"text": "the fox"}, {"ner": tf.constant([1, 0])}, {"ner": 1.0})
    )
    with pytest.raises(ValueError, match="'ner'.*align_words=True"):
        make_batches(tagging, preprocessor, 4)
    pairs = raw_dataset(["the fox", "a dog"], pair=True)
    with pytest.raises(ValueError, match="pair"):
        make_batches(pairs, preprocessor, 4)
    with pytest.raises(ValueError, match="features, labels, masks"):
        make_batches(tf.data.Dataset.from_tensors("the fox"), preprocessor, 4)


def test_docstring_examples():
    results = doctest.testmod(preprocess, extraglobs={"tf": tf})
    assert results.attempted > 0 and results.failed == 0

"""`mtl-keras serve`: TF Serving's REST answers, limits, concurrency, the command."""

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
from mtl_keras.export import export_saved_model, load_for_serving
from mtl_keras.serve import Limits, ModelServer, make_server
from mtl_keras.warmup import read_warmup_requests

TEXTS = ["the match was great", "a dull budget debate", "fresh bread", "new phone today",
         "the striker scored twice last night", "awful soup"]
# A generous timeout: on a loaded machine 16 clients may wait for the 4 worker slots.
LIMITS = Limits(max_body_bytes=4096, max_batch=8, max_text_chars=200, timeout_seconds=120)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    preprocessor = TextPreprocessor.from_texts(TEXTS * 3, 60, sequence_length=16,
                                               align_words=True)
    encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    tasks = [Task("topic", "multiclass", 4, label_names=("sports", "politics", "tech", "food")),
             Task("liked", "binary"),
             Task("mentions", "tagging", 3, label_names=("O", "B-item", "I-item"))]
    path = tmp_path_factory.mktemp("serve") / "films"
    export_saved_model(MultiTaskModel(tasks, encoder, preprocessor), path)
    return path


@pytest.fixture(scope="module")
def server(export):
    model_server = ModelServer(str(export), name="films", limits=LIMITS)
    http = make_server(model_server, port=0)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_address[1]}/v1/models/films", model_server
    http.shutdown()
    http.server_close()


def call(url, body=None, method=None):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def expected_rows(predictor, texts):
    """What TF Serving answers: the serving_default outputs, one object per text."""
    outputs = predictor.predict_arrays(texts)
    rows = []
    for i in range(len(texts)):
        row = {}
        for name, array in outputs.items():
            value = array[i]
            row[name] = (value.decode() if isinstance(value, bytes) else
                         [v.decode() for v in value.tolist()] if value.dtype.kind in "SO"
                         else value.tolist())
        rows.append(row)
    return json.loads(json.dumps(rows))


def test_status_metadata_and_predictions_equal_the_saved_model(server, export):
    url, _ = server
    predictor = load_for_serving(export)  # the SavedModel's serving_default, in-process
    status, answer = call(url)
    assert status == 200 and answer["model_version_status"][0]["state"] == "AVAILABLE"
    assert [t["name"] for t in answer["metadata"]["tasks"]] == ["topic", "liked", "mentions"]
    assert answer["metadata"]["tasks"][0]["classes"] == ["sports", "politics", "tech", "food"]
    assert call(url + "/metadata")[1]["metadata"] == answer["metadata"]
    status, answer = call(url + ":predict", {"instances": TEXTS[:3]})
    assert status == 200 and answer["predictions"] == expected_rows(predictor, TEXTS[:3])
    objects = [{"text": t} for t in TEXTS[:3]]
    assert call(url + ":predict", {"instances": objects})[1] == answer
    status, columns = call(url + ":predict", {"inputs": {"text": TEXTS[:3]}})
    assert status == 200
    assert columns["outputs"]["topic_label"] == [r["topic_label"] for r in answer["predictions"]]


BAD = [  # (body or raw bytes, method, path suffix, status, words the error must say)
    (b"x" * 5000, "POST", ":predict", 413, "max_body_bytes=4096"),
    ({"instances": ["a"] * 9}, "POST", ":predict", 400, "max_batch=8"),
    ({"instances": ["a" * 201]}, "POST", ":predict", 400, "max_text_chars=200"),
    (b"{not json", "POST", ":predict", 400, "not valid JSON"),
    ({"instances": "one text"}, "POST", ":predict", 400, "must be a list"),
    ({"instances": [3]}, "POST", ":predict", 400, "must be a string"),
    ({"instances": []}, "POST", ":predict", 400, "non-empty"),
    ({"texts": ["a"]}, "POST", ":predict", 400, '"instances" or "inputs"'),
    (None, "GET", ":predict", 405, "answers POST"),
    ({"instances": ["a"]}, "POST", "/../other:predict", 404, "No "),
    ({"instances": ["a"]}, "PUT", "", 405, "answers GET"),
]


@pytest.mark.parametrize("body, method, suffix, status, words", BAD,
                         ids=[f"{b[3]}-{b[4][:12]}" for b in BAD])
def test_bad_requests_get_a_status_naming_the_limit_and_the_server_stays_up(
        server, body, method, suffix, status, words):
    url, _ = server
    got, answer = call(url + suffix, body, method)
    assert (got, words in answer["error"]) == (status, True), answer
    assert call(url + ":predict", {"instances": TEXTS[:1]})[0] == 200


def test_sixteen_clients_get_answers_identical_to_the_saved_model(server, export):
    """16 clients x 200 mixed requests on loopback: 0 unexpected answers."""
    url, _ = server
    predictor = load_for_serving(export)
    good = [TEXTS[i:i + n] for i in range(len(TEXTS)) for n in (1, 3)]
    expected = {json.dumps(texts): expected_rows(predictor, texts) for texts in good}
    bad = [BAD[1], BAD[2], BAD[3], BAD[0]]

    def client(number):
        wrong = 0
        for i in range(200):
            if (i + number) % 5 == 4:  # one request in five is refused
                body, method, suffix, status, _ = bad[(i + number) % len(bad)]
                wrong += call(url + suffix, body, method)[0] != status
            else:
                texts = good[(i * 7 + number) % len(good)]
                got = call(url + ":predict", {"instances": texts})
                wrong += got != (200, {"predictions": expected[json.dumps(texts)]})
        return wrong

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(client, range(16))) == 0


def test_the_serve_command_answers_until_stopped(export):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-m", "mtl_keras.cli", "serve", str(export), "--port", "0",
               "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        line = process.stdout.readline()  # "Serving ... on http://127.0.0.1:PORT/v1/models/films"
        assert "No authentication" in line, process.stderr.read() if not line else line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1/models/films")
        status, answer = call(url + ":predict", {"instances": ["the match was great"]})
        assert status == 200 and set(answer["predictions"][0]) >= {"topic_label", "liked_label"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_export_carries_tf_serving_warm_up_requests_that_run(export):
    requests = read_warmup_requests(export)
    assert [len(r.inputs["text"].string_val) for r in requests] == [1, 8]
    assert all(r.model_spec.signature_name == "serving_default" for r in requests)
    predictor = load_for_serving(export)
    for request in requests:  # what TF Serving does with them when it loads the model
        texts = [t.decode() for t in request.inputs["text"].string_val]
        outputs = predictor.predict_arrays(texts)
        assert outputs["topic_probabilities"].shape == (len(texts), 4)

"""`mtl-keras serve`: an HTTP server for an export, speaking TF Serving's REST API.

    POST /v1/models/<name>:predict   {"instances": [...]} or {"inputs": ...}
    GET  /v1/models/<name>           status, and the export's metadata (tasks, labels)
    GET  /v1/models/<name>/metadata  the metadata alone

The answers are those of TF Serving's REST API for the same SavedModel
(`predictions` rows for `instances`, `outputs` columns for `inputs`; the
`serving_default` outputs, `<task>_probabilities`, `<task>_label`, ...), so
a client written for TF Serving works against both. Errors are
`{"error": "..."}` with a status code: 400 a bad request (naming the
limit or the field), 404 an unknown model or path, 405 a wrong method, 413
a body over the limit, 503 when every worker slot stays busy.

It is built on the standard library's `ThreadingHTTPServer`: one thread per
connection is enough for a model that computes on the same cores, and it
adds no dependency; the limits below bound what one request may cost.
There is no authentication and no TLS: it listens on 127.0.0.1 unless told
otherwise. Put it behind a reverse proxy before exposing it.
"""

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from mtl_keras.export import load_for_serving


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask of the server.

    Args:
        max_body_bytes: the largest request body (413 above it).
        max_batch: the most texts in one request (400 above it).
        max_text_chars: the longest text, in characters (400 above it);
            the model truncates at its `sequence_length` anyway, so longer
            texts only cost tokenizing time.
        timeout_seconds: how long a connection may take to send its
            request, and a request may wait for a worker slot (503).
        workers: requests computed at the same time.

    Example:
    >>> Limits(max_batch=0)
    Traceback (most recent call last):
    ...
    ValueError: max_batch must be a positive number, got 0.
    """

    max_body_bytes: int = 1 << 20
    max_batch: int = 64
    max_text_chars: int = 20_000
    timeout_seconds: float = 30.0
    workers: int = 4

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{field.name} must be a positive number, got {value!r}.")


class RequestError(ValueError):
    """A request the server refuses; `status` is the HTTP status code."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _texts(body, inputs, limits):
    """The columns ({"text": [...], "text_pair": [...]}) of a predict request, checked."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise RequestError(400, 'The body must be a JSON object with "instances" or "inputs".')
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise RequestError(400, '"instances" must be a list.')
        if len(inputs) == 1:
            rows = [row[inputs[0]] if isinstance(row, dict) and inputs[0] in row else row
                    for row in rows]
            columns = {inputs[0]: rows}
        else:
            if not all(isinstance(row, dict) for row in rows):
                raise RequestError(400, f"Each instance must be an object with {inputs}.")
            columns = {name: [row.get(name) for row in rows] for name in inputs}
    else:
        given = body["inputs"]
        columns = given if isinstance(given, dict) else {inputs[0]: given}
        if sorted(columns) != sorted(inputs):
            raise RequestError(400, f'"inputs" must give {inputs}, got {sorted(columns)}.')
    for name, values in columns.items():
        if not isinstance(values, list) or not values:
            raise RequestError(400, f"{name!r} must be a non-empty list of strings.")
        if len(values) > limits.max_batch:
            raise RequestError(
                400, f"{len(values)} texts in one request: the limit is max_batch="
                f"{limits.max_batch}; split the request.")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise RequestError(400, f"{name}[{i}] must be a string, got "
                                        f"{type(value).__name__}.")
            if len(value) > limits.max_text_chars:
                raise RequestError(
                    400, f"{name}[{i}] has {len(value)} characters: the limit is "
                    f"max_text_chars={limits.max_text_chars}.")
    return columns


def _json_value(array):
    if array.dtype.kind in "SO":  # strings (labels, tags)
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(
            array).tolist()
    return array.tolist()


class ModelServer:
    """Answers TF Serving's REST requests for one export, with `Limits`.

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film", "bad film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> path = tempfile.mkdtemp() + "/model.keras"
    >>> MultiTaskModel([Task("liked", "binary")], encoder, preprocessor).save(path)
    >>> server = ModelServer(path, name="films")
    >>> status, answer = server.answer("POST", "/v1/models/films:predict",
    ...                                b'{"instances": ["good film"]}')
    >>> status, sorted(answer["predictions"][0])
    (200, ['liked_label', 'liked_probabilities', 'num_tokens'])
    >>> server.answer("POST", "/v1/models/films:predict", b'{"instances": "good film"}')
    (400, {'error': '"instances" must be a list.'})
    """

    def __init__(self, path, name="model", limits=None, **load_options):
        self.predictor = load_for_serving(path, **load_options)
        self.name = name
        self.limits = limits or Limits()
        self._slots = threading.BoundedSemaphore(self.limits.workers)

    def status(self):
        return {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE",
                 "status": {"error_code": "OK", "error_message": ""}}
            ],
            "metadata": self.predictor.metadata,
        }

    def answer(self, method, path, body=b""):
        """`(status code, JSON-serializable answer)` for one request."""
        try:
            return 200, self._answer(method, path, body)
        except RequestError as error:
            return error.status, {"error": str(error)}

    def _answer(self, method, path, body):
        prefix = f"/v1/models/{self.name}"
        path = path.split("?", 1)[0].rstrip("/")
        if path in (prefix, f"{prefix}/metadata"):
            if method != "GET":
                raise RequestError(405, f"{path} answers GET.")
            return self.status() if path == prefix else {"metadata": self.predictor.metadata}
        if path != f"{prefix}:predict":
            raise RequestError(404, f"No {path}: this server has {prefix} and "
                                    f"{prefix}:predict.")
        if method != "POST":
            raise RequestError(405, f"{path} answers POST.")
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(400, f"The body is not valid JSON: {error}.") from None
        columns = _texts(request, self.predictor.metadata["inputs"], self.limits)
        if not self._slots.acquire(timeout=self.limits.timeout_seconds):
            raise RequestError(503, f"Every worker stayed busy for {self.limits.timeout_seconds}"
                                    " s; retry later.")
        try:
            outputs = self.predictor.predict_arrays(columns["text"], columns.get("text_pair"))
        finally:
            self._slots.release()
        values = {name: _json_value(array) for name, array in outputs.items()}
        if "inputs" in request:
            return {"outputs": values}
        return {"predictions": [{name: values[name][i] for name in values}
                                for i in range(len(columns["text"]))]}


_DRAIN_BYTES = 64 << 20  # a refused body up to this size is read (and dropped) first


class _Handler(BaseHTTPRequestHandler):
    server_version = "mtl-keras"
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connection
    # TCP_NODELAY: headers and body leave at once, not 40 ms apart (Nagle's
    # algorithm waiting for the client's delayed ACK on a kept-alive connection).
    disable_nagle_algorithm = True

    def setup(self):
        self.timeout = self.server.model_server.limits.timeout_seconds  # a slow sender
        super().setup()

    def _reply(self, status, answer):
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method):
        limits = self.server.model_server.limits
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return self._reply(400, {"error": "Content-Length is not a number."})
        if length > limits.max_body_bytes:
            self.close_connection = True
            remaining = length if length <= _DRAIN_BYTES else 0
            while remaining > 0:  # read and drop it: a client still sending would get a
                chunk = self.rfile.read(min(1 << 16, remaining))  # reset, not the 413
                if not chunk:
                    break
                remaining -= len(chunk)
            return self._reply(413, {"error": f"The body has {length} bytes: the limit is "
                                              f"max_body_bytes={limits.max_body_bytes}."})
        body = self.rfile.read(length) if length else b""
        self._reply(*self.server.model_server.answer(method, self.path, body))

    def do_GET(self):  # noqa: N802 (the standard library's name)
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_PUT(self):  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self):  # noqa: N802
        self._handle("DELETE")

    def log_message(self, format, *args):  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)


def make_server(model_server, host="127.0.0.1", port=8501, verbose=False):
    """A `ThreadingHTTPServer` for a `ModelServer`; `port=0` picks a free port.

    Call `serve_forever()` on it (and `shutdown()` from another thread).

    Example:
    >>> import json, tempfile, threading, urllib.request
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> path = tempfile.mkdtemp() + "/model.keras"
    >>> MultiTaskModel([Task("liked", "binary")], encoder, preprocessor).save(path)
    >>> server = make_server(ModelServer(path, name="films"), port=0)
    >>> threading.Thread(target=server.serve_forever, daemon=True).start()
    >>> url = f"http://127.0.0.1:{server.server_address[1]}/v1/models/films"
    >>> json.load(urllib.request.urlopen(url))["model_version_status"][0]["state"]
    'AVAILABLE'
    >>> server.shutdown(); server.server_close()
    """
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    server.model_server, server.verbose = model_server, verbose
    return server

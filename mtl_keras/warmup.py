"""TF Serving warm-up records: requests TF Serving runs once when it loads an export.

TF Serving reads `assets.extra/tf_serving_warmup_requests` (a TFRecord file
of `PredictionLog` protos) and runs each request before it answers any
client, so the first real request does not pay for the graph's first run.
The protos come from `tensorflow-serving-api`, TF Serving's own Python
package (`tensorflow_serving.apis`).
"""

import os

import tensorflow as tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def warmup_texts(sequence_length):
    """Representative requests: one short text, and a batch of eight long ones.

    The long texts fill `sequence_length` word pieces, the batch's widest
    shape (`serving_default` cuts a batch to its longest text).

    Example:
    >>> [len(batch) for batch in warmup_texts(16)]
    [1, 8]
    """
    long_text = " ".join(["word"] * int(sequence_length))
    return [["a short text to warm up the model"], [long_text] * 8]


def write_warmup_requests(saved_model_dir, inputs, sequence_length, model_name="model"):
    """Writes the warm-up records of an export; returns their path.

    Args:
        saved_model_dir: the SavedModel directory.
        inputs: the `serving_default` input names (`["text"]` or
            `["text", "text_pair"]`).
        sequence_length: the preprocessor's; sets the long requests' length.
        model_name: the `model_spec.name` of the requests (TF Serving
            ignores it while warming up).

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> path = write_warmup_requests(directory, ["text"], 8)
    >>> [len(request.inputs["text"].string_val) for request in read_warmup_requests(directory)]
    [1, 8]
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for texts in warmup_texts(sequence_length):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
            )
            for name in inputs:
                request.inputs[name].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir):
    """The `PredictRequest`s of an export's warm-up file, in order.

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> _ = write_warmup_requests(directory, ["text", "text_pair"], 4)
    >>> sorted(read_warmup_requests(directory)[0].inputs)
    ['text', 'text_pair']
    """
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(os.path.join(saved_model_dir, WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests

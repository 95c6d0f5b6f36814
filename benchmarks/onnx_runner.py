"""ONNX Runtime as a dense baseline: export a torch module, run it on a fixed number of threads."""

from __future__ import annotations

import io
import warnings

import torch


def ort_runner(model: torch.nn.Module, x: torch.Tensor, threads: int = 1):
    """A no-argument callable running ``model`` on ``x`` with ONNX Runtime (CPU, ``threads``)."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)

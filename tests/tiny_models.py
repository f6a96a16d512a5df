"""Tiny hand-built ONNX models for tests: each writes a file and returns its path."""
from __future__ import annotations

from pathlib import Path


def embedding_onnx(path: Path, tokens: int = 4, width: int = 16) -> Path:
    """A transformer-block look-alike with an embedding output: ``x [N, T, D]`` -> MatMul(D x 2D) ->
    Relu -> MatMul(2D x D) -> Add(x) -> ``last_hidden_state [N, T, D]`` (the name and the shape of a
    BERT encoder's output; no labels fit it, so its quality metric is cosine similarity)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype("float32"), n)
             for n, s in (("w1", (width, 2 * width)), ("w2", (2 * width, width)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["d"], name="down"),
             helper.make_node("Add", ["d", "x"], ["last_hidden_state"], name="residual")]
    graph = helper.make_graph(
        nodes, "tiny-encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", tokens, width])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["N", tokens, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)

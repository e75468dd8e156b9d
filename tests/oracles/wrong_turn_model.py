"""Writes a small ONNX model shaped like an end-of-turn model but for a shorter window
(input_features [batch, 80, 400]): the model of the wrong input size tests/turn.rs hands the box."""

import sys

import onnx
from onnx import TensorProto, helper

features = helper.make_tensor_value_info("input_features", TensorProto.FLOAT, ["batch", 80, 400])
logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
mean = helper.make_node("ReduceMean", ["input_features", "axes"], ["mean"], keepdims=0)
shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
reshape = helper.make_node("Reshape", ["mean", "shape"], ["logits"])
graph = helper.make_graph([mean, reshape], "wrong-size", [features], [logits], initializer=[axes, shape])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])

"""Static knowledge about ONNX operators on the deployment targets, so ``udc-edge doctor`` can
answer "will TensorRT parse this?" on a machine without TensorRT.

Source: the ONNX-TensorRT operator support matrix, ``docs/operators.md`` of
github.com/onnx/onnx-tensorrt (the TensorRT 8.5 table: "Supported", "Restrictions"), plus
the operators its ``docs/Changelog.md`` records as added later (LayerNormalization,
GroupNormalization and IsInf in 8.6; Hardmax in 9.2; DeformConv in 10.1; the window ops in
10.4; real-valued STFT in 10.5) and ``DFT`` in the TensorRT 11.2 release notes (PR #1061).
Where a version is given, older TensorRT releases reject the operator. This is a table of
what the parser *accepts*, not of what is fast; :data:`SLOW_OPS` holds the latter.
"""

from __future__ import annotations

from dataclasses import dataclass

# Operators the parser accepts without restrictions that matter to image restorers.
_SUPPORTED = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "ConvTranspose", "Cos", "Cosh", "DepthToSpace", "Div", "Dropout", "Elu", "Equal", "Erf",
    "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "HardSigmoid", "HardSwish", "Identity", "ImageScaler", "IsNaN", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "MatMul", "Max",
    "Mean", "MeanVarianceNormalization", "Min", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero",
    "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "Range", "Reciprocal",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "RoiAlign",
    "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
    "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile",
    "Transpose", "Trilu", "Upsample", "Where", "Xor",
})

# Accepted with a restriction (the table's "Restrictions" column, shortened).
RESTRICTED: dict[str, str] = {
    "AveragePool": "2D or 3D pooling only",
    "MaxPool": "2D or 3D pooling only; the Indices output is unsupported",
    "CumSum": "axis must be an initializer",
    "DequantizeLinear": "x_zero_point must be zero (symmetric INT8)",
    "QuantizeLinear": "y_zero_point must be zero (symmetric INT8)",
    "Einsum": "no ellipsis or diagonal operations, no broadcasting between inputs",
    "GRU": "bidirectional GRUs need the same activations both ways",
    "LSTM": "bidirectional LSTMs need the same activations both ways",
    "RNN": "bidirectional RNNs need the same activations both ways",
    "If": "both branches' outputs must have broadcastable shapes and different names",
    "InstanceNormalization": "scale and B must be initializers; input rank 3 to 5",
    "Resize": "modes nearest/linear; coordinate modes half_pixel, pytorch_half_pixel, "
              "tf_half_pixel_for_nn, asymmetric, align_corners",
    "ReverseSequence": "dynamic input shapes only from TensorRT 8.6",
    "Slice": "axes must be an initializer (tensor axes from TensorRT 10.3)",
    "Squeeze": "axes must be an initializer",
    "Unsqueeze": "axes must be a constant tensor",
    "TopK": "K must be an initializer (dynamic K from TensorRT 8.6)",
    "RandomUniform": "seed is ignored", "RandomUniformLike": "seed is ignored",
    "RandomNormal": "seed is ignored", "RandomNormalLike": "seed is ignored",
}

# Rejected by the TensorRT 8.5 parser; the value is the release that added it, or "" if none.
UNSUPPORTED: dict[str, str] = {
    "DFT": "11.2", "STFT": "10.5", "LayerNormalization": "8.6", "GroupNormalization": "8.6", "IsInf": "8.6",
    "Hardmax": "9.2", "DeformConv": "10.1", "BlackmanWindow": "10.4", "HammingWindow": "10.4",
    "HannWindow": "10.4", "Bernoulli": "", "BitShift": "", "Compress": "", "ConcatFromSequence": "",
    "ConvInteger": "", "Det": "", "DynamicQuantizeLinear": "", "MatMulInteger": "", "MaxRoiPool": "",
    "MaxUnpool": "", "MelWeightMatrix": "", "Multinomial": "", "NegativeLogLikelihoodLoss": "",
    "Optional": "", "OptionalGetElement": "", "OptionalHasElement": "", "QLinearConv": "",
    "QLinearMatMul": "", "SequenceAt": "", "SequenceConstruct": "", "SequenceEmpty": "", "SequenceErase": "",
    "SequenceInsert": "", "SequenceLength": "", "SequenceMap": "", "SoftmaxCrossEntropyLoss": "",
    "SplitToSequence": "", "StringNormalizer": "", "TfIdfVectorizer": "", "Unique": "",
}

# Ops that export and run, but slowly on edge targets, and never gain from INT8.
SLOW_OPS: dict[str, str] = {
    "Gather": "indexing (Tensor.unfold, fancy indexing): memory-bound, runs element by element",
    "GatherElements": "indexing (torch.gather): memory-bound",
    "GatherND": "indexing: memory-bound",
    "ScatterND": "in-place index assignment (x[..., i] = v): serialises writes",
    "ScatterElements": "scatter: serialises writes",
    "Range": "builds index tensors at run time (Tensor.unfold, arange on input sizes)",
    "DFT": "FFT layer: no TensorRT before 11.2; ONNX Runtime CPU may need safer session options",
    "STFT": "short-time Fourier transform",
    "Loop": "a Python loop over a data-dependent count: runs sequentially",
    "Scan": "sequential scan",
    "If": "data-dependent branch: blocks fusion",
    "NonZero": "data-dependent output shape",
    "Unique": "data-dependent output shape",
    "TopK": "sorting",
}


@dataclass(frozen=True)
class TrtSupport:
    op_type: str
    supported: bool | None  # None: not in the table
    note: str = ""


def tensorrt_support(op_type: str) -> TrtSupport:
    """What the ONNX-TensorRT support matrix says about ``op_type`` (default ONNX domain)."""
    if op_type in UNSUPPORTED:
        since = UNSUPPORTED[op_type]
        return TrtSupport(op_type, False, f"TensorRT >= {since} only" if since else "not supported by the parser")
    if op_type in RESTRICTED:
        return TrtSupport(op_type, True, RESTRICTED[op_type])
    if op_type in _SUPPORTED:
        return TrtSupport(op_type, True)
    return TrtSupport(op_type, None, "not in the ONNX-TensorRT support table; may need a plugin")

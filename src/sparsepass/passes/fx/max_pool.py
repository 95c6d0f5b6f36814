"""Max pooling in a torch.fx graph onto sparsepass's pool kernel, with the ReLU before it.

Not a sparse op: PyTorch's NCHW ``max_pool2d`` on CPUs is slow enough (a
quarter of a sparsified ResNet-18's time, codegen.max_pool_cpu) that leaving it
would hide much of what the sparse convs around it gain. ``nn.MaxPool2d``,
``F.max_pool2d`` and aten ``max_pool2d`` are matched; a ReLU whose only user is
the pool runs in the kernel's store (``max(relu(x)) == relu(max(x))``). Pools
that return indices, dilate, are not NCHW (float32 or half), or whose input size is
unknown stay in PyTorch, with the reason in the report.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass.codegen.io_dtype import IO_DTYPES
from sparsepass.codegen.max_pool_cpu import PoolSpec
from sparsepass.ops import pool_ops  # noqa: F401  (registers the op)
from sparsepass.passes.fx.activations import activation_name
from sparsepass.passes.fx.conv_match import _pair
from sparsepass.passes.fx.match import node_dtype, node_shape
from sparsepass.passes.fx.splice import chain, splice_call
from sparsepass.passes.report import LayerReport

aten = torch.ops.aten

_FUNCTIONS = (F.max_pool2d, torch.max_pool2d, aten.max_pool2d.default)
_ARGUMENTS = (("input", None), ("kernel_size", None), ("stride", None), ("padding", 0),
              ("dilation", 1), ("ceil_mode", False), ("return_indices", False))
REASON = "PyTorch's NCHW max_pool2d runs scalar window loops, 20-40x slower here"


@dataclasses.dataclass(frozen=True)
class PoolSite:
    """One 2-D max pool found in a graph, its hyper-parameters normalised to pairs."""

    node: fx.Node
    name: str
    x: fx.Node
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool
    return_indices: bool


def match_max_pool(gm: fx.GraphModule, node: fx.Node) -> PoolSite | None:
    """The PoolSite of ``node``, or None when it is not a 2-D max pool."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if not isinstance(module, nn.MaxPool2d):
            return None
        name, values = node.target, [node.args[0], module.kernel_size, module.stride, module.padding,
                                     module.dilation, module.ceil_mode, module.return_indices]
    elif node.op == "call_function" and node.target in _FUNCTIONS:
        name = node.name
        values = [node.args[i] if i < len(node.args) else node.kwargs.get(key, default)
                  for i, (key, default) in enumerate(_ARGUMENTS)]
    else:
        return None
    x, kernel, stride, padding, dilation, ceil_mode, return_indices = values
    kernel = _pair(kernel)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    return PoolSite(node, name, x, kernel, stride, _pair(padding), _pair(dilation), bool(ceil_mode),
                    bool(return_indices))


def _why_not(site: PoolSite) -> str | None:
    shape = node_shape(site.x)
    if site.return_indices:
        return "returns indices: stays in PyTorch"
    if site.dilation != (1, 1):
        return f"dilation {site.dilation}: stays in PyTorch"
    if shape is None:
        return "input size unknown (pass example_inputs): the kernel is specialised to it"
    if len(shape) != 4:
        return f"input of shape {shape} is not [N, C, H, W]: stays in PyTorch"
    if str(node_dtype(site.x)).removeprefix("torch.") not in IO_DTYPES:
        return f"input is {node_dtype(site.x)}; the kernel takes float32, bfloat16 or float16"
    if any(2 * p > k for p, k in zip(site.padding, site.kernel)):
        return f"padding {site.padding} exceeds half the window {site.kernel}"
    return None


def rewrite_max_pool(gm: fx.GraphModule, site: PoolSite, target: dict) -> LayerReport | None:
    """Rewrite one max pool for a CPU target; its report entry (None on other targets)."""
    if target["kind"] != "llvm":
        return None
    why = _why_not(site)
    if why is not None:
        return LayerReport(site.name, "max_pool2d", site.kernel, "-", None, "dense", why)
    first, x, epilogue = site.node, site.x, "none"
    # The ReLU and what it reads must have no other user: an in-place ReLU's input is its output.
    if isinstance(x, fx.Node) and activation_name(x, gm) == "relu" and len(x.users) == 1 \
            and isinstance(x.args[0], fx.Node) and len(x.args[0].users) == 1:
        first, x, epilogue = x, x.args[0], "relu"
    height, width = node_shape(site.x)[2:]
    spec = PoolSpec.make(height=height, width=width, kernel=site.kernel, stride=site.stride,
                         padding=site.padding, ceil_mode=site.ceil_mode, epilogue=epilogue,
                         dtype=str(node_dtype(site.x)).removeprefix("torch."), target=target)
    label = f"max pool {site.kernel[0]}x{site.kernel[1]}/{site.stride[0]}" + \
        (" +relu" if epilogue == "relu" else "")
    report = LayerReport(site.name, "max_pool2d", site.kernel, "-", None, label, REASON)
    splice_call(gm, torch.ops.sparsepass.max_pool2d.default, site.node,
                (x, spec.to_json(), site.name), (), report, chain(first, site.node))
    return report

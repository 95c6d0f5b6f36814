"""Channel structure of a Relax function, and rewriting its constants: the base of the Relax
CompactChannels and ReorderFilters passes.

A *layer* is ``conv2d(x, W)`` (NCHW/OIHW, groups 1) or ``matmul(x, W)`` /
``matmul(x, permute_dims(W))`` with a constant W: it produces channels (W's
output rows) and reads channels (its input columns). Channels pass unchanged
through ReLU/GELU/SiLU/tanh and any clip whose bounds hold 0 (ReLU6), a bias add
with a constant broadcast along the channel dimension, and inference
batch_norm; residual adds join two tensors' channels. Any other use of a tensor pins its channels (their order and count
are seen by an op whose channel mapping is unknown).

Passes change nothing but constants (weights, biases, BN statistics); the
mutator then re-infers every shape downstream.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tvm import ir, relax

from sparsepass.passes.relax import activations
from sparsepass.passes.relax.names import constant_names, passed_on, with_names


@dataclasses.dataclass
class Layer:
    """A conv2d / matmul with a constant weight: which constant, and where its channels are."""

    var: relax.Var
    x: relax.Expr
    weight: ir.Constant
    out_axis: int  # axis of ``weight`` holding output channels
    in_axis: int  # axis of ``weight`` holding input channels
    kernel: tuple[int, ...] = ()  # spatial kernel size for convs


@dataclasses.dataclass
class Channels:
    """The channel facts of one function (see module docstring)."""

    layers: dict = dataclasses.field(default_factory=dict)  # var -> Layer (its output)
    through: dict = dataclasses.field(default_factory=dict)  # var -> (input var, shift or None, consts)
    adds: dict = dataclasses.field(default_factory=dict)  # var -> (a, b)
    readers: list = dataclasses.field(default_factory=list)  # Layer reading a carried var
    pinned: dict = dataclasses.field(default_factory=dict)  # var -> why
    width: dict = dataclasses.field(default_factory=dict)  # var -> channel count

    def carries(self, expr) -> bool:
        return isinstance(expr, relax.Var) and expr in self.width


def _value(c) -> np.ndarray:
    return c.value.numpy()


def _keeps_zero(call) -> bool:
    """Whether ``call`` is an elementwise activation mapping 0 to 0 (a clip when 0 is within its
    bounds)."""
    if getattr(call.op, "name", None) == "relax.clip":
        low, high = (activations.bound_value(bound) for bound in call.args[1:3])
        return low is not None and high is not None and low <= 0 <= high
    return activations.is_activation(call)


def _channel_axis(expr) -> int:
    return 1 if len(expr.ty.shape.values) == 4 else -1


def _width(expr) -> int | None:
    try:
        return int(expr.ty.shape.values[_channel_axis(expr)])
    except (TypeError, AttributeError, IndexError):
        return None


def _as_layer(var, call, var2val) -> Layer | None:
    op = getattr(call.op, "name", None)
    if op == "relax.nn.conv2d" and isinstance(call.args[1], ir.Constant):
        a = call.attrs
        if int(a.groups) == 1 and str(a.data_layout) == "NCHW" and str(a.kernel_layout) == "OIHW":
            return Layer(var, call.args[0], call.args[1], 0, 1, tuple(_value(call.args[1]).shape[2:]))
    if op == "relax.matmul":
        w = call.args[1]
        if isinstance(w, relax.Var) and w in var2val:
            w = var2val[w]
        if isinstance(w, ir.Constant) and _value(w).ndim == 2:
            return Layer(var, call.args[0], w, 1, 0)
        if isinstance(w, relax.Call) and getattr(w.op, "name", None) == "relax.permute_dims" \
                and isinstance(w.args[0], ir.Constant) and _value(w.args[0]).ndim == 2:
            return Layer(var, call.args[0], w.args[0], 0, 1)
    return None


def _channel_vector(const, var, width) -> np.ndarray | None:
    """A constant added to ``var`` as a per-channel vector (broadcast elsewhere), else None."""
    value = _value(const)
    if value.size != width:
        return None
    rank, axis = len(var.ty.shape.values), _channel_axis(var) % len(var.ty.shape.values)
    if value.ndim == 1 and axis == rank - 1:
        return value
    if value.ndim == rank and value.shape[axis] == width and value.size == width:
        return value.reshape(-1)
    return None


def analyse(func: relax.Function) -> Channels:
    """Walk ``func``'s bindings in order and record its channel structure."""
    facts, var2val = Channels(), relax.analysis.get_var2val(func)
    bindings = [b for block in func.body.blocks for b in block.bindings]
    for binding in bindings:
        var, value = binding.var, binding.value
        if isinstance(value, relax.Call):
            _visit_call(facts, var, value, var2val)
        elif isinstance(value, relax.TupleGetItem) and value.index == 0 and value.tuple_value in facts.through \
                and facts.carries(value.tuple_value):  # batch_norm(...)[0]: the normalised tensor
            facts.through[var], facts.width[var] = (value.tuple_value, None, ()), facts.width[value.tuple_value]
        else:
            _pin_uses(facts, value, f"{type(value).__name__} {var}")
    _pin_uses(facts, func.body.body, "the function's output")
    return facts


def _visit_call(facts: Channels, var, call, var2val) -> None:  # noqa: C901 (one branch per op kind)
    op = getattr(call.op, "name", None)
    layer = _as_layer(var, call, var2val)
    carried = [a for a in call.args if facts.carries(a)]
    if layer is not None and _width(var) is not None:
        facts.layers[var], facts.width[var] = layer, _width(var)
        if facts.carries(layer.x):
            facts.readers.append(layer)
        return
    if _keeps_zero(call) and len(carried) == 1 and call.args[0].same_as(carried[0]) \
            and _width(var) == facts.width[carried[0]]:
        facts.through[var], facts.width[var] = (carried[0], None, ()), _width(var)
        return
    if op == "relax.add" and len(call.args) == 2:
        a, b = call.args
        if len(carried) == 2 and facts.width[a] == facts.width[b] == _width(var) \
                and [int(d) for d in a.ty.shape.values] == [int(d) for d in b.ty.shape.values]:
            facts.adds[var], facts.width[var] = (a, b), _width(var)
            return
        if len(carried) == 1:
            x = carried[0]
            const = b if x.same_as(a) else a
            vector = _channel_vector(const, x, facts.width[x]) if isinstance(const, ir.Constant) else None
            if vector is not None and _width(var) == facts.width[x]:
                facts.through[var], facts.width[var] = (x, vector, (const,)), _width(var)
                return
    if op == "relax.nn.batch_norm" and len(carried) == 1 and call.args[0].same_as(carried[0]) \
            and all(isinstance(c, ir.Constant) for c in call.args[1:5]) and int(call.attrs.axis) == 1:
        facts.through[var] = (carried[0], _bn_shift(call), tuple(call.args[1:5]))
        facts.width[var] = facts.width[carried[0]]
        return
    _pin_uses(facts, call, f"{op} {var}")


def _bn_shift(call) -> np.ndarray:
    gamma, beta, mean, var = (_value(c) for c in call.args[1:5])
    return beta - mean * gamma / np.sqrt(var + float(call.attrs.epsilon))


def _pin_uses(facts: Channels, expr, why: str) -> None:
    """Pin every carried var that ``expr`` uses."""
    used = []
    relax.analysis.post_order_visit(expr, lambda e: used.append(e) if isinstance(e, relax.Var) else None)
    for v in used:
        if facts.carries(v):
            facts.pinned.setdefault(v, why)


@relax.expr_functor.mutator
class _Substitute(relax.PyExprMutator):
    def __init__(self, mod, mapping):
        super().__init__(mod)
        self.mapping = mapping

    def visit_generic_const_(self, op):
        return self.mapping.get(op, op)


def substitute_constants(mod: ir.IRModule, gvar, mapping: dict) -> ir.IRModule:
    """A copy of ``mod`` whose function ``gvar`` has constants replaced (old Constant -> new
    numpy array); every shape downstream is re-inferred, and a new weight keeps its layer's name."""
    consts = {old: relax.const(np.ascontiguousarray(new)) for old, new in mapping.items()}
    out = ir.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    out[gvar] = _Substitute(mod, consts).visit_expr(mod[gvar])
    return with_names(out, passed_on(constant_names(mod), [(_value(old), new) for old, new in mapping.items()]))

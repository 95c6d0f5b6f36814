"""SparsifyOptions(measure=True): a rewrite the cost model wants is kept only if its kernel wins
when timed here, and the report says what was measured."""

import torch
import torch.fx as fx
import torch.nn as nn

from sparsepass import passes, prune
from sparsepass.codegen.target import canonical_target
from sparsepass.passes.plan import CostModel
from sparsepass.testing import assert_equivalent
from sparsepass.testing.models import PointwiseThenPattern

#: A cost model that believes every sparse kernel runs at 100x the FMA peak.
OPTIMISTIC = CostModel(rows_full_vector=100.0, rows_part_vector=100.0, tokens=(100.0,) * 4)


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.wide, self.narrow = nn.Linear(512, 1024), nn.Linear(1024, 512)

    def forward(self, x):
        return self.narrow(torch.relu(self.wide(x)))


def pruned(block, density) -> TwoLayers:
    torch.manual_seed(0)
    model = TwoLayers().eval()
    prune.prune_linears(model, block, density)
    return model


def test_a_kernel_slower_than_dense_is_kept_dense_with_both_times():
    """Unstructured at density 0.9: the sparse kernel is several times slower than dense anywhere,
    though the optimistic cost model rewrites it."""
    model, x = pruned((1, 1), 0.9), torch.randn(64, 512)
    graph = fx.symbolic_trace(model)
    believed = passes.sparsify_graph(graph, example_inputs=(x,),
                                     options=passes.SparsifyOptions(cost=OPTIMISTIC))
    assert believed.sparsepass_report.rewritten == 2
    fast = passes.sparsify_graph(graph, example_inputs=(x,),
                                 options=passes.SparsifyOptions(cost=OPTIMISTIC, measure=True))
    for layer in fast.sparsepass_report:
        assert layer.kernel == "dense"
        assert "measured" in layer.reason and "the speed of dense" in layer.reason and " ms" in layer.reason
    assert_equivalent(model, fast, [x])


def test_a_kernel_that_wins_is_kept_and_the_report_gives_its_time():
    model, x = pruned((32, 1), 0.05), torch.randn(128, 512)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,),
                                 options=passes.SparsifyOptions(measure=True))
    assert fast.sparsepass_report["wide"].kernel == "bsr 32x1 rows +relu"
    assert fast.sparsepass_report["narrow"].kernel == "bsr 32x1 rows"
    assert all("measured" in layer.reason for layer in fast.sparsepass_report)
    assert_equivalent(model, fast, [x])


def test_convs_are_measured_with_what_they_fuse():
    model = PointwiseThenPattern().eval()
    x = torch.randn(1, 32, 28, 28)
    fast = passes.sparsify_graph(fx.symbolic_trace(model), example_inputs=(x,),
                                 options=passes.SparsifyOptions(cost=OPTIMISTIC, measure=True))
    convs = [layer for layer in fast.sparsepass_report if layer.op == "conv2d" and layer.structure != "dense"]
    assert convs and all("measured" in layer.reason for layer in convs)
    assert_equivalent(model, fast, [x])


def test_without_shapes_or_for_another_cpu_nothing_is_measured():
    model = pruned((32, 1), 0.05)
    unknown = passes.sparsify_graph(fx.symbolic_trace(model), options=passes.SparsifyOptions(measure=True))
    assert all("not measured: input shape unknown" in layer.reason for layer in unknown.sparsepass_report)
    other = "znver4" if canonical_target()["mcpu"] != "znver4" else "skylake-avx512"
    target = {"kind": "llvm", "mcpu": other, "mtriple": "x86_64-linux-gnu"}
    elsewhere = passes.sparsify_graph(fx.symbolic_trace(model), target=target, example_inputs=(torch.randn(8, 512),),
                                      options=passes.SparsifyOptions(measure=True))
    assert all("not measured: the target is not this machine's CPU" in layer.reason
               for layer in elsewhere.sparsepass_report)

"""SparseOptimizer and projections: the prox is the prox, densities are exact, masks hold."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsepass import prune
from sparsepass.prune.structures import group_norms

STRUCTURES = [prune.Blocks(4, 1), prune.Blocks(2, 3), prune.Unstructured(), prune.Filters()]


def objective(x, v, structure, lam, a):
    return 0.5 * (x - v).pow(2).sum() + lam * (a * group_norms(x, structure)).sum()


@settings(max_examples=40)
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), structure=st.sampled_from(STRUCTURES),
       lam=st.floats(0.0, 3.0), seed=st.integers(0, 10_000))
def test_group_soft_threshold_minimises_its_objective(rows, cols, structure, lam, seed):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    a = torch.rand(group_norms(v, structure).shape, generator=generator, dtype=torch.float64) + 0.5
    x = prune.group_soft_threshold(v, structure, lam, a)
    best = objective(x, v, structure, lam, a)
    candidates = [v, torch.zeros_like(v)] + [x + 0.01 * torch.randn(v.shape, generator=generator,
                                                                      dtype=torch.float64) for _ in range(20)]
    for y in candidates:  # no nearby point (nor v, nor 0) does better: x is the minimiser
        assert best <= objective(y, v, structure, lam, a) + 1e-12


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("density", [0.0, 0.1, 0.37, 1.0])
def test_projection_keeps_exactly_the_asked_number_of_groups(structure, density):
    weight = torch.randn(30, 20)
    mask = prune.project(weight, structure, density)
    groups = group_norms(weight, structure).numel()
    kept = int((group_norms(weight * mask, structure) > 0).sum())
    assert kept == round(density * groups)


def test_n_m_projection():
    weight = torch.randn(6, 16)
    mask = prune.project(weight, prune.NM(2, 4))
    assert (mask.reshape(6, 4, 4).sum(-1) == 2).all()
    with pytest.raises(ValueError, match="density"):
        prune.project(weight, prune.NM(2, 4), 0.3)


def teacher_and_student(seed=0):
    torch.manual_seed(seed)
    teacher = nn.Linear(128, 256)
    prune.apply_projection(teacher.weight, prune.Blocks(32, 1), 0.1)
    return teacher, nn.Linear(128, 256)


@torch.enable_grad()  # conftest runs tests under no_grad
def train(student, teacher, optimizer, steps):
    for _ in range(steps):
        x = torch.randn(128, 128)
        loss = ((student(x) - teacher(x).detach()) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def held_out_loss(student, teacher) -> float:
    x = torch.randn(2048, 128)
    with torch.no_grad():
        return float(((student(x) - teacher(x)) ** 2).mean() / teacher(x).var())


def test_student_recovers_the_teachers_blocks_at_the_target_density():
    teacher, student = teacher_and_student()
    opt = prune.SparseOptimizer(torch.optim.Adam(student.parameters(), lr=1e-2), student,
                                structure=prune.Blocks(32, 1), density=0.1,
                                schedule=prune.CubicSchedule(steps=300, start=50))
    train(student, teacher, opt, 400)
    masks = opt.finalize()
    truth = prune.block_mask(teacher.weight, (32, 1), 0.1)
    assert float((student.weight != 0).float().mean()) == pytest.approx(0.1, abs=0.005)
    assert float((truth & masks[""]).sum() / truth.sum()) >= 0.9
    torch.manual_seed(1)
    dense = nn.Linear(128, 256)
    train(dense, teacher, torch.optim.Adam(dense.parameters(), lr=1e-2), 400)
    # Both fit the teacher to a tiny fraction of its output variance.
    assert held_out_loss(student, teacher) < 1e-4 and held_out_loss(dense, teacher) < 1e-4


def test_masks_hold_during_fine_tuning_and_state_round_trips():
    teacher, student = teacher_and_student(1)
    opt = prune.SparseOptimizer(torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9), student,
                                structure=prune.Unstructured(), density=0.2,
                                schedule=prune.CubicSchedule(steps=20))
    train(student, teacher, opt, 30)
    masks = opt.finalize()
    train(student, teacher, opt, 20)
    assert torch.equal(student.weight != 0, masks[""])
    state = opt.state_dict()
    other_student = nn.Linear(128, 256)
    other = prune.SparseOptimizer(torch.optim.SGD(other_student.parameters(), lr=0.05, momentum=0.9),
                                  other_student, structure=prune.Unstructured(), density=0.2)
    other.load_state_dict(state)
    assert other.step_count == opt.step_count and torch.equal(other.masks[""], masks[""])
    assert other.state_dict()["base"]["state"].keys() == state["base"]["state"].keys()


def test_schedule_is_cubic_from_dense_to_target():
    schedule = prune.CubicSchedule(steps=100, start=10)
    assert schedule.density(0, 0.1) == 1.0 and schedule.density(110, 0.1) == pytest.approx(0.1)
    assert schedule.density(60, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 ** 3)


def test_auto_structure_asks_the_planner():
    model = nn.Sequential(nn.Linear(768, 3072), nn.Conv2d(8, 8, 3))
    opt = prune.SparseOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, structure="auto",
                                density=0.1)
    assert opt.structures["0"] in (prune.Blocks(32, 1), prune.Blocks(16, 1))
    assert opt.structures["1"] == prune.Blocks(1, 9)  # whole 3x3 kernels: connectivity
    assert "blocks: estimated" in prune.explain_choice((3072, 768), 0.1)


def test_auto_structure_of_a_bfloat16_layer_is_amx_blocks_only_where_the_cpu_has_amx():
    layers = {"up": nn.Linear(768, 3072).to(torch.bfloat16), "up32": nn.Linear(768, 3072)}
    amx = prune.structure_choices(layers, 0.1, {"kind": "llvm", "mcpu": "sapphirerapids",
                                                "mtriple": "x86_64-linux-gnu"})
    zen = prune.structure_choices(layers, 0.1, {"kind": "llvm", "mcpu": "znver4", "mtriple": "x86_64-linux-gnu"})
    assert amx["up"].cols == 32 and amx["up32"].cols == 1
    assert zen["up"].cols == 1 and zen["up32"].cols == 1


def test_auto_structure_of_a_float32_layer_is_amx_blocks_under_bf16_precision():
    """Where float32 matmuls may multiply in bfloat16 (PyTorch's "bf16"), float32 layers run on AMX."""
    layers = {"up32": nn.Linear(768, 3072)}
    sapphire_rapids = {"kind": "llvm", "mcpu": "sapphirerapids", "mtriple": "x86_64-linux-gnu"}
    assert prune.structure_choices(layers, 0.1, sapphire_rapids, float32_precision="bf16")["up32"].cols == 32
    assert prune.structure_choices(layers, 0.1, sapphire_rapids, float32_precision="ieee")["up32"].cols == 1
    assert prune.explain_choice((3072, 768), 0.1, sapphire_rapids, float32_precision="bf16").startswith("32x32")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.enable_grad()
def test_half_precision_training_reaches_the_density_with_finite_weights(dtype):
    """Group norms are taken in float32: in float16 the reweighting 1 / ||W_g|| of a zeroed group
    overflowed to inf, then every weight became NaN (and the layers dense)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).to(dtype)
    optimizer = prune.SparseOptimizer(torch.optim.SGD(model.parameters(), lr=0.01), model,
                                      structure=prune.Blocks(32, 1), density=0.25,
                                      schedule=prune.CubicSchedule(steps=10))
    for _ in range(12):
        loss = model(torch.randn(8, 64, dtype=dtype)).float().pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for layer in (model[0], model[2]):
        assert torch.isfinite(layer.weight).all()
        assert float((layer.weight != 0).float().mean()) == 0.25

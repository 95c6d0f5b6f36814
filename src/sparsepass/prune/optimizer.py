"""SparseOptimizer: prune while training, by wrapping any torch.optim optimizer.

After each step of the base optimizer, every pruned weight W gets the
proximal operator of a (reweighted) group-lasso penalty ``lam * sum_g a_g ||W_g||``:

    W_g <- max(0, 1 - lam * a_g / ||W_g||) * W_g       (group soft-thresholding)

which is the exact minimiser of ``0.5 ||W - V||^2 + lam * sum_g a_g ||W_g||``.
The strength ``lam`` is not a hand-tuned constant: at step t it is set so
that the groups left non-zero are the schedule's density d(t) of all groups
(cubic from dense to the target over ``steps``, Zhu & Gupta 2017), i.e. lam
is the (k+1)-th largest ``||V_g|| / a_g``. With ``reweighted=True``,
``a_g = 1 / (||W_g|| + eps)`` (normalised to mean 1): weak groups are pushed
harder, as in reweighted group lasso. ``finalize()`` projects every weight to
exactly the target density and returns the masks; from then on steps keep
pruned weights at zero (mask-preserving fine-tuning). The model's code is
never touched.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import torch
import torch.nn as nn

from sparsepass.prune.layers import prunable_weight
from sparsepass.prune.structures import NM, Structure, expand, group_norms, project


@dataclasses.dataclass(frozen=True)
class CubicSchedule:
    """Density d(t) = final + (1 - final) * (1 - min(t, steps) / steps) ** 3."""

    steps: int
    start: int = 0

    def density(self, step: int, final: float) -> float:
        progress = min(max(step - self.start, 0), self.steps) / max(self.steps, 1)
        return final + (1.0 - final) * (1.0 - progress) ** 3


def group_soft_threshold(v: torch.Tensor, structure: Structure, lam: float,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """The proximal operator of ``lam * sum_g a_g ||x_g||`` at ``v`` (a_g = ``weights`` or 1)."""
    norms = group_norms(v, structure)
    a = torch.ones_like(norms) if weights is None else weights
    # Groups whose score ||x_g|| / a_g is at or under the threshold are zeroed by comparing
    # scores, as lam was chosen: the threshold group's own 1 - lam * a / ||x_g|| can round to a
    # tiny positive scale, which bfloat16 weights keep.
    scale = torch.where(norms / a > lam, 1.0 - lam * a / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)
    return (v * expand(scale, v, structure)).to(v.dtype)


def _threshold_for_density(norms: torch.Tensor, a: torch.Tensor, density: float) -> float:
    """The smallest lam that zeroes all but round(density * groups) groups."""
    score = (norms / a).flatten()
    keep = int(round(density * score.numel()))
    if keep >= score.numel():
        return 0.0
    return float(torch.sort(score, descending=True).values[keep])


class SparseOptimizer(torch.optim.Optimizer):
    """Wraps ``base`` so that training also prunes ``model``'s layers to ``structure`` at ``density``.

    Parameters
    ----------
    base : any torch.optim optimizer over the model's parameters
    model : the model; its Linear, Conv2d and Hugging Face Conv1D layers (or those named in
        ``layers``) are pruned, linear weights as [out, in]
    structure : a prune.structures value (Blocks(32, 1), Unstructured(), Filters(), NM(2, 4)),
        or "auto" to let the planner pick each layer's block shape (see structure_choices)
    density : target fraction of groups kept
    schedule : CubicSchedule; defaults to 1000 steps
    reweighted : reweighted group lasso (a_g = 1 / ||W_g||, normalised)
    """

    def __init__(self, base: torch.optim.Optimizer, model: nn.Module, *, structure, density: float,
                 schedule: CubicSchedule | None = None, reweighted: bool = True,
                 layers: Iterable[str] | None = None, target=None, tokens: int = 128):
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        self.base, self.density = base, density
        self.schedule = schedule or CubicSchedule(steps=1000)
        self.reweighted = reweighted
        wanted = set(layers) if layers is not None else None
        self.layers = {name: m for name, m in model.named_modules()
                       if prunable_weight(m) is not None and (wanted is None or name in wanted)}
        if structure == "auto":
            from sparsepass.prune.co_design import structure_choices

            self.structures = structure_choices(self.layers, density, target, tokens)
        else:
            self.structures = {name: structure for name in self.layers}
        self.step_count = 0
        self.masks: dict[str, torch.Tensor] | None = None
        # torch.optim.Optimizer plumbing: share the base optimizer's param groups and state.
        self.param_groups = base.param_groups
        self.defaults = base.defaults
        self.state = base.state

    def current_density(self) -> float:
        return self.schedule.density(self.step_count, self.density)

    @torch.no_grad()
    def _shrink(self) -> None:
        density = self.current_density()
        for name, layer in self.layers.items():
            structure = self.structures[name]
            if isinstance(structure, NM):
                continue  # N:M is a projection, applied by finalize
            w = prunable_weight(layer)
            norms = group_norms(w, structure)
            a = torch.ones_like(norms)
            if self.reweighted:
                a = 1.0 / (norms + 1e-3 * norms.mean().clamp_min(1e-12))
                a = a / a.mean()
            lam = _threshold_for_density(norms, a, density)
            w.copy_(group_soft_threshold(w, structure, lam, a))

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for name, layer in self.layers.items():
            weight = prunable_weight(layer)
            weight.mul_(self.masks[name].to(weight.dtype))

    def step(self, closure=None):
        loss = self.base.step(closure)
        self.step_count += 1
        if self.masks is None:
            self._shrink()
        else:
            self._apply_masks()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def finalize(self) -> dict[str, torch.Tensor]:
        """Project every layer to exactly the target density; keep it so from now on."""
        self.masks = {}
        for name, layer in self.layers.items():
            structure = self.structures[name]
            density = None if isinstance(structure, NM) else self.density
            self.masks[name] = project(prunable_weight(layer), structure, density)
        self._apply_masks()
        return dict(self.masks)

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(), "step_count": self.step_count,
                "masks": self.masks, "structures": {k: str(v) for k, v in self.structures.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])
        self.step_count = state["step_count"]
        self.masks = state["masks"]

    def report(self) -> str:
        """Per layer: structure and current density of non-zero weights."""
        lines = []
        for name, layer in self.layers.items():
            nonzero = float((layer.weight != 0).float().mean())
            lines.append(f"{name}: {self.structures[name]} density {nonzero:.3f}")
        return "\n".join(lines)


"""Train a small transformer dense and with SparseOptimizer to 90% 32x1 block sparsity, then
sparsify it: accuracy/loss of both and the measured speedup of the sparse one.

The task is synthetic (no downloads): predict, for every token, the class a fixed random
"teacher" transformer assigns to it. SparseOptimizer wraps Adam; the model's code is untouched.

    python examples/train_sparse_transformer.py [--steps 300] [--width 512]
"""

from __future__ import annotations

import argparse

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from sparsepass import passes, prune
from sparsepass.testing import assert_equivalent
from sparsepass.testing.timing import median_ms

VOCAB, CLASSES, SEQ = 64, 8, 32


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)

    def forward(self, x):
        b, t, w = x.shape
        h = self.heads

        def split(y):
            return y.reshape(b, t, h, w // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attention = torch.softmax(q @ k.transpose(-1, -2) * (w // h) ** -0.5, dim=-1) @ v
        x = self.norm1(x + self.o(attention.transpose(1, 2).reshape(b, t, w)))
        return self.norm2(x + self.down(F.gelu(self.up(x))))


class TinyTransformer(nn.Module):
    def __init__(self, width: int = 512, layers: int = 2, heads: int = 8):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.head = nn.Linear(width, CLASSES)

    def forward(self, tokens):
        return self.head(self.blocks(self.embed(tokens)))


def batch(teacher, size=32):
    tokens = torch.randint(0, VOCAB, (size, SEQ))
    with torch.no_grad():
        return tokens, teacher(tokens).argmax(-1)


@torch.enable_grad()
def train(model, teacher, steps, sparse: bool, density: float):
    base = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer = base
    if sparse:
        blocks = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks")}
        optimizer = prune.SparseOptimizer(base, model, structure=prune.Blocks(32, 1), density=density,
                                          layers=blocks,
                                          schedule=prune.CubicSchedule(steps=max(1, steps * 2 // 3),
                                                                       start=steps // 10))
    for _ in range(steps):
        tokens, labels = batch(teacher)
        loss = F.cross_entropy(model(tokens).reshape(-1, CLASSES), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if sparse:
        optimizer.finalize()
        for _ in range(max(1, steps // 10)):  # mask-preserving fine-tuning
            tokens, labels = batch(teacher)
            loss = F.cross_entropy(model(tokens).reshape(-1, CLASSES), labels.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


@torch.no_grad()
def evaluate(model, teacher) -> tuple[float, float]:
    torch.manual_seed(1234)
    tokens, labels = batch(teacher, 256)
    logits = model(tokens)
    loss = F.cross_entropy(logits.reshape(-1, CLASSES), labels.reshape(-1))
    return float(loss), float((logits.argmax(-1) == labels).float().mean())



def main(steps: int = 300, width: int = 512, density: float = 0.1) -> dict:
    torch.manual_seed(0)
    teacher = TinyTransformer(width).eval()
    torch.manual_seed(1)
    dense = train(TinyTransformer(width), teacher, steps, sparse=False, density=density).eval()
    torch.manual_seed(1)
    sparse = train(TinyTransformer(width), teacher, steps, sparse=True, density=density).eval()
    results = {"dense": evaluate(dense, teacher), "sparse": evaluate(sparse, teacher)}
    linears = [m for n, m in sparse.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks")]
    results["density"] = sum(int((m.weight != 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
    hidden = torch.randn(1, 128, width)
    blocks = sparse.blocks
    fast = passes.sparsify_graph(fx.symbolic_trace(blocks), example_inputs=(hidden,))
    with torch.no_grad():
        assert_equivalent(blocks, fast, [hidden])
        torch.set_num_threads(1)
        results["dense_ms"] = median_ms(lambda: blocks(hidden), 20)
        results["sparse_ms"] = median_ms(lambda: fast(hidden), 20)
    print(fast.sparsepass_report, end="\n\n")
    print(f"dense  model: loss {results['dense'][0]:.3f}, accuracy {results['dense'][1]:.3f}")
    print(f"sparse model: loss {results['sparse'][0]:.3f}, accuracy {results['sparse'][1]:.3f} "
          f"(32x1 blocks, density {results['density']:.3f})")
    print(f"transformer blocks, 128 tokens, one thread: dense {results['dense_ms']:.2f} ms, "
          f"sparsified {results['sparse_ms']:.2f} ms ({results['dense_ms'] / results['sparse_ms']:.1f}x)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()
    main(args.steps, args.width)

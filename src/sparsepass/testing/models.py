"""Real architectures for equivalence tests and examples, defined here (no downloads)."""

from __future__ import annotations

import torch
import torch.nn as nn


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """A residual's strided 1x1 conv + BatchNorm where the block changes the shape, else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with BatchNorm, a residual, ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _projection(in_channels, channels, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with a width multiplier, for tests at small sizes."""

    def __init__(self, num_classes: int = 1000, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        layers, channels = [], width
        for stage, out_channels in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if stage == 0 else 2
            layers += [BasicBlock(channels, out_channels, stride), BasicBlock(out_channels, out_channels)]
            channels = out_channels
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 (reduce), 3x3 (stride), 1x1 (expand 4x), BatchNorm after each, a
    residual (projected by a strided 1x1 where the shape changes), ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    """ResNet-50 (He et al. 2016: bottleneck stages of 3, 4, 6, 3 blocks), with a width
    multiplier and optionally fewer blocks per stage, for tests at small sizes."""

    def __init__(self, num_classes: int = 1000, width: int = 64, depths=(3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        layers, channels = [], width
        for stage, (depth, inner) in enumerate(zip(depths, [width, 2 * width, 4 * width, 8 * width])):
            for i in range(depth):
                layers.append(Bottleneck(channels, inner, 2 if stage > 0 and i == 0 else 1))
                channels = inner * Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(c, generator=generator) * 0.1)
    return model


@torch.no_grad()
def remove_half_block_filters(model: ResNet18, seed: int = 0) -> ResNet18:
    """Structured pruning: half the filters of each block's first conv removed (zero filters and a
    zero BatchNorm shift), so half of each block's inner channels are dead."""
    generator = torch.Generator().manual_seed(seed)
    for block in model.layers:
        dead = torch.randperm(block.conv1.out_channels, generator=generator)[: block.conv1.out_channels // 2]
        block.conv1.weight[dead] = 0
        block.bn1.bias[dead] = 0
        block.bn1.running_mean[dead] = 0
    return model


class BlockPrunedMlp(nn.Module):
    """A transformer-FFN-shaped MLP (64 -> 256 -> ReLU -> 64) whose first layer is pruned to 8x1
    blocks at density 0.1 and whose second layer reads none of the hidden units ``unread``: the
    case where removing dead channels may break a sparse layer's blocks."""

    def __init__(self, unread=(3, 5, *range(8, 16))):
        super().__init__()
        from sparsepass.prune import prune_blocks

        torch.manual_seed(0)
        self.a, self.b = nn.Linear(64, 256), nn.Linear(256, 64)
        with torch.no_grad():
            self.a.weight.copy_(prune_blocks(self.a.weight, (8, 1), 0.1))
            self.b.weight[:, list(unread)] = 0

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class PointwiseThenPattern(nn.Module):
    """A 1x1 conv pruned to ``block`` blocks with unequal work per filter, ReLU, a pattern conv
    with unequal work per filter, then a 1x1 conv pruned to ``block`` blocks: where a balanced
    filter order (ReorderFilters) may break a sparse layer's blocks."""

    def __init__(self, block=(4, 1)):
        super().__init__()
        from sparsepass import prune

        torch.manual_seed(0)
        self.a = nn.Conv2d(32, 32, 1, bias=False)
        self.b, self.c = nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.Conv2d(32, 32, 1, bias=False)
        prune.pattern_prune(self.b, taps=4, patterns=8, connectivity=0.5)
        with torch.no_grad():
            self.b.weight[:16] *= torch.rand(16, 32, 1, 1) < 0.3  # skewed: worth reordering
            for conv in (self.a, self.c):
                prune.prune_blocks(conv.weight.data.view(32, 32), block, 0.3)
                conv.weight.data.view(32, 32)[: block[0]] = 0  # a zero block row: skewed work

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))

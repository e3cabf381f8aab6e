"""RAFT's residual conv block, shared by CoTracker3's feature encoder (``tracking.cotracker3``)
and RAFT / AMT in the evaluation backbones (``eval.backbones``).

CoTracker3's ``fnet`` is RAFT's ``BasicEncoder`` block with instance norm, so both load their
public checkpoints through this one class. Parameter names follow RAFT (``conv1``, ``conv2``,
``norm1..3``, ``downsample.0/1``) so ``load_state_dict`` stays strict: ``norm3`` is registered
both on its own and inside ``downsample``, exactly as RAFT does (instance norm has no
parameters, so CoTracker3's keys are unaffected).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def norm_layer(kind: str, ch: int) -> nn.Module:
    """RAFT's norm choice: "group" (ch/8 groups), "batch", "instance", anything else none."""
    if kind == "group":
        return nn.GroupNorm(ch // 8, ch)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch)
    return nn.Sequential()


class ResidualBlock(nn.Module):
    """Two 3x3 convs with ``norm``; a strided 1x1 conv shortcut when downsampling."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1, self.norm2 = norm_layer(norm, cout), norm_layer(norm, cout)
        self.downsample = None
        if stride != 1:
            self.norm3 = norm_layer(norm, cout)
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)

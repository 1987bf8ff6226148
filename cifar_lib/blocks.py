"""The coursework's building blocks: the intermediate block (L convolutions mixed by
input-dependent weights) in a readable and a fused form, and the output block."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}
GATES = ("sigmoid", "softmax")


def _gate(logits: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.sigmoid(logits) if kind == "sigmoid" else torch.softmax(logits, dim=1)


class IntermediateBlock(nn.Module):
    """L independent 3x3 convolutions of the same input, combined as sum_l a_l * conv_l(x),
    where a = gate(Linear(mean of x over height and width)).

    Then activation, dropout and (optionally) pooling. This is the readable per-branch
    form; `FusedIntermediateBlock` computes exactly the same function faster.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 3, *,
                 batch_norm: bool = False, activation: str = "relu", dropout: float = 0.0,
                 gate: str = "sigmoid", pool: int = 1):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        self.in_channels, self.out_channels, self.num_convs = in_channels, out_channels, num_convs
        self.gate = gate
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=1) for _ in range(num_convs))
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity() for _ in range(num_convs))
        self.mixer = nn.Linear(in_channels, num_convs)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()

    def branch_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The L mixing weights per image, shape [batch, L]."""
        return _gate(self.mixer(x.mean(dim=(2, 3))), self.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch_weights(x)
        out = 0
        for l, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            out = out + a[:, l, None, None, None] * norm(conv(x))
        return self.pool(self.dropout(self.activation(out)))


class FusedIntermediateBlock(nn.Module):
    """The same function as `IntermediateBlock`, computed as ONE convolution with
    L*out_channels filters and ONE batch norm over them (batch norm is per channel, so
    this is exactly L separate ones), then a weighted sum over the L groups.

    One big convolution keeps the matrix units busy where three small ones would each
    re-read the input; parameter count and state are the same as the per-branch form
    (see `from_branches`).
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 3, *,
                 batch_norm: bool = False, activation: str = "relu", dropout: float = 0.0,
                 gate: str = "sigmoid", pool: int = 1):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        self.in_channels, self.out_channels, self.num_convs = in_channels, out_channels, num_convs
        self.gate = gate
        self.conv = nn.Conv2d(in_channels, num_convs * out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(num_convs * out_channels) if batch_norm else nn.Identity()
        self.mixer = nn.Linear(in_channels, num_convs)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()

    branch_weights = IntermediateBlock.branch_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch_weights(x)
        y = self.norm(self.conv(x))
        out = self.weighted_sum(y, a)
        return self.pool(self.dropout(self.activation(out)))

    def weighted_sum(self, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """sum_l a[:, l] * (group l of y's channels), as one batched matrix product that
        reads y in the order it lies in memory, so no copy is made and the gradient
        flowing back into batch norm keeps y's layout."""
        b, _, h, w = y.shape
        L, c = self.num_convs, self.out_channels
        a = a.to(y.dtype)
        if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
            pixels = y.permute(0, 2, 3, 1).reshape(b, h * w, L, c)   # a view, no copy
            out = torch.matmul(a[:, None, None, :], pixels)           # [B, HW, 1, C]
            return out.view(b, h, w, c).permute(0, 3, 1, 2)          # channels-last again
        out = torch.bmm(a.unsqueeze(1), y.reshape(b, L, c * h * w))   # [B, 1, C*H*W]
        return out.view(b, c, h, w)

    @classmethod
    def from_branches(cls, block: IntermediateBlock) -> "FusedIntermediateBlock":
        """A fused block holding exactly the per-branch block's parameters and buffers."""
        has_bn = isinstance(block.norms[0], nn.BatchNorm2d)
        fused = cls(block.in_channels, block.out_channels, block.num_convs,
                    batch_norm=has_bn, gate=block.gate)
        fused.activation, fused.dropout, fused.pool = block.activation, block.dropout, block.pool
        with torch.no_grad():
            fused.conv.weight.copy_(torch.cat([c.weight for c in block.convs]))
            fused.conv.bias.copy_(torch.cat([c.bias for c in block.convs]))
            fused.mixer.load_state_dict(block.mixer.state_dict())
            if has_bn:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(fused.norm, name).copy_(torch.cat([getattr(n, name) for n in block.norms]))
                fused.norm.num_batches_tracked.copy_(block.norms[0].num_batches_tracked)
                fused.norm.momentum, fused.norm.eps = block.norms[0].momentum, block.norms[0].eps
        return fused.to(block.mixer.weight.device).train(block.training)


class OutputBlock(nn.Module):
    """Global average pool to a channel vector, then fully connected layers to logits."""

    def __init__(self, in_channels: int, hidden: tuple[int, ...] = (), num_classes: int = 10,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

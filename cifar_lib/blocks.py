"""The coursework's building blocks, in data-flow order: the mixer and the intermediate
block (L convolutions of the same input, mixed by weights computed from it), then the
output block; after them the engine's faster forms of the same maths (a fused block, a
cheap dropout mask) and FastNet's block."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}
# How the L mixing weights come from the mixer's outputs; "equal" ignores them (every
# branch weighs 1/L), the ablation that asks what the learned weights are worth.
GATES = ("sigmoid", "softmax", "equal")


class Mixer(nn.Linear):
    """The block's mixing weights: a = gate(Linear(mean of x over height and width)), one
    row of L weights per image. It is the Linear itself (so its parameters are the
    block's `mixer.weight` and `mixer.bias`); with gate "equal" it is fixed at 1/L."""

    def __init__(self, in_channels: int, branches: int, gate: str = "sigmoid"):
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        super().__init__(in_channels, branches)
        self.gate = gate
        self.requires_grad_(gate != "equal")             # fixed weights: nothing to learn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x.mean(dim=(2, 3)))           # [B, C_in] channel means -> [B, L]
        if self.gate == "equal":
            return torch.full_like(logits, 1.0 / logits.shape[1])
        return torch.sigmoid(logits) if self.gate == "sigmoid" else torch.softmax(logits, dim=1)


class IntermediateBlock(nn.Module):
    """L independent 3x3 convolutions of the same input, combined as sum_l a_l * conv_l(x),
    where a = gate(Linear(mean of x over height and width)).

    Then activation, dropout and (optionally) pooling. This is the readable per-branch
    form; `FusedIntermediateBlock` computes exactly the same function with one wide
    convolution. `cheap_dropout` swaps torch's dropout mask for `FastDropout`'s.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 3, *,
                 batch_norm: bool = False, activation: str = "relu", dropout: float = 0.0,
                 gate: str = "sigmoid", pool: int = 1, cheap_dropout: bool = False):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.in_channels, self.out_channels, self.num_convs = in_channels, out_channels, num_convs
        self.gate = gate
        self._make_branches(batch_norm)          # before the mixer: the order weights are drawn in
        self.mixer = Mixer(in_channels, num_convs, gate)
        self.activation = ACTIVATIONS[activation]()
        if dropout > 0:
            self.dropout = FastDropout(dropout) if cheap_dropout else nn.Dropout(dropout)
        else:
            self.dropout = nn.Identity()
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()

    def _make_branches(self, batch_norm: bool) -> None:
        self.convs = nn.ModuleList(
            nn.Conv2d(self.in_channels, self.out_channels, 3, padding=1)
            for _ in range(self.num_convs))
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(self.out_channels) if batch_norm else nn.Identity()
            for _ in range(self.num_convs))

    def branch_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The L mixing weights per image, shape [batch, L]."""
        return self.mixer(x)

    def mix(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """sum_l a[:, l] * branch_l(x)."""
        out = 0
        for l, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            out = out + a[:, l, None, None, None] * norm(conv(x))     # [B, 1, 1, 1] * [B, C_out, H, W]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:                # x: [B, C_in, H, W]
        mixed = self.mix(x, self.branch_weights(x))                    # [B, C_out, H, W]
        return self.pool(self.dropout(self.activation(mixed)))        # [B, C_out, H/pool, W/pool]


class OutputBlock(nn.Module):
    """Global pooling to a channel vector, then fully connected layers to logits.

    `pool` is "avg" or "max". With `scale`, the last layer has no bias, starts with
    unit-variance weights and its output is multiplied by `scale` (airbench's head: the
    logits start small, and the weights' own learning rate sets how fast they grow).
    """

    def __init__(self, in_channels: int, hidden: tuple[int, ...] = (), num_classes: int = 10,
                 activation: str = "relu", dropout: float = 0.0, pool: str = "avg",
                 scale: float | None = None):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool, self.scale = pool, scale
        layers: list[nn.Module] = []
        width = in_channels
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        last = nn.Linear(width, num_classes, bias=scale is None)
        if scale is not None:
            nn.init.normal_(last.weight)
        layers.append(last)
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                # x: [B, C, H, W]
        pooled = F.adaptive_max_pool2d(x, 1) if self.pool == "max" else F.adaptive_avg_pool2d(x, 1)
        logits = self.classifier(torch.flatten(pooled, 1))             # [B, C] -> [B, 10]
        return logits if self.scale is None else logits * self.scale


# --------------------------------------------------------------------------- the engine
# Faster forms of the blocks above: the same maths, arranged for the hardware. A fused
# block (one wide convolution instead of L), a dropout mask that is cheap on a CPU, and
# FastNet's block (branches of different kernel sizes, one batch norm after the mix).
class FusedIntermediateBlock(IntermediateBlock):
    """The same function as `IntermediateBlock`, computed as ONE convolution with
    L*out_channels filters and ONE batch norm over them (batch norm is per channel, so
    this is exactly L separate ones), then a weighted sum over the L branches.

    One wide convolution is one big matrix product where L small ones would each re-read
    the input. Its output channels are ordered branch-minor (channel c of branch l is
    c*L + l), so in channels-last memory the L values to mix sit side by side and the
    weighted sum is one matrix-vector product per image. Parameter count and state are
    those of the per-branch form (see `from_branches`).
    """

    def _make_branches(self, batch_norm: bool) -> None:
        wide = self.num_convs * self.out_channels
        self.conv = nn.Conv2d(self.in_channels, wide, 3, padding=1)
        self.norm = nn.BatchNorm2d(wide) if batch_norm else nn.Identity()

    def mix(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.weighted_sum(self.norm(self.conv(x)), a)

    def weighted_sum(self, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """out[:, c] = sum_l a[:, l] * y[:, c*L + l]."""
        b, _, h, w = y.shape
        L, c = self.num_convs, self.out_channels
        a = a.to(y.dtype)
        if y.is_contiguous(memory_format=torch.channels_last):
            # Memory is [B, H, W, C, L]: one matrix-vector product per image,
            # [H*W*C, L] @ [L, 1], reading y once, in order, with no copy.
            pixels = y.permute(0, 2, 3, 1).reshape(b, h * w * c, L)
            out = torch.bmm(pixels, a.unsqueeze(2))                     # [B, H*W*C, 1]
            return out.view(b, h, w, c).permute(0, 3, 1, 2)            # channels-last
        return (y.view(b, c, L, h, w) * a[:, None, :, None, None]).sum(2)

    @classmethod
    def from_branches(cls, block: IntermediateBlock) -> "FusedIntermediateBlock":
        """A fused block holding exactly the per-branch block's parameters and buffers."""
        has_bn = isinstance(block.norms[0], nn.BatchNorm2d)
        fused = cls(block.in_channels, block.out_channels, block.num_convs,
                    batch_norm=has_bn, gate=block.gate)
        fused.activation, fused.dropout, fused.pool = block.activation, block.dropout, block.pool

        def interleave(tensors):          # branch-minor: [C, L, ...] flattened to C*L
            return torch.stack(list(tensors), dim=1).flatten(0, 1)

        with torch.no_grad():
            fused.conv.weight.copy_(interleave(c.weight for c in block.convs))
            fused.conv.bias.copy_(interleave(c.bias for c in block.convs))
            fused.mixer.load_state_dict(block.mixer.state_dict())
            if has_bn:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(fused.norm, name).copy_(interleave(getattr(n, name) for n in block.norms))
                fused.norm.num_batches_tracked.copy_(block.norms[0].num_batches_tracked)
                fused.norm.momentum, fused.norm.eps = block.norms[0].momentum, block.norms[0].eps
        return fused.to(block.mixer.weight.device).train(block.training)


class _MaskedScale(torch.autograd.Function):
    """x * scale where keep, else 0; saves only the boolean mask for the backward pass."""

    @staticmethod
    def forward(ctx, x, drop, scale):
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return torch.where(drop, 0.0, x).mul_(scale)   # where keeps x's memory layout

    @staticmethod
    def backward(ctx, grad):
        (drop,) = ctx.saved_tensors
        return torch.where(drop, 0.0, grad).mul_(ctx.scale), None, None


class FastDropout(nn.Module):
    """Dropout whose random mask is cheap on a CPU.

    torch draws one random number per element for its mask, which costs about as much as
    a convolution here. This draws 64 random bits and cuts them into four 16-bit numbers,
    so an element is dropped with probability round(p * 2^16) / 2^16 (p to within 1e-5),
    from the same global generator (seeding and checkpoints work as usual). Other devices
    use torch's own fused dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        # The full signed range: plain random_() on int64 never sets the sign bit.
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)
        drop = bits.view(torch.int16)[:n] < -32768 + round(self.p * 65536)
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            b, c, h, w = x.shape        # lay the mask out in x's memory order
            drop = drop.view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            drop = drop.view(x.shape)
        return _MaskedScale.apply(x, drop, 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """Batch norm with its scale fixed at 1 (only the shift learns), a tiny eps and fast-
    moving running statistics (momentum 0.4): airbench's settings. A learned scale is
    redundant before a convolution whose filters' norm is held fixed (see Muon in recipe.py)."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ChannelAffine(nn.Module):
    """A per-channel gain and shift: what a batch norm leaves when its statistics are taken
    away (FastNet's norm "affine"; FastNet.init_gains sets both from the data). With
    `learn_gain=False` (norm "shift") the gain stays as the data set it and only the shift
    learns, as `fast`'s batch norms keep their scale at 1 and learn their shift."""

    def __init__(self, channels: int, learn_gain: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels), requires_grad=learn_gain)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class FastBlock(nn.Module):
    """An intermediate block shaped for speed: branches of different kernel sizes, then
    max-pool, ONE batch norm and the activation after the mix.

    The family's rule holds (L independent convolutions of the same input, summed with
    per-image weights from a linear layer on the input's channel means: the same `Mixer`
    as `IntermediateBlock`'s), but the L branches need not cost the same: a 3x3 and a 1x1
    branch cost 1 + 1/9 of one 3x3 convolution instead of 2x. Convolutions have no bias
    (the batch norm's shift is it); 3x3 filters start as the identity on the first
    channels (dirac), so a deep stack starts close to passing its input through. The
    mixer starts at zero: every image begins with equal weights (sigmoid(0) = 1/2 each)
    and learns away from them. Pooling before the norm makes the norm's statistics those
    of what the next block sees. Dropout (off in the recipe) comes last, as in the
    coursework's improved block.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes=(3, 1), *,
                 pool: int = 1, gate: str = "sigmoid", activation: str = "gelu",
                 batch_norm: bool = True, dropout: float = 0.0, norm: str = "batch"):
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        # Odd kernels keep the size ("same" padding); even ones (the 2x2 whitening block)
        # use none, so every branch of a block must share one parity.
        if len({k % 2 for k in self.kernel_sizes}) > 1:
            raise ValueError(f"branch kernels {self.kernel_sizes} change the size differently")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_convs, self.gate = len(self.kernel_sizes), gate
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, k, padding=k // 2 if k % 2 else 0, bias=False)
            for k in self.kernel_sizes)
        for conv in self.convs:
            if conv.kernel_size[0] == 3:
                nn.init.dirac_(conv.weight[:min(in_channels, out_channels)])
        self.mixer = Mixer(in_channels, self.num_convs, gate)
        nn.init.zeros_(self.mixer.weight)
        nn.init.zeros_(self.mixer.bias)
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()
        if norm in ("affine", "shift"):   # no statistics: a gain and a learned shift (ChannelAffine)
            self.norm = ChannelAffine(out_channels, learn_gain=norm == "affine")
        else:
            self.norm = FrozenScaleBatchNorm(out_channels) if batch_norm else nn.Identity()
        self.activation = ACTIVATIONS[activation]()
        # the cheap mask: FastNet trains on CPUs too (see FastDropout)
        self.dropout = FastDropout(dropout) if dropout > 0 else nn.Identity()

    def branch_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The L mixing weights per image, shape [batch, L]."""
        return self.mixer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch_weights(x)
        mixed = sum(a[:, l, None, None, None] * conv(x) for l, conv in enumerate(self.convs))
        return self.dropout(self.activation(self.norm(self.pool(mixed))))


# Every block that mixes L branches with per-image weights (what analyses look for).
MIXING_BLOCKS = (IntermediateBlock, FastBlock)

"""Networks built from intermediate blocks and an output block, a name registry, and
parameter / FLOP counts."""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ChannelAffine, FastBlock, FusedIntermediateBlock, IntermediateBlock, OutputBlock


def to_muon_norm_(filters: torch.Tensor) -> torch.Tensor:
    """Muon's (recipe.py) one rule for a filter tensor's scale, in place: norm sqrt(out channels)."""
    return filters.mul_(len(filters) ** 0.5 / filters.norm())


class Residual(nn.Module):
    """x + block(x), with x max-pooled to the block's output size: a skip connection
    around an intermediate block whose input and output widths match."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if y.shape[-1] != x.shape[-1]:
            x = F.max_pool2d(x, x.shape[-1] // y.shape[-1])
        return y + x


class BlockNet(nn.Module):
    """A sequence of intermediate blocks followed by an output block.

    `widths` lists the output channels of each block (the input has 3); `pool` is one
    max-pool size for every block or one per block; with `residual`, blocks whose input
    and output widths match get a skip connection around them. `fused` picks the
    one-wide-convolution block implementation and `cheap_dropout` the cheap dropout mask;
    neither changes the function computed (see `engine_defaults` for when each is faster).
    """

    def __init__(self, widths=(64, 128), num_convs: int = 3, *, batch_norm: bool = False,
                 dropout: float = 0.0, pool: int | list[int] = 1, activation: str = "relu",
                 gate: str = "sigmoid", hidden: tuple[int, ...] = (), num_classes: int = 10,
                 residual: bool = False, fused: bool = False, cheap_dropout: bool = True):
        super().__init__()
        block = FusedIntermediateBlock if fused else IntermediateBlock
        chans = (3, *widths)
        pools = [pool] * len(widths) if isinstance(pool, int) else list(pool)
        if len(pools) != len(widths):
            raise ValueError(f"pool lists {len(pools)} sizes for {len(widths)} blocks")
        blocks = []
        for cin, cout, p in zip(chans[:-1], chans[1:], pools):
            b = block(cin, cout, num_convs, batch_norm=batch_norm, activation=activation,
                      dropout=dropout, gate=gate, pool=p, cheap_dropout=cheap_dropout)
            blocks.append(Residual(b) if residual and cin == cout else b)
        self.blocks = nn.Sequential(*blocks)
        self.head = OutputBlock(chans[-1], tuple(hidden), num_classes, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


def BasicNet(**overrides) -> BlockNet:
    """The coursework's basic model: blocks 3->64->128, 3 convs each, ReLU after the sum,
    global average pool and one fully connected layer (228,441 parameters)."""
    return BlockNet(**{"widths": (64, 128), "num_convs": 3, **overrides})


def ImprovedNet(**overrides) -> BlockNet:
    """The coursework's improved model: blocks 3->64->128->256 with per-branch batch norm,
    ReLU and dropout 0.1 after the sum, 2x2 max-pool after each block (1,118,300 parameters)."""
    return BlockNet(**{"widths": (64, 128, 256), "num_convs": 3, "batch_norm": True,
                       "dropout": 0.1, "pool": 2, **overrides})


def DeepNet(**overrides) -> BlockNet:
    """A deeper member of the family for fast, accurate training: five blocks of two
    branches, 64->128->128->256->256, pooled after blocks 1, 3 and 4 so most work happens at
    16x16 and below, batch norm, GELU, skip connections where widths match, no dropout."""
    return BlockNet(**{"widths": (64, 128, 128, 256, 256), "num_convs": 2, "pool": [2, 1, 2, 2, 1],
                       "batch_norm": True, "activation": "gelu", "residual": True, **overrides})


class FastNet(nn.Module):
    """The `fast` recipe's network: airbench94's shape built from intermediate blocks.

    A whitening block (two 2x2 branches: one frozen to the training images' patch-
    whitening filters, one learned), then per width `depth` `FastBlock`s (a 3x3 and a 1x1
    branch each; the first max-pools; with `residual` the others add their input), then
    global max-pool and a scaled linear head.
    Every block is an intermediate block: L >= 2 convolutions of the same input mixed by
    weights from a linear layer on the input's channel means.
    """

    def __init__(self, widths=(64, 256, 256), kernel_sizes=(3, 1), gate: str = "sigmoid",
                 whiten_kernel: int = 2, num_classes: int = 10, *, depth: int = 2,
                 residual: bool = False, batch_norm: bool = True, dropout: float = 0.0,
                 norm: str = "batch", head_scale: float | None = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth is the number of blocks per width, at least 1; got {depth}")
        if norm not in ("batch", "affine", "shift"):
            raise ValueError(f'norm must be "batch", "affine" or "shift", got {norm!r}')
        whiten_width = 2 * 3 * whiten_kernel ** 2          # +- each patch eigenvector
        # norm "affine": no batch norm anywhere, the whitening block's too; in its place a
        # per-channel gain and shift, set from the data at the start (init_from_data), both
        # learned; norm "shift": the gain stays as the data set it, only the shift learns
        affine = dict(norm=norm) if norm != "batch" else {}
        blocks = [FastBlock(3, whiten_width, (whiten_kernel, whiten_kernel), gate=gate, **affine)]
        # `batch_norm` and `dropout` are the coursework's two regularisers, for its
        # questions; the whitening block has neither (its first branch is frozen), so
        # batch_norm=False alone leaves that block's norm in place.
        kw = dict(gate=gate, batch_norm=batch_norm, dropout=dropout, **affine)
        for cin, cout in zip((whiten_width, *widths[:-1]), widths):
            blocks.append(FastBlock(cin, cout, kernel_sizes, pool=2, **kw))
            for _ in range(depth - 1):
                block = FastBlock(cout, cout, kernel_sizes, **kw)
                blocks.append(Residual(block) if residual else block)
        self.blocks = nn.Sequential(*blocks)
        # Frozen from the start, not when the filters are set: a resumed run skips
        # init_from_data, and its optimizer must hold the same parameters as the first.
        self.blocks[0].convs[0].weight.requires_grad_(False)
        # the logits start small: scaled by 1/width (airbench's head) unless told
        self.head = OutputBlock(widths[-1], num_classes=num_classes, pool="max",
                                scale=1 / widths[-1] if head_scale is None else head_scale)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first branch of the first block to whitening filters of `images`
        (normalised, NCHW): each filter is an eigenvector of the covariance of image
        patches divided by the root of its eigenvalue, so every output channel has unit
        variance and the channels are uncorrelated; the negated filters follow, so the
        activation keeps both signs. The branch is frozen (from construction)."""
        conv = self.blocks[0].convs[0]
        k = conv.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)           # N,C,H',W',k,k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, conv.in_channels * k * k)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / (eigenvalues[:, None] + eps).sqrt()).view(-1, conv.in_channels, k, k)
        conv.weight.copy_(torch.cat([filters, -filters]))
        self.init_gains(images[:1000])

    @torch.no_grad()
    def init_gains(self, images: torch.Tensor) -> None:
        """Without batch norm (norm "affine" or "shift"): set each block's gain and shift so
        that, on `images`, every channel leaves the block's norm with mean 0 and variance 1,
        as a batch norm's would at the start; block by block, each seeing the ones before it
        set. Muon holds each layer's filter norm, so without this the signal shrinks block by block."""
        affine = [b for b in self.blocks if isinstance(getattr(b, "norm", None), ChannelAffine)]
        if not affine:
            return              # batch norms set themselves (and a forward pass would move their statistics)
        # Muon rescales each filter tensor to norm sqrt(out) before its first step; the
        # default init's norm differs (about 1.5x a layer), so gains set on it would be wrong
        # after step 0, by a factor compounding over the blocks. Give the filters that norm first.
        for p in self.blocks.parameters():
            if p.ndim == 4 and p.requires_grad:
                to_muon_norm_(p)
        was_training = self.training
        self.eval()             # no dropout; nothing here keeps statistics
        x = images.float()
        for block in self.blocks:
            norm = getattr(block, "norm", None)
            if isinstance(norm, ChannelAffine):
                seen = []
                handle = norm.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
                block(x)
                handle.remove()
                mean, std = seen[0].mean(dim=(0, 2, 3)), seen[0].std(dim=(0, 2, 3))
                norm.weight.copy_(1 / (std + 1e-5))
                norm.bias.copy_(-mean / (std + 1e-5))
            x = block(x)
        self.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


MODELS: dict[str, Callable[..., nn.Module]] = {"basic": BasicNet, "improved": ImprovedNet,
                                                "deep": DeepNet, "fast": FastNet}


def model_arguments(name: str) -> list[str]:
    """The keyword arguments model `name` takes: what a config's `model_args` may set."""
    build = MODELS[name]
    params = inspect.signature(build).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):   # BasicNet & co.: BlockNet's
        params = inspect.signature(BlockNet).parameters
    return [n for n, p in params.items() if p.kind is not p.VAR_KEYWORD]


def build_model(name: str, *, device: torch.device | str | None = None, channels_last: bool = False,
                **args) -> nn.Module:
    """The one way the kit builds a model: model `name` with `args`, on `device`, in
    channels-last memory if asked (the engine's layout for convolutions)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    model = MODELS[name](**args)
    if device is not None:
        model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def engine_defaults(device: torch.device, name: str = "improved") -> dict:
    """Block implementation that trains fastest on `device`: the fused wide convolution on
    CUDA, per-branch convolutions on CPUs (measured: docs/engine.md)."""
    if name == "fast":
        return {}                 # FastNet has one block form
    return {"fused": device.type == "cuda"}


def uncompiled(model: nn.Module) -> nn.Module:
    """The module torch.compile wrapped (the model itself if it was not compiled)."""
    return getattr(model, "_orig_mod", model)


def count_trainable_parameters(model: nn.Module) -> int:
    """What an optimizer steps (FastNet's frozen whitening filters are left out)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, image_size: int = 32) -> int:
    """Forward FLOPs for one image (a multiply-add counts as 2), by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())

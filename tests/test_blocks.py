import pytest
import torch
import torch.nn.functional as F

from cifar_lib.blocks import FusedIntermediateBlock, IntermediateBlock, OutputBlock
from cifar_lib.models import BasicNet, ImprovedNet, build_model, count_flops, count_trainable_parameters


def test_weighted_sum_matches_hand_computation():
    torch.manual_seed(0)
    block = IntermediateBlock(3, 4, num_convs=2).eval()
    x = torch.randn(2, 3, 8, 8)
    means = x.mean(dim=(2, 3))                                       # [2, 3]
    a = torch.sigmoid(means @ block.mixer.weight.T + block.mixer.bias)  # [2, 2]
    expected = torch.zeros(2, 4, 8, 8)
    for b in range(2):
        for l, conv in enumerate(block.convs):
            expected[b] += a[b, l] * F.conv2d(x[b:b + 1], conv.weight, conv.bias, padding=1)[0]
    torch.testing.assert_close(block(x), torch.relu(expected), rtol=0, atol=1e-6)


def test_branch_weights_follow_the_input_channel_means():
    torch.manual_seed(0)
    block = IntermediateBlock(3, 4, num_convs=3)
    x = torch.randn(1, 3, 8, 8)
    shifted = x + torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1)
    a, b = block.branch_weights(x), block.branch_weights(shifted)
    assert a.shape == (1, 3)
    assert not torch.allclose(a, b)
    # Only the means matter: a permutation of pixels keeps the weights.
    perm = x.flatten(2)[..., torch.randperm(64)].view_as(x)
    torch.testing.assert_close(block.branch_weights(perm), a)


def test_softmax_gate_weights_sum_to_one():
    block = IntermediateBlock(3, 4, num_convs=3, gate="softmax")
    a = block.branch_weights(torch.randn(5, 3, 8, 8))
    torch.testing.assert_close(a.sum(1), torch.ones(5))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_block_equals_per_branch_block(channels_last):
    torch.manual_seed(0)
    ref = IntermediateBlock(8, 16, num_convs=3, batch_norm=True, dropout=0.0)
    fused = FusedIntermediateBlock.from_branches(ref)
    x = torch.randn(4, 8, 12, 12)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        fused = fused.to(memory_format=torch.channels_last)
    # train mode: batch statistics, and the running statistics they update
    out_ref, out_fused = ref(x), fused(x)
    assert (out_ref - out_fused).abs().max().item() <= 1e-5
    running = torch.stack([n.running_mean for n in ref.norms], 1).flatten()
    assert (running - fused.norm.running_mean).abs().max().item() <= 1e-6
    # gradients agree too
    out_ref.square().sum().backward()
    out_fused.square().sum().backward()
    grad_ref = torch.stack([c.weight.grad for c in ref.convs], 1).flatten(0, 1)
    assert (grad_ref - fused.conv.weight.grad).abs().max().item() <= 1e-4
    # eval mode: running statistics
    ref.eval(), fused.eval()
    assert (ref(x) - fused(x)).abs().max().item() <= 1e-5


def test_output_block_pools_then_classifies():
    head = OutputBlock(16, hidden=(32,), num_classes=10)
    assert head(torch.randn(3, 16, 5, 5)).shape == (3, 10)
    assert count_trainable_parameters(head) == 16 * 32 + 32 + 32 * 10 + 10


def test_coursework_parameter_counts():
    assert count_trainable_parameters(BasicNet()) == 228_441
    assert count_trainable_parameters(ImprovedNet()) == 1_118_300
    # The fused form holds the same parameters (one wide convolution and one batch norm).
    assert count_trainable_parameters(BasicNet(fused=True)) == 228_441
    assert count_trainable_parameters(ImprovedNet(fused=True)) == 1_118_300


@pytest.mark.parametrize("name", ["basic", "improved"])
def test_models_map_images_to_ten_logits(name):
    model = build_model(name)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_flops(model) > 1e8


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match="basic, deep, fast, improved"):
        build_model("resnet")


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_dropout_drops_p_and_rescales(channels_last):
    from cifar_lib.blocks import FastDropout

    torch.manual_seed(0)
    drop = FastDropout(0.1)
    x = torch.ones(64, 16, 32, 32, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    out = drop(x)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.005
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.9))
    out.sum().backward()                       # gradient goes through the same mask
    assert torch.equal(x.grad == 0, out == 0)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.manual_seed(1)
    a = drop(x)
    torch.manual_seed(1)
    assert torch.equal(a, drop(x))             # reproducible from the global seed
    assert torch.equal(drop.eval()(x), x)      # identity at evaluation


def test_residual_block_adds_the_pooled_input():
    from cifar_lib.models import Residual

    torch.manual_seed(0)
    block = IntermediateBlock(8, 8, num_convs=2, pool=2).eval()
    x = torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(Residual(block)(x), block(x) + F.max_pool2d(x, 2))


def test_deep_net_pools_per_block_and_skips_where_widths_match():
    from cifar_lib.models import BlockNet, Residual

    model = build_model("deep")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    skipped = [isinstance(b, Residual) for b in model.blocks]
    assert skipped == [False, False, True, False, True]      # 128->128 and 256->256
    with pytest.raises(ValueError, match="3 sizes for 2 blocks"):
        BlockNet(widths=(8, 8), pool=[1, 2, 2])

"""The fast recipe's parts: Muon's orthogonalised steps, the whitening block, alternating
flips, the linear schedule, summed loss and training on all 50,000 images (--final)."""
import numpy as np
import pytest
import torch

from cifar_lib.config import ConfigError, load_config
from cifar_lib.data import split_data
from cifar_lib.experiment import run_experiment
from cifar_lib.loaders import TensorLoader
from cifar_lib.models import FastNet, build_model
from cifar_lib.recipe import Muon, orthogonalise
from cifar_lib.recipe import make_optimizer
from conftest import learnable_images, tiny_dataset


def test_orthogonalise_flattens_the_singular_values():
    g = torch.randn(64, 288) @ torch.diag(torch.logspace(-3, 0, 288))   # badly conditioned
    s = torch.linalg.svdvals(orthogonalise(g, steps=5))
    assert s.max() < 1.3 and s.min() > 0.5          # was a 1000x spread
    assert torch.linalg.svdvals(orthogonalise(g.T, steps=5)).max() < 1.3   # tall works too


def test_muon_keeps_filter_norms_and_steps_the_rest_like_sgd():
    torch.manual_seed(0)
    conv, bias = torch.nn.Parameter(torch.randn(8, 4, 3, 3)), torch.nn.Parameter(torch.zeros(8))
    opt = Muon([dict(params=[conv], lr=0.1), dict(params=[bias], lr=0.5, momentum=0.0,
                                                   orthogonal=False)])
    conv.grad, bias.grad = torch.randn_like(conv), torch.ones(8)
    opt.step()
    assert bias.detach().tolist() == [-0.5] * 8                   # plain SGD step
    opt.step()                                                     # normalised before stepping
    update = 0.1 * orthogonalise((conv.grad * 1.6).reshape(8, -1)).norm()
    assert abs(conv.norm() - 8 ** 0.5) <= update + 1e-4


def test_onecycle_with_muon_peaks_every_group_at_its_own_rate():
    """Was: OneCycleLR took max_lr = cfg.lr for every group, so the mixers' 2e-4 became 0.24."""
    from cifar_lib.config import load_config
    from cifar_lib.recipe import make_lr_schedule, make_optimizer

    cfg = load_config("fast", "smoke", schedule="onecycle", warmup_fraction=0.5)
    optimizer = make_optimizer(cfg, FastNet(widths=(8, 16, 16)))
    rates = make_lr_schedule(cfg, optimizer, steps_per_epoch=10)
    assert rates(4) == pytest.approx([cfg.lr, cfg.head_lr, cfg.mixer_lr, cfg.bias_lr])  # the top


def test_whitening_block_decorrelates_patches_and_is_frozen():
    images, _ = learnable_images(400)
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255
    net = FastNet(widths=(8, 16, 16))
    net.init_from_data(x)
    conv = net.blocks[0].convs[0]
    assert not conv.weight.requires_grad and net.blocks[0].convs[1].weight.requires_grad
    out = torch.nn.functional.conv2d(x, conv.weight[:12])          # the + half
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    moments = flat @ flat.T / flat.shape[1]          # what the filters whiten: E[p p^T]
    # uncorrelated channels of unit second moment (the eps in the eigenvalues shrinks the
    # weakest directions a little)
    assert torch.allclose(moments, torch.diag(torch.diag(moments)), atol=1e-3)
    assert (torch.diag(moments)[-3:] - 1).abs().max() < 0.01 and torch.diag(moments).min() > 0.5


def test_fast_net_is_in_the_block_family():
    from cifar_lib.blocks import MIXING_BLOCKS

    net = build_model("fast")
    blocks = list(net.blocks)
    assert all(isinstance(b, MIXING_BLOCKS) and b.num_convs >= 2 for b in blocks)
    assert [b.kernel_sizes for b in blocks[1:]] == [(3, 1)] * 6
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_alternating_flip_mirrors_each_image_on_every_other_epoch():
    images = np.arange(20 * 32 * 32 * 3, dtype=np.int64).reshape(20, 32, 32, 3) % 251
    loader = TensorLoader(images.astype(np.uint8), np.arange(20) % 10, 20, train=True,
                          augment=("altflip",), normalize="half", seed=3)
    plain, seen = loader.normalized(20), []
    for epoch in range(4):
        loader.set_epoch(epoch)
        order = loader.order()
        x, _ = loader.batch(0, order)
        mirrored = [torch.equal(x[i], plain[order[i]].flip(2)) for i in range(20)]
        assert all(m or torch.equal(x[i], plain[order[i]]) for i, m in enumerate(mirrored))
        seen.append(torch.tensor(mirrored)[order.argsort()])      # by image, not position
    assert 0 < seen[0].sum() < 20                               # a random half on epoch 0
    assert torch.equal(seen[0], ~seen[1]) and torch.equal(seen[0], seen[2])


def test_linear_schedule_ends_at_zero():
    from cifar_lib.recipe import make_lr_schedule

    cfg = load_config("fast", "smoke", epochs=2)
    model = build_model("fast", widths=(8, 8, 8))
    opt = make_optimizer(cfg, model)
    rates = make_lr_schedule(cfg, opt, steps_per_epoch=5)
    assert rates(1)[0] == pytest.approx(cfg.lr * 0.9) and set(rates(10)) == {0}


@pytest.mark.slow
def test_final_trains_on_train_and_validation_images_and_never_validates(tmp_path):
    data = tiny_dataset()
    cfg = load_config("fast", "smoke", val_size=100, eval_subset=0, epochs=1, batch_size=100,
                      model_args={"widths": [8, 8, 8]}, final=True)
    assert len(split_data(data, cfg.val_size, final=cfg.final, train_subset=cfg.train_subset).train[1]) == 500
    record, _ = run_experiment(cfg, profile="smoke", data=data, results_dir=tmp_path,
                               checkpoint_dir=tmp_path, progress=False)
    assert record["data"]["train_images"] == 500 and record["data"]["val_images"] == 0
    assert "val_acc" not in record["final"] and "test_acc_tta" in record["final"]
    assert record["history"][0]["val_acc"] is None
    with pytest.raises(ConfigError, match="plateau"):
        load_config("seed_improved", "smoke", final=True)


def test_every_ablation_variant_builds_what_it_names_and_takes_a_step():
    from cifar_lib.blocks import FastBlock
    from cifar_lib.models import Residual, count_flops
    from cifar_lib.study.sweeps import BLOCK_ABLATION, FAST_ABLATION

    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    flops = {}
    for sweep in (FAST_ABLATION, BLOCK_ABLATION):
        assert sweep.config(next(iter(sweep.variants)), "cpu").epochs == 4    # the sweep's budget
        assert sweep.config(next(iter(sweep.variants)), "full").epochs == 8
        for variant, change in sweep.variants.items():
            cfg = sweep.config(variant, "smoke")
            net = build_model(cfg.model, **cfg.model_args)
            blocks = [b.block if isinstance(b, Residual) else b for b in net.blocks[1:]]
            assert all(isinstance(b, FastBlock) for b in blocks)
            if "kernel_sizes" in change.get("model_args", {}):
                assert {b.kernel_sizes for b in blocks} == {tuple(change["model_args"]["kernel_sizes"])}
            make_optimizer(cfg, net)                     # its optimizer groups cover the model
            torch.nn.functional.cross_entropy(net(x), y).backward()
            assert all(p.grad is not None and torch.isfinite(p.grad).all()
                       for p in net.parameters() if p.requires_grad), (sweep.name, variant)
            flops[variant] = count_flops(net)
    # The block ablation's "equal compute" widths keep the cost of L = 1 within 2%.
    for L in (2, 3, 4):
        assert abs(flops[f"L={L}, equal compute"] / flops["L=1"] - 1) < 0.02, L
    assert sum(isinstance(b, Residual) for b in build_model(
        "fast", kernel_sizes=(3, 3), residual=True, depth=3).blocks) == 6


def test_fastnet_without_batch_norm_has_gains_set_from_the_data():
    """norm "affine": no batch norm anywhere (the whitening block's included); each block's
    gain and shift make its channels leave with mean 0 and variance 1 on the init images."""
    torch.manual_seed(0)
    net = FastNet(widths=(8, 16, 16), norm="affine", head_scale=1 / 9)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.head.scale == pytest.approx(1 / 9)
    images = torch.as_tensor(learnable_images(200)[0]).permute(0, 3, 1, 2).float() / 255
    net.init_from_data(images)
    outputs = []
    hooks = [b.norm.register_forward_hook(lambda m, i, o: outputs.append(o)) for b in net.blocks]
    net.eval()(images)
    for h in hooks:
        h.remove()
    assert len(outputs) == 7
    for out in outputs:
        assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-3
        assert (out.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    # `fast` itself is untouched: its norms are batch norms
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in FastNet(widths=(8, 16, 16)).modules()) == 7


def test_norm_shift_keeps_the_gains_the_data_set_and_trains_only_the_shifts():
    """norm "shift": the gains are set from the data like "affine"'s but never trained, as
    `fast`'s batch norms keep their scale; Muon's groups see only the shifts."""
    from cifar_lib.blocks import ChannelAffine
    from cifar_lib.config import load_config
    from cifar_lib.recipe import make_optimizer

    torch.manual_seed(0)
    net = FastNet(widths=(8, 16, 16), norm="shift")
    images = torch.as_tensor(learnable_images(200)[0]).permute(0, 3, 1, 2).float() / 255
    net.init_from_data(images)
    norms = [m for m in net.modules() if isinstance(m, ChannelAffine)]
    assert len(norms) == 7 and all(not n.weight.requires_grad and n.bias.requires_grad for n in norms)
    gains = [n.weight.clone() for n in norms]
    assert any((g - 1).abs().max() > 0.1 for g in gains)          # set from the data, not left at 1
    optimizer = make_optimizer(load_config("fast", "smoke"), net)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(n.weight) in trained for n in norms) and all(id(n.bias) in trained for n in norms)
    net.train()
    torch.nn.functional.cross_entropy(net(images), torch.zeros(200, dtype=torch.long)).backward()
    optimizer.step()
    assert all(torch.equal(n.weight, g) for n, g in zip(norms, gains))
    with pytest.raises(ValueError, match='"batch", "affine" or "shift"'):
        FastNet(norm="layer")


def test_without_batch_norm_the_gains_are_set_on_the_filters_muon_will_train():
    """Muon rescales each filter tensor to norm sqrt(out) before its first step. Without batch
    norm the gains are set from the data, so they must be set on filters already at that norm,
    or step 0 rescales the signal under them; `fast` (batch norm) keeps its filters as built."""
    images = torch.as_tensor(learnable_images(200)[0]).permute(0, 3, 1, 2).float() / 255
    for norm in ("shift", "affine"):
        torch.manual_seed(0)
        net = FastNet(widths=(8, 16, 16), norm=norm)
        net.init_from_data(images)
        filters = [p for p in net.blocks.parameters() if p.ndim == 4 and p.requires_grad]
        assert len(filters) == 13             # the whitening block's learned branch + 2 per block
        for p in filters:
            assert p.norm().item() == pytest.approx(len(p) ** 0.5, rel=1e-5)
    torch.manual_seed(0)
    built = FastNet(widths=(8, 16, 16))
    torch.manual_seed(0)
    net = FastNet(widths=(8, 16, 16))
    net.init_from_data(images)
    for (name, p), q in zip(net.named_parameters(), built.parameters()):
        if name != "blocks.0.convs.0.weight":          # the whitening filters, set from the data
            assert torch.equal(p, q), name


def test_setting_the_whitening_filters_leaves_the_batch_norm_statistics_alone():
    """`fast` must train exactly as before gains existed: init_from_data may not run the
    blocks (a forward pass in training mode moves every batch norm's running statistics)."""
    net = FastNet(widths=(8, 16, 16))
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    net.init_from_data(torch.as_tensor(learnable_images(200)[0]).permute(0, 3, 1, 2).float() / 255)
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())

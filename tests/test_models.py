"""ResNet-18 encoder with per-branch BN, projection head and classifier (`ascl.models`)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ascl.models import (
    BranchBatchNorm2d,
    Classifier,
    PretrainNet,
    ProjectionHead,
    ResNet18Encoder,
    branch_index,
)

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
BLOCK_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1)
SHORTCUT_BLOCKS = (2, 4, 6)


def images(b=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g)


def randomise_bn(model, seed=0):
    """Give every BN set distinct affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model


def branch_modules(model):
    return [m for m in model.modules() if isinstance(m, BranchBatchNorm2d | ProjectionHead)]


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed_sets(module, before, prefix):
    """Indices of the BN sets of `module` whose buffers differ from `before`."""
    out = set()
    for k, norm in enumerate(module.norms):
        for name, buf in norm.named_buffers():
            if not torch.equal(buf, before[f"{prefix}norms.{k}.{name}"]):
                out.add(k)
    return out


def named_branch_modules(model):
    return [
        (name + "." if name else "", m)
        for name, m in model.named_modules()
        if isinstance(m, BranchBatchNorm2d | ProjectionHead)
    ]


def expected_conv_shapes(w):
    shapes = [(w, 3, 3, 3)]
    c_in = w
    for stage, c in enumerate((w, 2 * w, 4 * w, 8 * w)):
        for block in range(2):
            shapes += [(c, c_in, 3, 3), (c, c, 3, 3)]
            if stage > 0 and block == 0:
                shapes.append((c, c_in, 1, 1))
            c_in = c
    return shapes


def expected_bn_channels(w):
    channels = [w]
    for stage, c in enumerate((w, 2 * w, 4 * w, 8 * w)):
        for block in range(2):
            channels += [c, c]
            if stage > 0 and block == 0:
                channels.append(c)
    return channels


def manual_encoder(enc, x, branch, training=False):
    """Functional CIFAR ResNet-18 through the encoder's weights, normalising x by hand."""
    idx = branch_index(branch, enc.bn)

    def bn(mod, t):
        n = mod.norms[idx]
        rm, rv = n.running_mean.clone(), n.running_var.clone()
        return F.batch_norm(t, rm, rv, n.weight, n.bias, training=training, eps=1e-5)

    out = (x - MEAN) / STD
    out = F.relu(bn(enc.stem_bn, F.conv2d(out, enc.stem.weight, stride=1, padding=1)))
    for i, (blk, stride) in enumerate(zip(enc.blocks, BLOCK_STRIDES, strict=True)):
        h = F.relu(bn(blk.bn1, F.conv2d(out, blk.conv1.weight, stride=stride, padding=1)))
        h = bn(blk.bn2, F.conv2d(h, blk.conv2.weight, stride=1, padding=1))
        if i in SHORTCUT_BLOCKS:
            short = bn(blk.shortcut_bn, F.conv2d(out, blk.shortcut_conv.weight, stride=stride))
        else:
            short = out
        out = F.relu(h + short)
    return out.mean(dim=(2, 3))


@pytest.mark.parametrize("bn", ["separated", "same"])
@pytest.mark.parametrize("width", [4, 8])
def test_encoder_output_shape(width, bn):
    """Encoder maps (B, 3, 32, 32) to (B, 8·width) on both branches; out_dim says so."""
    torch.manual_seed(0)
    enc = ResNet18Encoder(width, bn)
    assert enc.out_dim == 8 * width
    x = images(3)
    for branch in ("clean", "adv"):
        assert enc(x, branch).shape == (3, 8 * width)


def test_final_feature_map_is_4x4_for_32x32():
    """3x3 stride-1 stem and no max-pool: three stride-2 stages take 32x32 to 4x4."""
    torch.manual_seed(0)
    enc = ResNet18Encoder(4)
    seen = {}
    enc.blocks[-1].register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    enc(images(2), "clean")
    assert seen["shape"] == (2, 32, 4, 4)


@pytest.mark.parametrize("bn,sets", [("same", 1), ("separated", 2)])
def test_resnet18_width64_structure_and_parameter_count(bn, sets):
    """width=64 is the standard CIFAR ResNet-18: same conv shapes, BN sizes and parameter count."""
    torch.manual_seed(0)
    enc = ResNet18Encoder(64, bn)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert sorted(tuple(c.weight.shape) for c in convs) == sorted(expected_conv_shapes(64))
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(b.num_features for b in bns) == sorted(expected_bn_channels(64) * sets)
    assert all(b.affine for b in bns)
    branch_bns = [m for m in enc.modules() if isinstance(m, BranchBatchNorm2d)]
    assert len(branch_bns) == 20
    assert all(len(m.norms) == sets for m in branch_bns)
    conv_params = sum(a * b * c * d for a, b, c, d in expected_conv_shapes(64))
    bn_params = 2 * sum(expected_bn_channels(64))
    n_params = sum(p.numel() for p in enc.parameters())
    assert n_params == conv_params + sets * bn_params
    assert n_params == 11_173_962 - (512 * 10 + 10) + (sets - 1) * 9600


@pytest.mark.parametrize("branch", ["clean", "adv"])
def test_branch_isolation_separated(branch):
    """A train-mode forward on one branch changes only that branch's BN buffers."""
    torch.manual_seed(0)
    net = PretrainNet(3, width=4, proj_hidden=8, proj_dim=4, bn="separated").train()
    other = "adv" if branch == "clean" else "clean"
    x = images(4)

    def sets_changed_by(b):
        model = copy.deepcopy(net)
        before = snapshot(model)
        model.project(x, b)
        return [changed_sets(m, before, p) for p, m in named_branch_modules(model)]

    mine, theirs = sets_changed_by(branch), sets_changed_by(other)
    assert len(mine) == 21
    for a, b in zip(mine, theirs, strict=True):
        assert len(a) == 1 and len(b) == 1 and a != b

    model = copy.deepcopy(net)
    before = snapshot(model)
    model.project(x, branch)
    for prefix, m in named_branch_modules(model):
        (k,) = changed_sets(m, before, prefix)
        assert model.state_dict()[f"{prefix}norms.{k}.num_batches_tracked"].item() == 1
        for j, norm in enumerate(m.norms):
            if j != k:
                for name, buf in norm.named_buffers():
                    assert torch.equal(buf, before[f"{prefix}norms.{j}.{name}"])


def test_branch_isolation_same_bn_shares_buffers():
    """With bn="same" both branch names update the one BN set."""
    torch.manual_seed(0)
    net = PretrainNet(3, width=4, proj_hidden=8, proj_dim=4, bn="same").train()
    x = images(4)
    net.project(x, "clean")
    after_clean = snapshot(net)
    net.project(x, "adv")
    for prefix, m in named_branch_modules(net):
        assert len(m.norms) == 1
        key = f"{prefix}norms.0.num_batches_tracked"
        assert after_clean[key].item() == 1
        assert net.state_dict()[key].item() == 2


def test_eval_forward_changes_no_buffer():
    """In eval mode a forward on either branch leaves every buffer bit-identical."""
    torch.manual_seed(0)
    net = PretrainNet(3, width=4, proj_hidden=8, proj_dim=4).eval()
    before = snapshot(net)
    net.project(images(3), "clean")
    net(images(3), "adv")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_separated_affine_parameters_are_distinct():
    """Under "separated" the branches own different affine tensors; gradients stay per branch."""
    torch.manual_seed(0)
    net = randomise_bn(PretrainNet(3, width=4, proj_hidden=8, proj_dim=4).train())
    for m in branch_modules(net):
        a, b = m.norms
        assert a.weight is not b.weight and a.bias is not b.bias
        assert a.weight.data_ptr() != b.weight.data_ptr()
        assert a.bias.data_ptr() != b.bias.data_ptr()
    x = images(4)
    before = snapshot(net)
    net.project(x, "adv").sum().backward()
    for prefix, m in named_branch_modules(net):
        (k,) = changed_sets(m, before, prefix)
        for j, norm in enumerate(m.norms):
            if j == k:
                assert norm.weight.grad is not None and norm.bias.grad is not None
            else:
                assert norm.weight.grad is None and norm.bias.grad is None


@pytest.mark.parametrize("bn", ["separated", "same"])
def test_branch_outputs_differ_only_when_separated(bn):
    """Eval-mode features differ between branches iff the BN sets are separate."""
    torch.manual_seed(0)
    enc = randomise_bn(ResNet18Encoder(4, bn)).eval()
    x = images(3)
    with torch.no_grad():
        same = torch.equal(enc(x, "clean"), enc(x, "adv"))
    assert same == (bn == "same")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("bn", ["separated", "same"])
@pytest.mark.parametrize("branch", ["clean", "adv"])
def test_encoder_matches_functional_reference(branch, bn, training):
    """encoder(x, branch) equals a hand-written normalise-conv-BN-residual ResNet-18 pass."""
    torch.manual_seed(1)
    enc = randomise_bn(ResNet18Encoder(4, bn), seed=2).train(training)
    x = images(3, seed=3)
    with torch.no_grad():
        expected = manual_encoder(enc, x, branch, training=training)
        got = enc(x, branch)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_normalisation_is_first_layer():
    """The stem convolution receives (x - CIFAR mean) / CIFAR std."""
    torch.manual_seed(0)
    enc = ResNet18Encoder(4)
    seen = {}
    enc.stem.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].detach().clone()))
    x = images(2)
    enc(x, "adv")
    torch.testing.assert_close(seen["inp"], (x - MEAN) / STD, rtol=0, atol=1e-6)
    enc(MEAN.expand(2, 3, 16, 16).clone(), "clean")
    torch.testing.assert_close(seen["inp"], torch.zeros(2, 3, 16, 16), rtol=0, atol=1e-6)


def test_classifier_head_zero_initialised():
    """A fresh Classifier outputs all-zero logits."""
    torch.manual_seed(0)
    clf = Classifier(randomise_bn(ResNet18Encoder(4)), num_classes=7)
    logits = clf(images(3))
    assert logits.shape == (3, 7)
    assert torch.equal(logits, torch.zeros(3, 7))


@pytest.mark.parametrize("branch", ["clean", "adv"])
def test_classifier_uses_its_branch(branch):
    """Classifier(x) equals head(encoder(x, its branch)) and differs from the other branch."""
    torch.manual_seed(0)
    enc = randomise_bn(ResNet18Encoder(4, "separated")).eval()
    clf = Classifier(enc, num_classes=5, branch=branch).eval()
    with torch.no_grad():
        clf.head.weight.copy_(torch.randn(5, 32))
        clf.head.bias.copy_(torch.randn(5))
    other = "adv" if branch == "clean" else "clean"
    x = images(3)
    with torch.no_grad():
        got = clf(x)
        mine = enc(x, branch) @ clf.head.weight.T + clf.head.bias
        theirs = enc(x, other) @ clf.head.weight.T + clf.head.bias
        torch.testing.assert_close(got, mine)
        assert not torch.allclose(got, theirs)
        torch.testing.assert_close(clf.features(x), enc(x, branch))


def test_classifier_default_branch_is_adv():
    """Without a branch argument the Classifier evaluates the "adv" BN branch."""
    torch.manual_seed(0)
    clf = Classifier(ResNet18Encoder(4), 3)
    assert clf.branch == "adv"


@pytest.mark.parametrize("width", [4, 8])
def test_pretrainnet_shapes_and_unit_projection(width):
    """PretrainNet: features (B, 8w), logits (B, C), projections (B, proj_dim) of unit norm."""
    torch.manual_seed(0)
    net = PretrainNet(4, width=width, proj_hidden=16, proj_dim=6)
    x = images(5)
    for branch in ("clean", "adv"):
        assert net.features(x, branch).shape == (5, 8 * width)
        assert net(x, branch).shape == (5, 4)
        z = net.project(x, branch)
        assert z.shape == (5, 6)
        torch.testing.assert_close(z.norm(dim=1), torch.ones(5), rtol=0, atol=1e-5)
    net.eval()
    z = net.project(x, "clean")
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5), rtol=0, atol=1e-5)


def test_invalid_names_raise_value_error():
    """Unknown BN strategies and branch names are rejected with ValueError."""
    torch.manual_seed(0)
    with pytest.raises(ValueError):
        ResNet18Encoder(4, bn="shared")
    with pytest.raises(ValueError):
        PretrainNet(3, width=4, proj_hidden=8, proj_dim=4, bn="both")
    with pytest.raises(ValueError):
        BranchBatchNorm2d(4, "split")
    enc = ResNet18Encoder(4)
    x = images(2)
    with pytest.raises(ValueError):
        enc(x, "natural")
    with pytest.raises(ValueError):
        Classifier(enc, 3, branch="robust")
    with pytest.raises(ValueError):
        Classifier(ResNet18Encoder(4, "same"), 3, branch="Adv")
    net = PretrainNet(3, width=4, proj_hidden=8, proj_dim=4)
    with pytest.raises(ValueError):
        net.project(x, "aug")
    with pytest.raises(ValueError):
        net(x, "")


def test_projection_head_rejects_unknown_bn():
    """ProjectionHead and branch_index validate the bn strategy like BranchBatchNorm2d does."""
    with pytest.raises(ValueError):
        ProjectionHead(8, 8, 4, bn="bogus")
    with pytest.raises(ValueError):
        branch_index("adv", "bogus")

"""Baselines as pre-training methods: losses against loop references, the loss each attack
maximises, ACL's BN routing, pseudo labels, the E2E head, every method's step, config checks."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import yaml

from ascl import attacks, checkpoint, config
from ascl.artifacts import (
    build_pretrain_net,
    load_classifier,
    load_pretrained,
    load_pseudo_labels,
    training_index,
)
from ascl.attacks import pgd as real_pgd
from ascl.augment import high_frequency_view, rotations
from ascl.cli import main
from ascl.finetune import copy_pretrained_head, run_finetune
from ascl.losses import multiview_nt_xent, nt_xent_loss, pseudo_label_ce, rocl_loss
from ascl.models import Classifier, PretrainNet
from ascl.objectives import (
    ACLObjective,
    AdvCLObjective,
    AttackConfig,
    RoCLObjective,
    RotationObjective,
    SupervisedObjective,
    acl_terms,
    advcl_terms,
    rocl_terms,
    rotation_terms,
    simclr_terms,
    supcon_terms,
    supervised_terms,
)
from ascl.pretrain import make_step, run_pretrain
from ascl.pseudo_labels import cluster_labels, run_pseudo_labels

from .conftest import ROOT

N = 6
SIZE = 16
TAU = 0.5
ATTACK = AttackConfig(8 / 255, 2 / 255, 3, random_start=False, train_mode=False)
Y = torch.tensor([0, 1, 2, 0, 1, 2])
NEW_METHODS = (
    "standard",
    "at",
    "trades",
    "rotation",
    "scl",
    "simclr",
    "rocl",
    "acl",
    "acl-same-bn",
    "advcl",
)


def tiny_net(seed=0, bn="same", rotation=0, pseudo=()):
    torch.manual_seed(seed)
    return PretrainNet(
        3,
        width=4,
        proj_hidden=8,
        proj_dim=4,
        bn=bn,
        rotation_classes=rotation,
        pseudo_classes=pseudo,
    )


def images(seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, SIZE, SIZE, generator=g) for _ in range(3)]


def near(x, seed=1, scale=0.03):
    g = torch.Generator().manual_seed(seed)
    return (x + scale * torch.randn(x.shape, generator=g)).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# References with explicit loops


def rows(t):
    return t.detach().double().tolist()


def dot(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True))


def ref_contrastive(entries, ids, tau, reduce="mean"):
    """Per anchor i: -Σ_{p: ids[p]=ids[i], p≠i} log(exp(s_ip)/Σ_{a≠i} exp(s_ia)), divided by the
    number of positives (reduce="mean") or not ("sum"); mean over anchors with a positive."""
    per_anchor = []
    for i in range(len(entries)):
        others = [a for a in range(len(entries)) if a != i]
        pos = [p for p in others if ids[p] == ids[i]]
        if not pos:
            continue
        log_denom = math.log(sum(math.exp(dot(entries[i], entries[a]) / tau) for a in others))
        total = -sum(dot(entries[i], entries[p]) / tau - log_denom for p in pos)
        per_anchor.append(total / len(pos) if reduce == "mean" else total)
    return sum(per_anchor) / len(per_anchor)


def ref_multiview(views, tau, reduce="mean"):
    entries = [r for v in views for r in rows(v)]
    ids = [k for _ in views for k in range(views[0].shape[0])]
    return ref_contrastive(entries, ids, tau, reduce)


def ref_ce(logits, labels, reduce="mean"):
    total, count = 0.0, 0
    for row, k in zip(rows(logits), labels.tolist(), strict=True):
        if k == -1:
            continue
        total += math.log(sum(math.exp(v) for v in row)) - row[k]
        count += 1
    return total / count if reduce == "mean" else total


def ref_kl(logits_nat, logits_adv):
    total = 0.0
    for a, b in zip(rows(logits_nat), rows(logits_adv), strict=True):
        za, zb = sum(math.exp(v) for v in a), sum(math.exp(v) for v in b)
        for u, v in zip(a, b, strict=True):
            p, q = math.exp(u) / za, math.exp(v) / zb
            total += p * (math.log(p) - math.log(q))
    return total / len(logits_nat)


def ref_rotate(img, k):
    """img (C, H, H) rotated k·90° counter-clockwise, pixel by pixel (np.rot90 convention)."""
    out = img.clone()
    for _ in range(k):
        src = out.clone()
        h = src.shape[-1]
        for i in range(h):
            for j in range(h):
                out[:, i, j] = src[:, j, h - 1 - i]
    return out


def ref_high_frequency(x, radius):
    """AdvCL's generate_high: mask built pixel by pixel, numpy FFT."""
    b, c, h, w = x.shape
    mask = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            mask[i, j] = 1.0 if math.sqrt((i - h / 2) ** 2 + (j - w / 2) ** 2) < radius else 0.0
    fd = np.fft.fftshift(np.fft.fftn(x.double().numpy(), axes=(-2, -1)), axes=(-2, -1))
    fd = fd * (1.0 - mask)
    return torch.from_numpy(
        np.real(np.fft.ifftn(np.fft.ifftshift(fd, axes=(-2, -1)), axes=(-2, -1)))
    )


# ---------------------------------------------------------------------------------------------
# Losses and views


def test_contrastive_losses_match_loops():
    g = torch.Generator().manual_seed(0)
    zs = [torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1) for _ in range(4)]
    assert multiview_nt_xent(zs, TAU).item() == pytest.approx(ref_multiview(zs, TAU), abs=1e-5)
    assert multiview_nt_xent(zs[:2], TAU).item() == pytest.approx(
        nt_xent_loss(zs[0], zs[1], TAU).item(), abs=1e-6
    )
    # RoCL's NT_xent('Rep'): the six positive blocks summed, divided by 3N
    assert rocl_loss(*zs[:3], TAU).item() == pytest.approx(
        ref_multiview(zs[:3], TAU, reduce="sum"), abs=1e-5
    )


def test_pseudo_label_ce_matches_loops():
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(6, 2, generator=g), torch.randn(6, 5, generator=g)]
    labels = torch.tensor([[0, 4], [1, 0], [1, -1], [0, 2], [1, 3], [0, 1]])
    expected = (ref_ce(logits[0], labels[:, 0]) + ref_ce(logits[1], labels[:, 1])) / 2
    assert pseudo_label_ce(logits, labels).item() == pytest.approx(expected, abs=1e-5)


def test_rotations_and_high_frequency_view():
    x = torch.rand(2, 3, 5, 5)
    rot, labels = rotations(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(4):
        for b in range(2):
            assert torch.equal(rot[2 * k + b], ref_rotate(x[b], k))
    x = torch.rand(3, 3, 8, 8)
    hf = high_frequency_view(x, 3)
    assert torch.allclose(hf.double(), ref_high_frequency(x, 3), atol=1e-5)
    assert hf.mean(dim=(-2, -1)).abs().max() < 1e-5  # DC removed
    assert high_frequency_view(torch.full((1, 3, 8, 8), 0.7), 3).abs().max() < 1e-5


def _only_dc_removed(x):
    return x - x.mean(dim=(-2, -1), keepdim=True)


def test_high_frequency_radius_below_one_removes_only_dc():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(high_frequency_view(x, 0.5), _only_dc_removed(x), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Objectives: terms at δ = 0 and the loss every attack maximises


class PgdSpy:
    """Stands in for `ascl.objectives.pgd`: records each attack's loss and start, returns the
    start unchanged (real=False) or the real PGD result."""

    def __init__(self, real=False):
        self.real = real
        self.calls = []

    def __call__(self, loss_fn, x, **kw):
        out = real_pgd(loss_fn, x, **kw) if self.real else x.detach()
        self.calls.append((loss_fn, x.detach().clone(), out))
        return out


@pytest.fixture
def spy(monkeypatch):
    s = PgdSpy()
    monkeypatch.setattr(attacks, "pgd", s)
    return s


def _value(loss_fn, p):
    with torch.no_grad():
        return loss_fn(p).item()


def run_method(name, net, spy_attack=True):
    """Terms of one baseline objective on a fixed tiny batch."""
    x, v1, v2 = images()
    if name in ("standard", "at", "trades"):
        adv = {"standard": "none", "at": "pgd", "trades": "trades"}[name]
        return supervised_terms(net, x, Y, SupervisedObjective(adversary=adv), ATTACK)
    if name == "rotation":
        return rotation_terms(net, x, Y, RotationObjective(), ATTACK)
    if name == "rocl":
        return rocl_terms(net, v1, v2, RoCLObjective(temperature=TAU), ATTACK)
    if name == "acl":
        return acl_terms(net, v1, v2, ACLObjective(temperature=TAU), ATTACK)
    if name == "advcl":
        obj = AdvCLObjective(hf_radius=4, temperature=TAU)
        return advcl_terms(net, x, v1, v2, PSEUDO, obj, ATTACK)
    raise AssertionError(name)


PSEUDO = torch.tensor([[0, 1], [1, 0], [0, 2], [1, 1], [0, 0], [1, 2]])


def net_for(name, bn="same"):
    rotation = 4 if name == "rotation" else 0
    pseudo = (2, 3) if name == "advcl" else ()
    return tiny_net(bn=bn, rotation=rotation, pseudo=pseudo).eval()


def test_supervised_terms_and_attacks(spy):
    x = images()[0]
    p = near(x)
    net = net_for("standard")
    with torch.no_grad():
        ce = ref_ce(net(x, "clean"), Y)
    assert run_method("standard", net)["ce"].item() == pytest.approx(ce, abs=1e-5)
    assert spy.calls == []
    out = run_method("at", net)
    assert out["at"].item() == pytest.approx(ce, abs=1e-5)
    with torch.no_grad():
        ref = ref_ce(net(p, "adv"), Y)
    assert _value(spy.calls[0][0], p) == pytest.approx(ref, abs=1e-5)
    out = run_method("trades", net)
    assert out["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss"].item() == pytest.approx(ce, abs=1e-5)
    with torch.no_grad():
        ref = ref_kl(net(x, "clean"), net(p, "adv"))
    assert _value(spy.calls[1][0], p) == pytest.approx(ref, abs=1e-5)


def test_rotation_terms_and_attack(spy):
    net = net_for("rotation")
    x = images()[0]
    out = run_method("rotation", net)
    inputs = spy.calls[0][1]
    assert inputs.shape[0] == 5 * N and torch.equal(inputs[:N], x)
    y_rot = torch.arange(4).repeat_interleave(N)

    def ref(batch, reduce):
        with torch.no_grad():
            f = net.features(batch, "adv")
            ce = ref_ce(net.classifier(f[:N]), Y, reduce)
            rot = ref_ce(net.rotation_head(f[N:]), y_rot, reduce)
        return ce, rot

    ce, rot = ref(inputs, "mean")
    assert out["ce"].item() == pytest.approx(ce, abs=1e-5)
    assert out["rotation"].item() == pytest.approx(rot, abs=1e-5)
    assert out["loss"].item() == pytest.approx(ce + 0.5 * rot, abs=1e-5)
    p = near(inputs)
    ce, rot = ref(p, "sum")
    assert _value(spy.calls[0][0], p) == pytest.approx(ce + rot / 8, rel=1e-5)


def test_contrastive_baseline_terms(spy):
    _, v1, v2 = images()
    net = net_for("simclr")
    with torch.no_grad():
        z = net.project(torch.cat([v1, v2]), "clean")
    ref = ref_multiview([z[:N], z[N:]], TAU)
    assert simclr_terms(net, v1, v2, TAU)["cl"].item() == pytest.approx(ref, abs=1e-5)
    ids = Y.tolist() * 2
    ref = ref_contrastive(rows(z), ids, 0.1)
    assert supcon_terms(net, v1, v2, Y, 0.1)["supcon"].item() == pytest.approx(ref, abs=1e-5)
    assert spy.calls == []


@pytest.mark.parametrize("bn", ["same", "separated"])
def test_rocl_terms_and_attack(spy, bn):
    _, v1, v2 = images()
    net = net_for("rocl", bn)
    out = run_method("rocl", net)
    assert torch.equal(spy.calls[0][1], v1)  # the attack starts at t(x)
    with torch.no_grad():
        z1, z2, za = net.project(v1, "clean"), net.project(v2, "clean"), net.project(v1, "adv")
        p = near(v1)
        zp = net.project(p, "adv")
    rocl = ref_multiview([z1, z2, za], TAU, reduce="sum")
    reg = ref_multiview([za, z2], TAU)
    assert out["rocl"].item() == pytest.approx(rocl, abs=1e-5)
    assert out["reg"].item() == pytest.approx(reg, abs=1e-5)
    assert out["loss"].item() == pytest.approx(rocl + reg / 256, abs=1e-5)
    assert _value(spy.calls[0][0], p) == pytest.approx(ref_multiview([zp, z2], TAU), abs=1e-5)


@pytest.mark.parametrize("bn", ["same", "separated"])
def test_acl_terms_and_attack(spy, bn):
    _, v1, v2 = images()
    net = net_for("acl", bn)
    out = run_method("acl", net)
    views = torch.cat([v1, v2])
    assert torch.equal(spy.calls[0][1], views)  # both views attacked together
    with torch.no_grad():
        zc, za = net.project(views, "clean"), net.project(views, "adv")
        p = near(views)
        zp = net.project(p, "adv")
    clean, adv = ref_multiview([zc[:N], zc[N:]], TAU), ref_multiview([za[:N], za[N:]], TAU)
    assert out["clean"].item() == pytest.approx(clean, abs=1e-5)
    assert out["adv"].item() == pytest.approx(adv, abs=1e-5)
    assert out["loss"].item() == pytest.approx((clean + adv) / 2, abs=1e-5)
    ref = ref_multiview([zp[:N], zp[N:]], TAU)
    assert _value(spy.calls[0][0], p) == pytest.approx(ref, abs=1e-5)


def test_advcl_terms_and_attacks(spy):
    x, v1, v2 = images()
    net = net_for("advcl", "separated")
    out = run_method("advcl", net)
    scale = TAU / 0.07
    hf = ref_high_frequency(x, 4).float()
    with torch.no_grad():
        fixed = [net.project(v, "clean") for v in (v1, v2, hf)]
        p = near(x)

        def cl_ref(point):
            return scale * ref_multiview([net.project(point, "adv"), *fixed], TAU)

        def ce_ref(point):
            f = net.features(point, "adv")
            return sum(ref_ce(h(f), PSEUDO[:, k]) for k, h in enumerate(net.pseudo_heads)) / 2

        assert out["cl"].item() == pytest.approx(cl_ref(x), rel=1e-5)
        assert out["ce"].item() == pytest.approx(ce_ref(x), abs=1e-5)
        assert out["loss"].item() == pytest.approx(cl_ref(x) + 0.2 * ce_ref(x), rel=1e-5)
        assert [torch.equal(c[1], x) for c in spy.calls] == [True, True]
        assert _value(spy.calls[0][0], p) == pytest.approx(cl_ref(p), rel=1e-5)
        assert _value(spy.calls[1][0], p) == pytest.approx(ce_ref(p), abs=1e-5)


@pytest.mark.parametrize("name", ["at", "trades", "rotation", "rocl", "acl", "advcl"])
def test_attacks_increase_their_loss(monkeypatch, name):
    """With the real PGD every attack ends with a higher value of the loss it was given."""
    s = PgdSpy(real=True)
    monkeypatch.setattr(attacks, "pgd", s)
    net = net_for(name, "separated")
    run_method(name, net)
    assert s.calls
    for loss_fn, start, out in s.calls:
        assert not torch.equal(out, start)
        assert (out - start).abs().max() <= ATTACK.eps + 1e-6
        assert _value(loss_fn, out) > _value(loss_fn, start)


# ---------------------------------------------------------------------------------------------
# ACL's dual BN


def _bn_sets(net, index):
    return [m.norms[index] for m in net.modules() if hasattr(m, "norms")]


def _stats(norms):
    return [
        (n.running_mean.clone(), n.running_var.clone(), int(n.num_batches_tracked)) for n in norms
    ]


@pytest.mark.parametrize("bn", ["separated", "same"])
def test_acl_bn_routing(monkeypatch, bn):
    """ACL-DS: the clean stream updates only the clean BN statistics and the adversarial stream
    only the adv ones, each exactly as one forward of that stream alone; with bn="same" the one
    set sees both streams."""
    s = PgdSpy(real=True)
    monkeypatch.setattr(attacks, "pgd", s)
    _, v1, v2 = images()
    net = tiny_net(bn=bn).train()
    before = copy.deepcopy(net)
    acl_terms(net, v1, v2, ACLObjective(temperature=TAU), ATTACK)  # attack in eval mode
    x_adv = s.calls[0][2]
    views = torch.cat([v1, v2])
    ref = copy.deepcopy(before)
    with torch.no_grad():
        ref.project(views, "clean")
        ref.project(x_adv, "adv")
    if bn == "separated":
        for idx in (0, 1):
            got, want = _stats(_bn_sets(net, idx)), _stats(_bn_sets(ref, idx))
            assert all(g[2] == 1 for g in got)
            for (gm, gv, _), (wm, wv, _) in zip(got, want, strict=True):
                assert torch.allclose(gm, wm, atol=1e-6) and torch.allclose(gv, wv, atol=1e-6)
        clean_only = copy.deepcopy(before)
        with torch.no_grad():
            clean_only.project(views, "clean")
        for (gm, _, _), (wm, _, _) in zip(
            _stats(_bn_sets(net, 0)), _stats(_bn_sets(clean_only, 0)), strict=True
        ):
            assert torch.allclose(gm, wm, atol=1e-6)
    else:
        got, want = _stats(_bn_sets(net, 0)), _stats(_bn_sets(ref, 0))
        assert all(g[2] == 2 for g in got)
        for (gm, _, _), (wm, _, _) in zip(got, want, strict=True):
            assert torch.allclose(gm, wm, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Every method of params.yaml: model, one step, schema


@pytest.fixture(scope="module")
def params():
    p = config.load_params(ROOT / "params.yaml", ROOT / "config" / "smoke.yaml")
    return config.deep_merge(p, {"model": {"width": 2, "proj_hidden": 8, "proj_dim": 4}})


def test_new_methods_are_in_params_and_validate(params):
    assert set(NEW_METHODS) <= set(params["methods"])
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    config.validate_params(base)
    import jsonschema

    schema = config._validator().schema
    method_schema = {**schema["properties"]["methods"]["additionalProperties"]}
    method_schema["$defs"] = schema["$defs"]
    for name in NEW_METHODS:
        jsonschema.Draft202012Validator(method_schema).validate(base["methods"][name])
    assert config.pseudo_label_source(params, "advcl") == "simclr"
    assert config.pseudo_label_source(params, "acl") is None
    s = config.pseudo_label_settings(params, "advcl")
    assert s["kind"] == "pseudo_labels" and s["from"] == "simclr"
    assert config.settings_json(s)


@pytest.mark.parametrize(
    "name", sorted(yaml.safe_load((ROOT / "params.yaml").read_text())["methods"])
)
def test_make_step_runs_every_method(params, name):
    settings = config.pretrain_settings(params, name)
    settings["train"]["attack"]["steps"] = 1
    net = build_pretrain_net(settings, 3).train()
    base = {k for k in net.state_dict() if not k.startswith(("rotation_head", "pseudo_heads"))}
    assert base == set(tiny_net(bn=settings["model"]["bn"]).state_dict())
    assert (net.rotation_head is not None) == (settings["objective"]["objective"] == "rotation")
    x = torch.rand(6, 3, SIZE, SIZE)
    y = Y
    if settings["objective"].get("pseudo_labels"):
        clusters = settings["objective"]["pseudo_labels"]["clusters"]
        y = torch.stack([torch.arange(6) % k for k in clusters], dim=1)
    out = make_step(settings, net)(x, y, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.values())
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())


def _expect_error(p, key):
    with pytest.raises(config.ParamsError) as err:
        config.validate_params(p)
    assert "\n" not in str(err.value) and key in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("what", "patch", "key"),
    [
        ("switch of another objective", {"at": {"lambda_cl": 0.5}}, "methods.at.lambda_cl"),
        ("bad adversary", {"at": {"adversary": "fgsm"}}, "methods.at.adversary"),
        ("unknown source", {"advcl": {"pseudo_labels": {"from": "moco"}}}, "pseudo_labels.from"),
        ("source needs labels", {"advcl": {"pseudo_labels": {"from": "advcl"}}}, "advcl"),
        ("no clusters", {"advcl": {"pseudo_labels": {"clusters": 1}}}, "clusters"),
        ("acl weights zero", {"acl": {"lambda_clean": 0.0, "lambda_adv": 0.0}}, "methods.acl"),
        ("partial attack key", {"rocl": {"pretrain": {"attack": {"stepz": 3}}}}, "stepz"),
    ],
)
def test_method_config_errors_name_the_key(what, patch, key):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    _expect_error(config.deep_merge(base, {"methods": patch}), key)


def test_advcl_needs_pseudo_labels_spec_and_e2e_head_enum():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = copy.deepcopy(base)
    del p["methods"]["advcl"]["pseudo_labels"]
    _expect_error(p, "methods.advcl")
    p = config.deep_merge(base, {"finetune": {"strategies": {"E2E": {"head": "random"}}}})
    _expect_error(p, "finetune.strategies.E2E.head")


# ---------------------------------------------------------------------------------------------
# Pseudo labels


def test_cluster_labels_deterministic_and_k_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 10
    feats = np.concatenate([c + rng.normal(size=(10, 8)) * 0.1 for c in centres])
    a = cluster_labels(feats, [2, 4], seed=3)
    b = cluster_labels(feats, [2, 4], seed=3)
    assert a.shape == (2, 40) and a.dtype == np.int64 and np.array_equal(a, b)
    assert [len(set(r.tolist())) for r in a] == [2, 4]
    # four well-separated blobs: each blob gets one label
    assert all(len(set(a[1, 10 * i : 10 * i + 10].tolist())) == 1 for i in range(4))
    with pytest.raises(ValueError, match="clusters"):
        cluster_labels(feats[:3], [4])


def _save_encoder(params, method, path, num_classes=3, seed=0):
    settings = config.pretrain_settings(params, method)
    net = build_pretrain_net(settings, num_classes)
    torch.manual_seed(seed)
    checkpoint.save(
        {
            "kind": "pretrain",
            "model": net.state_dict(),
            "num_classes": num_classes,
            "settings": settings,
            "seed": seed,
            "run_id": "",
        },
        path,
    )
    return net


def test_pseudo_label_job_and_alignment(params, toy_data, tmp_path, monkeypatch):
    """The job labels exactly the (capped) training images run_pretrain uses, in its order, with
    one label per image per clustering; run_pretrain hands them to the step aligned with x."""
    p = config.deep_merge(
        params,
        {
            "device": "cpu",
            "data": {"max_train": 40},
            "methods": {"advcl": {"pseudo_labels": {"clusters": [2, 3]}}},
            "pretrain": {"epochs": 1, "batch_size": 16, "attack": {"steps": 1}},
        },
    )
    enc = tmp_path / "simclr.pt"
    _save_encoder(p, "simclr", enc)
    settings = config.pseudo_label_settings(p, "advcl")
    out = tmp_path / "labels.npz"
    run_pseudo_labels(settings, encoder=enc, data=toy_data, out=out, seed=0)
    first = np.load(out)["labels"].copy()
    run_pseudo_labels(settings, encoder=enc, data=toy_data, out=out, seed=0)
    with np.load(out) as f:
        assert np.array_equal(f["labels"], first)
        assert f["labels"].shape == (2, 40)
        assert np.array_equal(f["index"], training_index(48, 40).numpy())
    labels = load_pseudo_labels(out, n_train=48, max_train=40, clusters=(2, 3))
    assert labels.shape == (40, 2) and int(labels[:, 1].max()) <= 2
    with pytest.raises(config.ParamsError, match="training images"):
        load_pseudo_labels(out, n_train=48, max_train=30, clusters=(2, 3))
    with pytest.raises(config.ParamsError, match="clusters"):
        load_pseudo_labels(out, n_train=48, max_train=40, clusters=(2, 4))
    with pytest.raises(config.ParamsError, match="trained by method"):
        run_pseudo_labels({**settings, "from": "rocl"}, encoder=enc, data=toy_data, out=out, seed=0)

    # alignment: labels chosen as the true class of each labelled image reach fit next to it
    from ascl.data import load_dataset, write_npz_atomic

    ds = load_dataset(toy_data)
    idx = training_index(48, 40)
    true = ds.y_train[idx].numpy()
    aligned = tmp_path / "aligned.npz"
    write_npz_atomic(
        aligned,
        {
            "labels": np.stack([true % 2, true]),
            "clusters": np.array([2, 3]),
            "index": idx.numpy(),
        },
    )
    captured = {}

    def fake_fit(**kw):
        captured.update(kw)
        return {}

    import ascl.pretrain as pretrain_mod

    monkeypatch.setattr(pretrain_mod, "fit", fake_fit)
    advcl = config.pretrain_settings(p, "advcl")
    run_pretrain(
        advcl, data=toy_data, out=tmp_path / "a.pt", seed=0, track=False, pseudo_labels=aligned
    )
    x_train, y_train = captured["x_train"], captured["y_train"]
    assert y_train.shape == (40, 2)
    # toy class k is a bright square at rows 2+4k..5+4k: recover the class from the pixels
    from_pixels = torch.stack([x_train[:, 0, 2 + 4 * k, 8] for k in range(3)], 1).argmax(1)
    assert torch.equal(y_train[:, 1], from_pixels)
    assert torch.equal(y_train[:, 0], from_pixels % 2)


def test_advcl_pretrain_needs_pseudo_labels(params, toy_data, tmp_path, capsys):
    p = config.deep_merge(params, {"device": "cpu"})
    with pytest.raises(config.ParamsError, match="--pseudo-labels"):
        run_pretrain(
            config.pretrain_settings(p, "advcl"), data=toy_data, out=tmp_path / "o.pt", seed=0
        )
    with pytest.raises(config.ParamsError, match="does not use pseudo labels"):
        run_pretrain(
            config.pretrain_settings(p, "simclr"),
            data=toy_data,
            out=tmp_path / "o.pt",
            seed=0,
            pseudo_labels=tmp_path / "x.npz",
        )
    code = main(
        [
            "pretrain",
            "--settings",
            config.settings_json(config.pretrain_settings(p, "advcl")),
            "--data",
            str(toy_data),
            "--out",
            str(tmp_path / "o.pt"),
            "--no-track",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--pseudo-labels" in err[0]
    assert not (tmp_path / "o.pt").exists()


def test_cli_pseudo_labels_then_advcl_pretrain(params, toy_data, tmp_path, capsys):
    p = config.deep_merge(
        params,
        {
            "device": "cpu",
            "data": {"max_train": None},
            "methods": {"advcl": {"pseudo_labels": {"clusters": 3}}},
            "pretrain": {"epochs": 1, "batch_size": 16, "attack": {"steps": 1}},
        },
    )
    enc = tmp_path / "simclr.pt"
    _save_encoder(p, "simclr", enc)
    labels = tmp_path / "pl" / "labels.npz"
    code = main(
        [
            "pseudo-labels",
            "--settings",
            config.settings_json(config.pseudo_label_settings(p, "advcl")),
            "--encoder",
            str(enc),
            "--data",
            str(toy_data),
            "--out",
            str(labels),
            "--seed",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "advcl.pt"
    code = main(
        [
            "pretrain",
            "--settings",
            config.settings_json(config.pretrain_settings(p, "advcl")),
            "--pseudo-labels",
            str(labels),
            "--data",
            str(toy_data),
            "--out",
            str(out),
            "--no-track",
        ]
    )
    assert code == 0, capsys.readouterr().err
    model, _ = load_pretrained(out)
    assert [h.out_features for h in model.pseudo_heads] == [3]


# ---------------------------------------------------------------------------------------------
# E2E: the pre-trained classifier as the head


@pytest.mark.parametrize("bn", ["same", "separated"])
def test_e2e_head_copy_gives_pretrained_logits(bn):
    pre = tiny_net(seed=4, bn=bn).eval()
    model = Classifier(pre.encoder, 3, "adv").eval()
    copy_pretrained_head(model, pre)
    x = images(5)[0]
    with torch.no_grad():
        assert torch.allclose(model(x), pre(x, "adv"), atol=1e-6)
    with pytest.raises(config.ParamsError, match="3 classes"):
        copy_pretrained_head(Classifier(pre.encoder, 5, "adv"), pre)


def test_e2e_strategy_job(params, toy_data, tmp_path):
    p = config.deep_merge(params, {"device": "cpu", "data": {"max_train": None, "max_test": None}})
    enc = tmp_path / "at.pt"
    pre = _save_encoder(p, "at", enc, seed=2).eval()
    settings = config.finetune_settings(p, "E2E")
    assert settings["head"] == "pretrained" and settings["epochs"] == 0
    assert "head" not in config.finetune_settings(p, "LAF")
    run_finetune(settings, encoder=enc, data=toy_data, out=tmp_path / "clf.pt", seed=0, track=False)
    model, _ = load_classifier(tmp_path / "clf.pt")
    x = images(6)[0]
    with torch.no_grad():
        assert torch.allclose(model(x), pre(x, "adv"), atol=1e-6)


@pytest.mark.parametrize("name", ["at", "trades", "acl", "ascl", "rocl"])
def test_eps_warmup_attacks_epoch_0_clean_and_later_epochs_at_full_budget(params, name):
    """pretrain.eps_warmup: in epoch 0 every attack of the objective has eps 0 (its terms equal
    those of an eps-0 configuration), from epoch n = ceil(fraction * epochs) on the full budget
    (the terms equal those of no warm-up)."""
    settings = config.pretrain_settings(params, name)
    settings["train"] |= {"epochs": 10, "eps_warmup": 0.3}
    settings["train"]["attack"]["steps"] = 1
    no_warmup = copy.deepcopy(settings)
    no_warmup["train"]["eps_warmup"] = 0.0
    zero_eps = copy.deepcopy(no_warmup)
    zero_eps["train"]["attack"] |= {"eps": 0, "alpha": 0}
    x = torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))

    def terms(s, epoch):
        torch.manual_seed(0)
        net = build_pretrain_net(s, 3).train()
        step = make_step(s, net)
        step.set_epoch(epoch)
        with torch.no_grad():
            out = step(x, Y, torch.Generator().manual_seed(0))
        return {k: float(v) for k, v in out.items()}

    assert terms(settings, 0) == terms(zero_eps, 0)
    assert terms(settings, 3) == terms(no_warmup, 3) == terms(no_warmup, 0)
    step = make_step(settings, build_pretrain_net(settings, 3))
    eps = []
    for epoch in range(10):
        step.set_epoch(epoch)
        eps.append(step.attack.eps * 255)
    assert eps[:4] == pytest.approx([0, 8 / 3, 16 / 3, 8]) and eps[4:] == [8.0] * 6

"""The evaluations of `ascl.evaluations` on tiny models (width 4, 16x16 toy images, CPU):
the math of each (clean limits, monotonicity, exclusions, exact restoration, independent
recomputations), the digits10-c corruptions and the command line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from ascl import checkpoint, config
from ascl.cli import main
from ascl.data import CIFAR10C_CORRUPTIONS, load_corrupted, write_npz_atomic
from ascl.data import corrupt as corrupt_mod
from ascl.evaluations import autoattack as aa
from ascl.evaluations import (
    blackbox,
    corruptions,
    inversion,
    landscape_input,
    strength,
    tsne,
)
from ascl.evaluations import landscape_weight as lw
from ascl.evaluations.common import load_model
from ascl.metrics import accuracy, robust_accuracy
from ascl.models import Classifier, ResNet18Encoder
from ascl.registry import EVALUATIONS
from ascl.tensors import subset, to_float
from ascl.tracking import tracking_uri

CPU = torch.device("cpu")


def make_toy10(path, n_train=120, n_test=40, seed=0, size=16):
    """10 classes: class k is a bright 4x4 square in cell k of a 4x4 grid, over dark noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, size=(n, 3, size, size), dtype=np.uint8)
        for i, k in enumerate(y):
            r, c = divmod(int(k), 4)
            x[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 230
        return x, y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(
        path,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=np.array([f"c{k}" for k in range(10)]),
    )
    return path


def make_classifier(path, data, seed=0, width=4):
    """A random width-`width` ResNet-18 encoder with a ridge-regression linear head fitted on the
    training features (a working classifier in a fraction of a second), saved as a finetuning
    checkpoint."""
    torch.manual_seed(seed)
    model = Classifier(ResNet18Encoder(width, "separated"), 10, "adv").eval()
    arrays = np.load(data)
    x = to_float(torch.from_numpy(arrays["x_train"]))
    y = torch.from_numpy(arrays["y_train"])
    with torch.no_grad():
        f = model.features(x).double()
    f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)
    target = F.one_hot(y, 10).double() * 2 - 1
    w = torch.linalg.solve(f.T @ f + 1e-2 * torch.eye(f.shape[1], dtype=f.dtype), f.T @ target)
    with torch.no_grad():
        model.head.weight.copy_(w[:-1].T.float())
        model.head.bias.copy_(w[-1].float())
    checkpoint.save(
        {
            "kind": "classifier",
            "model": model.state_dict(),
            "num_classes": 10,
            "branch": "adv",
            "encoder_settings": {"model": {"width": width, "bn": "separated"}, "method": "toy"},
            "settings": {},
            "seed": seed,
            "run_id": "",
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    data = make_toy10(d / "toy10.npz")
    return {
        "data": data,
        "model": make_classifier(d / "a.pt", data, seed=0),
        "model_b": make_classifier(d / "b.pt", data, seed=1),
    }


@pytest.fixture(scope="module")
def params():
    from tests.conftest import ROOT

    p = config.load_params(ROOT / "params.yaml", ROOT / "config" / "smoke.yaml")
    p = config.deep_merge(
        p, {"device": "cpu", "data": {"max_train": None, "max_test": None}, "evaluate": {}}
    )
    p["evaluate"]["batch_size"] = 20
    config.validate_params(p)
    return p


def settings(params, kind, **override):
    return config.deep_merge(config.evaluation_settings(params, kind), override)


def split(toy, n=None):
    """The toy test split, or the shared seed-0 subset of n images every evaluation job uses."""
    arrays = np.load(toy["data"])
    x, y = torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])
    return subset(x, y, n, seed=0)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# settings


def test_evaluation_settings_resolve_every_kind(params):
    for kind in EVALUATIONS:
        s = config.evaluation_settings(params, kind)
        assert s["kind"] == kind and s["device"] == "cpu" and "data" in s
        json.dumps(s)
    pgd = config.evaluate_settings(params)
    assert not set(EVALUATIONS) & set(pgd), "the PGD job must not depend on other evaluations"
    with pytest.raises(config.ParamsError, match="unknown evaluation"):
        config.evaluation_settings(params, "nope")
    bad = config.deep_merge(params, {"evaluate": {"tsne": {"perplexity": 5, "extra": 1}}})
    with pytest.raises(config.ParamsError, match="evaluate.tsne.extra"):
        config.validate_params(bad)


# ---------------------------------------------------------------------------------------------
# attack strength (Fig. 6)


def test_strength_limits_monotonicity_and_prefix(toy, params, tmp_path):
    model, _ = load_model(toy["model"], CPU)
    x, y = split(toy)
    s = settings(params, "strength", steps=[0, 1, 3], eps_grid=[0, 1, 2, 4, 8, 16], fixed_steps=3)
    out = tmp_path / "strength.csv"
    strength.run_strength(
        s, model_path=toy["model"], data=toy["data"], out=out, seed=0, track=False
    )
    rows = read_rows(out)
    assert [r["kind"] for r in rows] == ["steps"] * 3 + ["eps"] * 6
    clean = accuracy(model, x, y, 20)
    by_steps = {int(r["value"]): float(r["ra"]) for r in rows if r["kind"] == "steps"}
    by_eps = [(float(r["value"]), float(r["ra"])) for r in rows if r["kind"] == "eps"]
    assert by_steps[0] == clean and by_eps[0] == (0.0, clean)
    ras = [ra for _, ra in by_eps]
    assert all(a >= b for a, b in zip(ras, ras[1:], strict=False)), ras
    assert ras[-1] < clean
    # a k-step PGD is the prefix of the longer run: the sweep equals separate runs exactly
    for random_start in (False, True):
        curve = strength.steps_curve(
            model,
            x,
            y,
            eps=4 / 255,
            alpha=1 / 255,
            steps=[0, 2, 5],
            random_start=random_start,
            batch_size=16,
            seed=3,
        )
        for k in (0, 2, 5):
            assert curve[k] == robust_accuracy(
                model,
                x,
                y,
                eps=4 / 255,
                alpha=1 / 255,
                steps=k,
                random_start=random_start,
                batch_size=16,
                seed=3,
            )


# ---------------------------------------------------------------------------------------------
# AutoAttack (Tables 1, 5)


def test_autoattack_not_weaker_than_pgd(toy):
    """AA <= PGD-20 <= clean. The standard version runs Square (5000 queries) and FAB-T on every
    point still robust, ~30 s on one CPU thread for 16 images here, so this test runs the
    APGD-CE + APGD-T subset (version "custom"); the job itself always uses `standard`
    (next test)."""
    model, _ = load_model(toy["model"], CPU)
    x, y = split(toy, 16)
    eps = 2 / 255
    clean = accuracy(model, x, y, 16)
    ra_pgd = robust_accuracy(
        model, x, y, eps=eps, alpha=eps / 4, steps=20, random_start=True, batch_size=16, seed=0
    )
    robust = aa.autoattack_robust(
        model,
        to_float(x),
        y,
        eps=eps,
        version="custom",
        attacks=["apgd-ce", "apgd-t"],
        batch_size=16,
        seed=0,
        num_classes=10,
    )
    ra_aa = 100.0 * float(robust.float().mean())
    assert ra_aa <= ra_pgd <= clean
    assert ra_pgd < clean


def test_smoke_attack_budgets(toy):
    """`square_queries` and `target_classes` replace only Square's budget and the targeted
    attacks' number of targets (smoke); unset, the standard version's own: 5000 queries, 9
    target classes for APGD-T and FAB-T, and always its four attacks."""
    model, _ = load_model(toy["model"], CPU)
    kw = {"eps": 8 / 255, "version": "standard", "seed": 0, "num_classes": 10, "device": CPU}
    standard = aa.make_adversary(model, **kw)
    smoke = aa.make_adversary(model, **kw, square_queries=300, target_classes=3)
    assert (standard.square.n_queries, smoke.square.n_queries) == (5000, 300)
    assert standard.apgd_targeted.n_target_classes == standard.fab.n_target_classes == 9
    assert smoke.apgd_targeted.n_target_classes == smoke.fab.n_target_classes == 3
    for adv in (standard, smoke):
        assert adv.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
        assert adv.apgd.n_iter == adv.apgd_targeted.n_iter == 100


def test_autoattack_job_standard_resumes(toy, params, tmp_path, monkeypatch):
    """The job (standard version) writes {"ra_aa", "sa", "n_test"}; chunks already in a state
    file with the right fingerprint are not recomputed, and the state file is removed."""
    s = settings(params, "autoattack", n_test=16, chunk_size=8)
    assert s["version"] == "standard" and s["eps"] == 8
    out = tmp_path / "aa.json"
    m = aa.run_autoattack(
        s, model_path=toy["model"], data=toy["data"], out=out, seed=0, track=False
    )
    assert json.loads(out.read_text()) == m
    assert set(m) == {"ra_aa", "sa", "n_test"} and m["n_test"] == 16
    assert 0 <= m["ra_aa"] <= m["sa"] <= 100
    state = aa.default_state_path(out)
    assert not state.exists()
    # resume: a state whose chunk 0 says "all 8 robust and correct" is taken as done
    fingerprint = None
    original = aa._load_state

    def capture(path, fp):
        nonlocal fingerprint
        fingerprint = fp
        return original(path, fp)

    monkeypatch.setattr(aa, "_load_state", capture)
    aa.run_autoattack(s, model_path=toy["model"], data=toy["data"], out=out, seed=0, track=False)
    monkeypatch.undo()
    state.write_text(
        json.dumps(
            {"fingerprint": fingerprint, "chunks": {"0": {"robust": [1] * 8, "clean": [1] * 8}}}
        )
    )
    resumed = aa.run_autoattack(
        s, model_path=toy["model"], data=toy["data"], out=out, seed=0, track=False
    )
    assert resumed["ra_aa"] == 50.0 + m["ra_aa"] / 2  # chunk 1 recomputed as before
    assert resumed["sa"] >= 50.0
    assert not state.exists()


# ---------------------------------------------------------------------------------------------
# black-box transfer (Table 2)


def test_blackbox_craft_and_diagonal_excluded(toy, params, tmp_path):
    s = settings(params, "blackbox", steps=3)
    sets = {}
    for name, key in (("A", "model"), ("B", "model_b")):
        sets[name] = tmp_path / f"{name}.npz"
        blackbox.run_blackbox_craft(
            s,
            model_path=toy[key],
            data=toy["data"],
            out=sets[name],
            seed=0,
            name=name,
            track=False,
        )
    x, y = split(toy)
    x_adv, y_adv, meta = blackbox.load_crafted(sets["B"])
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert torch.equal(y_adv, y) and meta["source"] == "B" and meta["n"] == len(x)
    assert (x_adv - to_float(x)).abs().max() <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # an alias of A's own set under another name is excluded too (same checkpoint)
    sets["A-again"] = sets["A"]
    out = tmp_path / "bb.json"
    result = blackbox.run_blackbox_eval(
        s, model_path=toy["model"], sources=sets, out=out, seed=0, name="A", track=False
    )
    assert result["target"] == "A" and set(result["ra"]) == {"B"}
    target, _ = load_model(toy["model"], CPU)
    assert result["ra"]["B"] == accuracy(target, x_adv, y, 7)
    assert json.loads(out.read_text()) == result


# ---------------------------------------------------------------------------------------------
# t-SNE (Fig. 3) and feature inversion (Fig. 2)


def test_tsne_one_point_per_sample(toy, params, tmp_path):
    s = settings(params, "tsne", n_samples=30, perplexity=30)
    out = tmp_path / "tsne.csv"
    tsne.run_tsne(s, model_path=toy["model"], data=toy["data"], out=out, seed=0, track=False)
    rows = read_rows(out)
    assert len(rows) == 30 and set(rows[0]) == {"x", "y", "label"}
    assert all(np.isfinite(float(r["x"])) and np.isfinite(float(r["y"])) for r in rows)
    _, y30 = split(toy, 30)  # the shared seed-0 subset, in order
    assert [int(r["label"]) for r in rows] == y30.tolist()


def test_inversion_increases_the_component(toy, params, tmp_path):
    model, _ = load_model(toy["model"], CPU)
    x, _ = split(toy, 4)
    x = to_float(x)
    values = inversion.component_values(model, x, list(range(model.encoder.out_dim)))
    active = int(values.mean(0).argmax())
    best, before, after = inversion.invert(model, x, active, steps=10, lr=0.5)
    assert torch.allclose(before, values[:, active])
    assert (after > before).all()
    assert torch.allclose(inversion.component_values(model, best, [active])[:, 0], after)
    assert best.min() >= 0 and best.max() <= 1
    s = settings(params, "inversion", components=[active, 0], steps=5, n_seeds=2, n_noise=1)
    out, npz = tmp_path / "inv.csv", tmp_path / "inv.npz"
    m = inversion.run_inversion(
        s, model_path=toy["model"], data=toy["data"], out=out, out_npz=npz, seed=0, track=False
    )
    rows = read_rows(out)
    assert len(rows) == 3 * 2 and m["n_seeds"] == 3
    assert all(float(r["after"]) >= float(r["before"]) for r in rows)
    arrays = np.load(npz)
    assert arrays["images"].shape == (3, 2, 3, 16, 16)
    assert list(arrays["seed_kind"]) == ["image", "image", "noise"]
    with pytest.raises(config.ParamsError, match="out of range"):
        inversion.run_inversion(
            settings(params, "inversion", components=[10_000]),
            model_path=toy["model"],
            data=toy["data"],
            out=out,
            out_npz=npz,
            seed=0,
            track=False,
        )


# ---------------------------------------------------------------------------------------------
# loss landscapes (Fig. 4, 5)


def test_input_landscape_center_is_plain_loss(toy, params, tmp_path):
    s = settings(params, "landscape_input", radius=8, points=3, n_images=12)
    out = tmp_path / "li.csv"
    m = landscape_input.run_landscape_input(
        s, model_path=toy["model"], data=toy["data"], out=out, seed=0, track=False
    )
    rows = read_rows(out)
    assert len(rows) == 9
    assert sorted({float(r["a"]) for r in rows}) == [-8.0, 0.0, 8.0]
    centre = next(float(r["loss"]) for r in rows if float(r["a"]) == 0 and float(r["b"]) == 0)
    model, _ = load_model(toy["model"], CPU)
    x, y = split(toy, 12)
    with torch.no_grad():
        plain = float(F.cross_entropy(model(to_float(x)), y))
    assert centre == pytest.approx(plain, rel=1e-5) and m["loss_center"] == pytest.approx(plain)
    # the adversarial direction raises the loss more than the opposite one
    by_a = {float(r["a"]): float(r["loss"]) for r in rows if float(r["b"]) == 0}
    assert by_a[8.0] > plain > 0


def test_filter_normalisation_matches_explicit_loop(toy):
    model, _ = load_model(toy["model"], CPU)
    d = lw.filter_normalized_direction(model, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    for name, p in model.named_parameters():
        raw = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if p.dim() <= 1:
            assert torch.equal(d[name], torch.zeros_like(p))
            continue
        for f in range(p.shape[0]):
            expected = raw[f] * (p[f].norm() / (raw[f].norm() + 1e-10))
            assert torch.allclose(d[name][f], expected, rtol=1e-5, atol=1e-7)
            assert d[name][f].norm() == pytest.approx(float(p[f].norm()), rel=1e-4)


def test_weight_landscape_alpha0_and_exact_restore(toy, params, tmp_path):
    model, _ = load_model(toy["model"], CPU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = split(toy, 12)
    s = settings(params, "landscape_weight", radius=0.5, points=3, n_images=12, attack={"steps": 2})
    adv0 = lw.adversarial_loss(model, x, y, s["attack"], 20, seed=0)
    with torch.no_grad():
        clean0 = float(F.cross_entropy(model(to_float(x)), y))
    direction = lw.filter_normalized_direction(model, torch.Generator().manual_seed(0))
    seen = []

    def loss_fn():
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return (lw.adversarial_loss(model, x, y, s["attack"], 20, seed=0),)

    values = lw.weight_landscape(model, direction, [-0.5, 0.0, 0.5], loss_fn)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights not restored exactly"
    assert values[1][0] == adv0
    assert not torch.equal(seen[0]["encoder.stem.weight"], before["encoder.stem.weight"])
    assert all(torch.equal(seen[1][k], before[k]) for k in before)
    # the restore also happens when the loss raises
    with pytest.raises(RuntimeError, match="boom"):
        lw.weight_landscape(
            model, direction, [0.3], lambda: (_ for _ in ()).throw(RuntimeError("boom"))
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    out = tmp_path / "lw.csv"
    m = lw.run_landscape_weight(
        s, model_path=toy["model"], data=toy["data"], out=out, seed=0, track=False
    )
    rows = read_rows(out)
    assert [float(r["alpha"]) for r in rows] == [-0.5, 0.0, 0.5]
    assert float(rows[1]["loss"]) == pytest.approx(adv0, rel=1e-6)
    assert float(rows[1]["clean_loss"]) == pytest.approx(clean0, rel=1e-5)
    assert m["loss_center"] == pytest.approx(adv0, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# corruptions (Fig. 1, 7) and digits10-c


def _images32(n=6, seed=0):
    """Digit-like 32x32 test images: coloured background, a brighter bar pattern, noise."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        bg = rng.integers(0, 110, size=3)
        fg = rng.integers(150, 256, size=3)
        img = np.broadcast_to(bg[:, None, None], (3, 32, 32)).astype(np.int64).copy()
        img[:, 6:26, 12 + i % 4 : 18 + i % 4] = fg[:, None, None]
        img[:, 6:10, 8:24] = fg[:, None, None]
        x[i] = np.clip(img + rng.integers(-6, 7, size=img.shape), 0, 255)
    return x


def test_corruption_functions_keep_form_and_grow_with_severity():
    x = _images32()
    xf = x.astype(np.float64) / 255
    assert tuple(corrupt_mod.CORRUPTIONS) == CIFAR10C_CORRUPTIONS
    for name, fn in corrupt_mod.CORRUPTIONS.items():
        change = {}
        for severity in (1, 5):
            out = fn(xf, severity, np.random.default_rng(severity))
            assert out.shape == xf.shape and out.dtype == np.float64, name
            assert out.min() >= 0 and out.max() <= 1, name
            img = corrupt_mod.corrupt(x, name, severity, np.random.default_rng(severity))
            assert img.shape == x.shape and img.dtype == np.uint8, name
            again = corrupt_mod.corrupt(x, name, severity, np.random.default_rng(severity))
            assert np.array_equal(img, again), f"{name} is not deterministic"
            change[severity] = np.abs(out - xf).mean()
        assert change[5] > change[1] > 0, (name, change)


def _corruption_dir(root, x, y, names):
    root.mkdir()
    for name in names:
        write_npz_atomic(root / f"{name}.npz", corrupt_mod.corrupted_set(x, y, name))
    return root


def test_corruption_accuracies_match_independent_loop(toy, params, tmp_path):
    x, y = split(toy, 10)
    names = ["gaussian_noise", "contrast", "pixelate"]
    root = _corruption_dir(tmp_path / "c", x.numpy(), y.numpy(), names)
    s = settings(params, "corruptions", names=names)
    s["data"]["max_test"] = 8
    out, out_csv = tmp_path / "c.json", tmp_path / "c.csv"
    summary = corruptions.run_corruptions(
        s,
        model_path=toy["model"],
        data=root,
        out=out,
        out_csv=out_csv,
        seed=0,
        track=False,
    )
    rows = read_rows(out_csv)
    assert len(rows) == 3 * 5
    model, _ = load_model(toy["model"], CPU)
    g = torch.Generator().manual_seed(0)
    keep = torch.randperm(10, generator=g)[:8].sort().values  # the shared seed-0 cap
    for r in rows:
        cx, cy, sev = load_corrupted(root / f"{r['corruption']}.npz")
        sel = (sev == int(r["severity"])).nonzero().flatten()[keep]
        with torch.no_grad():
            pred = model(to_float(cx[sel])).argmax(1)
        assert float(r["accuracy"]) == pytest.approx(
            100.0 * float((pred == cy[sel]).float().mean())
        )
    mean = sum(float(r["accuracy"]) for r in rows) / len(rows)
    assert summary["mean"] == pytest.approx(mean) and summary["n_test"] == 8
    assert json.loads(out.read_text()) == summary
    per = summary["per_corruption"]["contrast"]
    assert per == pytest.approx(
        sum(float(r["accuracy"]) for r in rows if r["corruption"] == "contrast") / 5
    )


def test_download_digits10c_builds_the_cifar10c_form(tmp_path, monkeypatch, capsys):
    """`ascl download digits10-c` builds all 19 files (on 4 source images here: the real build
    corrupts the 359 digits10 test images, ~10 s)."""
    from ascl.data import offline

    full = offline.build_offline

    def small(name):
        arrays = full(name)
        return {**arrays, "x_test": arrays["x_test"][:4], "y_test": arrays["y_test"][:4]}

    monkeypatch.setattr(offline, "build_offline", small)
    out = tmp_path / "digits10-c"
    assert main(["download", "digits10-c", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{c}.npz" for c in CIFAR10C_CORRUPTIONS)
    ref = small("digits10")
    for name in ("fog", "saturate"):
        x, y, sev = load_corrupted(out / f"{name}.npz")
        assert x.shape == (20, 3, 32, 32)
        assert sev.tolist() == [s for s in range(1, 6) for _ in range(4)]
        assert np.array_equal(y.numpy(), np.tile(ref["y_test"], 5))
    a = np.load(out / "fog.npz")["x"]
    monkeypatch.setattr(offline, "build_offline", small)
    assert main(["download", "digits10-c", "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(a, np.load(tmp_path / "again" / "fog.npz")["x"]), "not deterministic"


# ---------------------------------------------------------------------------------------------
# command line and tracking


def test_cli_evaluations_track_under_the_model_run(toy, params, tmp_path, capsys):
    """Each evaluation command writes its output; its MLflow run is a child of --parent-run-id.
    Errors are one line."""
    from ascl.tracking import Run

    with Run("model", enabled=True) as parent:
        pass
    common = ["--model", str(toy["model"]), "--parent-run-id", parent.run_id, "--tag", "t=1"]
    js = config.settings_json
    s = settings(params, "strength", steps=[0, 1], eps_grid=[0, 4], fixed_steps=1)
    out = tmp_path / "s.csv"
    code = main(
        ["strength", "--settings", js(s), "--data", str(toy["data"]), "--out", str(out), *common]
    )
    assert code == 0 and len(read_rows(out)) == 4
    s = settings(params, "blackbox", steps=1)
    crafted = tmp_path / "a.npz"
    assert main(["blackbox-craft", "--settings", js(s), "--data", str(toy["data"]), "--out",
                 str(crafted), "--name", "A", *common]) == 0  # fmt: skip
    bb = tmp_path / "bb.json"
    assert (
        main(
            [
                "blackbox-eval",
                "--settings",
                js(s),
                "--name",
                "B",
                "--source",
                f"A={crafted}",
                "--out",
                str(bb),
                *common,
                "--model",
                str(toy["model_b"]),
            ]
        )
        == 0
    )  # fmt: skip (the last --model wins)
    assert set(json.loads(bb.read_text())["ra"]) == {"A"}
    capsys.readouterr()
    client = MlflowClient(tracking_uri())
    children = client.search_runs(
        [client.get_run(parent.run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.run_id}'",
    )
    kinds = sorted(r.data.tags["evaluation"] for r in children)
    assert kinds == ["blackbox", "blackbox-craft", "strength"]
    assert all(r.data.tags["t"] == "1" for r in children)
    # wrong settings kind, missing input: one line each
    code = main(
        ["tsne", "--settings", js(s), "--data", str(toy["data"]), "--out", str(out), *common]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not fit tsne" in err[0]
    cs = js(settings(params, "corruptions"))
    code = main(["corruptions", "--settings", cs, "--data", str(tmp_path / "none"),
                 "--out", str(bb), "--out-csv", str(out), *common])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"ascl: error: corruption directory not found: {tmp_path / 'none'}"
    ]

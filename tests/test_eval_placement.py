"""Evaluation on the device as training is: models placed like training (CUDA) or as before
(CPU, outputs byte-identical), and AutoAttack's chunk and batch sizes from a memory estimate."""

from __future__ import annotations

import pytest
import torch

from ascl import checkpoint
from ascl.evaluations import autoattack as aa
from ascl.evaluations.common import eval_memory_format, load_model
from ascl.models import Classifier, ResNet18Encoder

MIB = 2**20


def test_cpu_keeps_the_settings_sizes():
    assert aa.attack_sizes(10_000, 1000, 512) == (1000, 512)
    assert aa.attack_sizes(8, 8, 20) == (8, 20)  # the smoke's, unchanged


@pytest.mark.parametrize(
    ("budget_mib", "per_image_mib", "n", "expected"),
    [
        (60_000, 8, 10_000, (7168, 7168)),  # 7500 fit -> 14 x 512; chunk >= batch
        (60_000, 8, 5_000, (5000, 5000)),  # more fit than there are images
        (8_000, 8, 10_000, (1000, 512)),  # 1000 fit -> one 512 batch, chunks of 1000 as set
        (3_000, 8, 10_000, (1000, 375)),  # fewer than 512 fit: all that fit
        (1, 8, 10_000, (1000, 1)),  # nothing fits: one image at a time
    ],
)
def test_sizes_from_a_memory_estimate(budget_mib, per_image_mib, n, expected):
    got = aa.attack_sizes(
        n, 1000, 512, budget_bytes=budget_mib * MIB, bytes_per_image=per_image_mib * MIB
    )
    assert got == expected
    chunk, batch = got
    assert batch * per_image_mib <= max(budget_mib, per_image_mib) and chunk >= min(batch, n)


def test_bad_estimate_is_refused():
    with pytest.raises(ValueError, match="bytes_per_image must be > 0"):
        aa.attack_sizes(10, 10, 5, budget_bytes=100, bytes_per_image=0)


def test_device_sizes_on_cpu_are_the_settings():
    model = Classifier(ResNet18Encoder(4, "separated"), 10, "adv").eval()
    x = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
    assert aa.device_sizes(model, x, torch.zeros(10, dtype=torch.long), 4, 3) == (4, 3)


def test_memory_format_follows_training_on_cuda_only():
    assert eval_memory_format("auto", "cuda") == "auto"
    assert eval_memory_format("channels_last", torch.device("cuda:0")) == "channels_last"
    for spec in ("auto", "channels_last", "contiguous"):
        assert eval_memory_format(spec, "cpu") == "contiguous"


def _classifier_file(path, memory_format):
    torch.manual_seed(0)
    model = Classifier(ResNet18Encoder(8, "separated"), 10, "adv").eval()
    checkpoint.save(
        {
            "kind": "classifier",
            "model": model.state_dict(),
            "num_classes": 10,
            "branch": "adv",
            "encoder_settings": {"model": {"width": 8, "bn": "separated"}, "method": "toy"},
            "settings": {"memory_format": memory_format},
            "seed": 0,
            "run_id": "",
        },
        path,
    )
    return model


def test_cpu_model_is_loaded_as_before(tmp_path):
    """On the CPU the model stays contiguous (NCHW) whatever its training used, fp32, frozen,
    in eval mode, with the saved weights: its outputs are those of a plain `.to(device)`."""
    ref = _classifier_file(tmp_path / "m.pt", "channels_last")
    model, _ = load_model(tmp_path / "m.pt", torch.device("cpu"))
    assert not model.training
    for p in model.parameters():
        assert p.dtype == torch.float32 and not p.requires_grad and p.is_contiguous()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_is_placed_like_training(tmp_path):
    _classifier_file(tmp_path / "m.pt", "auto")
    model, _ = load_model(tmp_path / "m.pt", torch.device("cuda"))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.dtype == torch.float32
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, device="cuda")
    chunk, batch = aa.device_sizes(model, x, torch.zeros(8, dtype=torch.long, device="cuda"), 4, 2)
    assert chunk == 8 and batch == 8  # a few images fit many times over

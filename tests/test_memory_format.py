"""The memory-format policy that keeps training off oneDNN's corrupting AVX2 kernel.

On CPUs whose best oneDNN ISA is AVX2 (forced anywhere with ONEDNN_MAX_CPU_ISA=AVX2), the
backward pass of a channels-last 1x1 stride-2 convolution with 2..7 input channels writes out of
bounds (glibc aborts, segfaults, or memory is corrupted silently). These tests run the reduced
case and a whole tiny-width pre-training job in subprocesses under that ISA, with the project's
policy, on every machine; and check which layers the policy finds against the model's shapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from ascl import config
from ascl.engine import (
    MemoryFormatError,
    place_model,
    resolve_memory_format,
    unsafe_channels_last_convs,
)
from ascl.models import PretrainNet

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}


def _run(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = os.environ | AVX2 | {"PYTHONFAULTHANDLER": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize("c_in", [2, 4, 6])
def test_reduced_crash_case_runs_clean_under_the_policy(c_in):
    """The reduced case of the crash (1x1 stride-2 convolution, batch 16, 32x32, backward),
    placed by the project's policy, exits cleanly on oneDNN's AVX2 path."""
    proc = _run(
        """
        import sys, torch
        from ascl.engine import place_model
        torch.set_num_threads(1)
        c_in = int(sys.argv[1])
        conv = place_model(torch.nn.Conv2d(c_in, 2 * c_in, 1, 2, bias=False), torch.device("cpu"))
        fmt = torch.channels_last if conv.weight.is_contiguous(
            memory_format=torch.channels_last) and not conv.weight.is_contiguous() else None
        for _ in range(3):
            x = torch.randn(16, c_in, 32, 32).requires_grad_()
            conv(x).sum().backward()
        print("layout", "channels_last" if fmt else "contiguous")
        """,
        str(c_in),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "layout contiguous" in proc.stdout


def test_tiny_width_pretraining_job_runs_clean_on_avx2(smoke_params, toy_data, tmp_path):
    """A whole pre-training job (`ascl pretrain`, ASCL objective, ResNet-18 of base width 2, as
    the tests train) in a subprocess on oneDNN's AVX2 path ends cleanly with its encoder."""
    params = config.deep_merge(
        smoke_params,
        {
            "device": "cpu",
            "data": {"max_train": None, "max_test": None},
            "model": {"width": 2, "proj_hidden": 8, "proj_dim": 4},
            "pretrain": {"epochs": 2, "batch_size": 16, "attack": {"steps": 1}},
        },
    )
    settings = config.pretrain_settings(params, "ascl")
    out = tmp_path / "encoder.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "ascl", "pretrain", "--settings", json.dumps(settings)]
        + ["--seed", "0", "--data", str(toy_data), "--out", str(out), "--no-track"],
        capture_output=True,
        text=True,
        env=os.environ | AVX2 | {"ASCL_PROGRESS": "0"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists()


def _brute_force_unsafe(model: nn.Module) -> list[str]:
    """Every convolution with a 1x1 kernel, a stride above 1 and 2..7 input channels, found by
    reading each layer's shape."""
    found = []
    for name, m in model.named_modules():
        if type(m) is nn.Conv2d:
            kh, kw = m.weight.shape[2:]
            if (kh, kw) == (1, 1) and m.stride[0] * m.stride[1] > 1 and 2 <= m.weight.shape[1] <= 7:
                found.append(name)
    return found


@pytest.mark.parametrize("width", [2, 3, 4, 7, 8, 16])
def test_unsafe_layers_are_the_narrow_strided_shortcuts(width):
    model = PretrainNet(10, width=width, proj_hidden=8, proj_dim=4)
    unsafe = unsafe_channels_last_convs(model)
    assert unsafe == _brute_force_unsafe(model)
    # ResNet-18's strided shortcuts take width, 2 * width and 4 * width channels
    expected = [w for w in (width, 2 * width, 4 * width) if 2 <= w <= 7]
    assert len(unsafe) == len(expected)
    assert all(name.endswith("shortcut_conv") for name in unsafe)


def test_policy_picks_the_format_and_refuses_the_unsafe_one():
    cpu = torch.device("cpu")
    narrow, wide = PretrainNet(10, width=4), PretrainNet(10, width=8)
    assert resolve_memory_format("auto", narrow, cpu) == torch.contiguous_format
    assert resolve_memory_format("auto", wide, cpu) == torch.channels_last
    assert resolve_memory_format("contiguous", wide, cpu) == torch.contiguous_format
    assert resolve_memory_format("channels_last", wide, cpu) == torch.channels_last
    # on a GPU, cuDNN runs these shapes; the policy only restricts the CPU
    assert resolve_memory_format("auto", narrow, torch.device("cuda")) == torch.channels_last
    with pytest.raises(MemoryFormatError, match=r"blocks\.\d+\.shortcut_conv"):
        resolve_memory_format("channels_last", narrow, cpu)
    with pytest.raises(ValueError, match="memory_format must be one of"):
        resolve_memory_format("nhwc", wide, cpu)
    placed = place_model(PretrainNet(10, width=8), cpu)
    assert placed.encoder.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert not placed.encoder.stem.weight.is_contiguous()

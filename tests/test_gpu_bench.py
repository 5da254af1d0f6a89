"""The GPU benchmark's code, checked on the CPU: full-size architectures on the ``meta`` device
(shapes, dtypes and parameter counts, no memory), and ``benchmarks/gpu_worker.py --tiny`` end
to end, each model in its own process, printing its table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from benchmarks import gpu_qwen, gpu_wan  # noqa: E402
from videokit.worker import tiny_qwen  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
META = torch.device("meta")


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _dtypes(module: Any) -> dict[str, set[torch.dtype]]:
    """Parameter dtypes by kind: those the model keeps in fp32, and the rest."""
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or [])
    out: dict[str, set[torch.dtype]] = {"fp32": set(), "rest": set()}
    for name, param in module.named_parameters():
        out["fp32" if keep.intersection(name.split(".")) else "rest"].add(param.dtype)
    return out


def test_the_full_size_a14b_the_benchmark_builds_is_the_published_architecture() -> None:
    """Through the benchmark's own builder, on ``meta`` (no memory): two ~14.3 B experts, a
    ~5.7 B UMT5-XXL encoder, the Wan2.1 VAE; bf16 but for what diffusers keeps in fp32, the VAE
    in fp32 as the engine runs it."""
    pipe = gpu_wan.build_a14b(META)
    experts = [pipe.transformer, pipe.transformer_2]
    for expert in experts:
        assert _count(expert) == 14_288_901_184
        assert {p.device.type for p in expert.parameters()} == {"meta"}
        assert len(expert.blocks) == 40
        assert tuple(expert.patch_embedding.weight.shape) == (5120, 36, 1, 2, 2)
        assert tuple(expert.blocks[0].ffn.net[0].proj.weight.shape) == (13824, 5120)
        assert tuple(expert.condition_embedder.text_embedder.linear_1.weight.shape) == (5120, 4096)
        assert tuple(expert.proj_out.weight.shape) == (16 * 4, 5120)  # 16 channels x 1x2x2
        assert _dtypes(expert) == {"fp32": {torch.float32}, "rest": {torch.bfloat16}}
    text = pipe.text_encoder
    assert _count(text) == 5_680_910_336
    assert tuple(text.shared.weight.shape) == (256384, 4096) and len(text.encoder.block) == 24
    assert {p.dtype for p in text.parameters()} == {torch.bfloat16}
    assert _count(pipe.vae) == 126_892_531
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}
    assert (pipe.vae.config.z_dim, pipe.vae_scale_factor_spatial) == (16, 8)
    assert pipe.config.boundary_ratio == 0.9


def test_the_full_size_qwen_image_edit_the_benchmark_builds_is_the_published_architecture() -> None:
    """~20.4 B MMDiT, ~8.3 B Qwen2.5-VL-7B text encoder with its vision tower, the Qwen-Image VAE,
    all bf16; and the rank-64 Lightning LoRA it loads is the published files' 425 M parameters."""
    pipe = gpu_qwen.build_pipeline(tiny=False, device=META, dtype=torch.bfloat16)
    transformer, text = pipe.transformer, pipe.text_encoder
    assert _count(transformer) == 20_430_401_088
    assert len(transformer.transformer_blocks) == 60
    assert tuple(transformer.img_in.weight.shape) == (3072, 64)
    assert tuple(transformer.txt_in.weight.shape) == (3072, 3584)
    assert _count(text) == 8_292_166_656
    assert _count(text.model.visual) == 676_550_144
    assert tuple(text.model.language_model.embed_tokens.weight.shape) == (152064, 3584)
    assert len(text.model.language_model.layers) == 28
    assert _count(pipe.vae) == 126_892_531 and pipe.vae.config.z_dim == 16
    for module in (transformer, text, pipe.vae):
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
        assert {p.device.type for p in module.parameters()} == {"meta"}
    lora = sum(
        gpu_qwen._LORA_RANK * sum(block.get_submodule(name).weight.shape)
        for block in transformer.transformer_blocks
        for name in tiny_qwen.LIGHTNING_LORA_MODULES
    )
    assert lora == 64 * 110_592 * 60 == 424_673_280


def test_gpu_worker_tiny_runs_each_model_in_its_own_process_and_prints_the_table(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_worker.py", "--tiny", "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()  # stdout is the table, nothing else
    assert lines[0] == (
        "| job | s per clip/image | text encode s | denoise s | VAE decode s | peak GPU GiB |"
    )
    assert len(lines) == 4
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    wan_row, qwen_row = cells
    assert wan_row[0] == "tiny Wan2.2 I2V 128x128x9, 4 steps (cpu)"
    assert qwen_row[0].startswith("tiny Qwen-Image-Edit 144x144, 8 steps (cpu)")
    for row in cells:
        # Seconds in every timing column (per clip: text encode, denoise, decode); no GPU peak.
        assert all(re.fullmatch(r"\d+\.\d\d", cell) for cell in row[1:5]), row
        assert row[5] == "-"
    data = json.loads(results.read_text())
    wan, qwen = data["wan"], data["qwen"]
    assert wan["total_s"] >= wan["denoise_s"] > 0 and wan["peak_memory_bytes"] is None
    assert {"text_encode", "denoise", "decode", "total"} <= set(qwen["seconds"])
    # One process per model (and neither is the driver's own).
    assert wan["pid"] != qwen["pid"] and os.getpid() not in (wan["pid"], qwen["pid"])


def test_a_model_that_fails_is_a_row_that_says_so() -> None:
    """An OOM (or any failure) of one model's process does not hide the other's numbers."""
    from benchmarks import gpu_worker

    failing = [
        sys.executable,
        "-c",
        "raise SystemExit('torch.OutOfMemoryError: CUDA out of memory')",
    ]
    result = gpu_worker._run_child(failing, timeout=60)
    assert result == {"error": "exit code 1: torch.OutOfMemoryError: CUDA out of memory"}
    rows = gpu_worker.table({"wan": result})
    assert rows[-1] == (
        "| Wan2.2 I2V | failed: exit code 1: torch.OutOfMemoryError: CUDA out of memory "
        "| - | - | - | - |"
    )

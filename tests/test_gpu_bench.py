"""The GPU benchmark's code, checked on the CPU: full-size architectures on the ``meta`` device
(shapes, dtypes and parameter counts, no memory), ``benchmarks/gpu_worker.py --tiny`` end to end
on a subset of its option matrix (each configuration in its own process, through the engines,
printing its table), and how the matrix picks the combination."""

from __future__ import annotations

import argparse
import importlib.util
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


#: The tiny matrix's subset the test runs: both baselines, a kernel that falls back on a CPU, the
#: VAE row (PSNR), an FP8 row (refused without torchao) and Qwen's fused LoRA.
_SUBSET = ("*:baseline", "wan:attention=sage", "wan:vae_dtype=*", "qwen:fp8=weights",
           "qwen:fuse_lora=on")  # fmt: skip
_SECONDS = re.compile(r"\d+\.\d\d")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_gpu_worker_tiny_runs_each_configuration_in_its_own_process_and_prints_the_table(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    only = [arg for pattern in _SUBSET for arg in ("--only", pattern)]
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_worker.py", "--tiny", *only, "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()  # stdout is the card, the jobs and the table
    assert lines[0] == "card: cpu (tiny configs on the CPU)"
    assert lines[1].startswith(
        "jobs: Wan2.2 I2V A14B 128x128x9, 4 steps; Qwen-Image-Edit 144x144, 8 steps"
    )
    assert lines[3] == (
        "| configuration | total s | text s | condition s | denoise s | decode s | peak GiB "
        "| attention | VAE PSNR dB | speed-up | goal |"
    )
    rows = {cells[0]: cells for cells in map(_cells, lines[5:])}
    assert list(rows) == [
        "Wan baseline", "Wan attention=sage", "Wan vae_dtype=bf16",
        "Qwen baseline", "Qwen fp8=weights", "Qwen fuse_lora=on",
    ]  # fmt: skip
    ran = ["Wan baseline", "Wan attention=sage", "Wan vae_dtype=bf16", "Qwen baseline",
           "Qwen fuse_lora=on"]  # fmt: skip
    for label in ran:
        row = rows[label]
        # Seconds in every timing column: total, text encode, condition, denoise, decode.
        assert all(_SECONDS.fullmatch(cell) for cell in row[1:6]), row
        assert row[6] == "-"  # no GPU peak on the CPU
        assert re.fullmatch(r"\d+\.\d\dx", row[9]) and row[10] == "n/a (tiny)"
    assert rows["Wan baseline"][7:10] == ["native", "-", "1.00x"]
    # A kernel this machine cannot run: the native one, and why, as the worker logs it.
    assert rows["Wan attention=sage"][7].startswith("native (fallback: SageAttention")
    assert "needs a CUDA device" in rows["Wan attention=sage"][7]
    assert float(rows["Wan vae_dtype=bf16"][8]) > 20  # bf16 against fp32, same latents
    torchao = importlib.util.find_spec("torchao") is not None
    if not torchao:  # the engine refuses to load rather than run without FP8
        assert rows["Qwen fp8=weights"][1] == (
            "refused: the fp8 option=weights: FP8 weights need torchao, which is not installed "
            "in this worker"
        )
        assert rows["Qwen fp8=weights"][2:] == ["-"] * 9

    data = json.loads(results.read_text())
    assert data["card"] == "cpu (tiny configs on the CPU)"
    runs = data["results"]
    wan, qwen = runs["wan:baseline"], runs["qwen:baseline"]
    for key in ("wan:baseline", "wan:attention=sage", "wan:vae_dtype=bf16", "qwen:baseline",
                "qwen:fuse_lora=on"):  # fmt: skip
        result = runs[key]
        seconds = result["seconds"]
        assert seconds["total"] >= seconds["denoise"] > 0 and result["peak_memory_bytes"] is None
        assert {"text_encode", "condition", "decode"} <= set(seconds)
        # Loaded and warmed up through the engine's prepare(), then timed.
        assert result["load_s"] >= result["prepare_s"] >= result["warmup_s"] > 0
        name = key.split(":")[1]
        # The options the engine resolved are the row's own, and only those.
        assert result["options"] == ({} if name == "baseline" else dict([name.split("=")]))
    assert runs["wan:attention=sage"]["attention"]["used"] == "native"
    assert wan["psnr_db"] is None and isinstance(runs["wan:vae_dtype=bf16"]["psnr_db"], float)
    assert wan["attention"] == {"requested": "native", "used": "native"}
    assert runs["qwen:fuse_lora=on"]["lora_fused"] is True and qwen["lora_fused"] is False
    assert qwen["steps"] == 8 and qwen["transformer_calls_per_step"] == 1
    # One process per configuration (and none is the driver's own).
    pids = [result["pid"] for result in runs.values() if "pid" in result]
    assert len(set(pids)) == len(pids) == 5 and os.getpid() not in pids


def _result(total: float, *, peak: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"seconds": {"total": total}, "peak_memory_bytes": peak,
            "attention": {"requested": "native", "used": "native"}, **extra}  # fmt: skip


def test_the_combination_takes_each_option_that_helped_once() -> None:
    from benchmarks import gpu_worker

    fallback = {"requested": "sage", "used": "native", "fallback": "not installed"}
    results = {
        "qwen:baseline": _result(10.0, peak=60 * 2**30),
        "qwen:attention=cudnn": _result(9.0),  # helped
        "qwen:attention=flash3": _result(8.0),  # helped more: the one attention kept
        "qwen:attention=sage": _result(5.0, attention=fallback),  # fell back: not sage's figure
        "qwen:compile=blocks": _result(9.95),  # within the noise
        "qwen:fp8=weights": _result(10.1, peak=40 * 2**30),  # leaner at no real cost in time
        "qwen:fp8=dynamic": {"error": "refused: no torchao"},
        "qwen:vae_dtype=bf16": _result(7.0, psnr_db=30.0),  # faster but bands
        "qwen:fuse_lora=on": _result(9.5),  # helped
    }
    # fp8=weights (10.1 s) and fuse_lora=on (9.5 s) cannot go together: the faster stays.
    assert gpu_worker.combination("qwen", results) == ["attention=flash3", "fuse_lora=on"]
    del results["qwen:fuse_lora=on"]
    assert gpu_worker.combination("qwen", results) == ["attention=flash3", "fp8=weights"]
    assert gpu_worker.combination("wan", results) == []  # no baseline: nothing to compare


def test_a_configuration_that_fails_is_a_row_that_says_so() -> None:
    """An OOM (or any failure) of one configuration's process does not hide the others."""
    from benchmarks import gpu_worker

    failing = [
        sys.executable,
        "-c",
        "raise SystemExit('torch.OutOfMemoryError: CUDA out of memory')",
    ]
    result = gpu_worker._run_child(failing, timeout=60)
    assert result == {"error": "exit code 1: torch.OutOfMemoryError: CUDA out of memory"}
    refusing = [
        sys.executable,
        "-c",
        "import sys; print('refused: no FP8 here', file=sys.stderr); sys.exit(2)",
    ]
    assert gpu_worker._run_child(refusing, timeout=60) == {"error": "refused: no FP8 here"}
    baseline = gpu_worker.Config("wan", "baseline")
    rows = gpu_worker.table([(baseline, result)])
    assert rows[-1] == (
        "| Wan baseline | failed: exit code 1: torch.OutOfMemoryError: CUDA out of memory "
        "| - | - | - | - | - | - | - | - | - |"
    )
    assert gpu_worker.main(["--only", "nothing:*"]) == 0  # nothing selected: an empty table


def test_a_full_size_row_says_whether_it_meets_the_goal() -> None:
    from benchmarks import gpu_worker

    def row(model: str, total: float, peak_gib: float) -> list[str]:
        config = gpu_worker.Config(model, "baseline")
        result = _result(total, peak=int(peak_gib * 2**30), tiny=False)
        return _cells(gpu_worker.table([(config, result)])[-1])

    assert row("wan", 14.2, 66.0)[10] == "met"
    assert row("wan", 17.0, 72.5)[10] == "missed: 17.0 s > 15 s, 72.5 GiB > 70 GiB"
    assert row("qwen", 3.9, 60.0)[10] == "met"
    assert row("qwen", 4.4, 60.0)[10] == "missed: 4.4 s > 4 s"


def test_the_benchmarks_take_engine_options() -> None:
    assert gpu_wan.parse_option("attention=cudnn") == ("attention", "cudnn")
    assert gpu_qwen.parse_option(" fuse_lora = on") == ("fuse_lora", "on")
    for bad in ("attention", "speed=max"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME one of attention, compile"):
            gpu_wan.parse_option(bad)

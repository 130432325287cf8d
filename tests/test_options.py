"""Speed options keep the contract: same outputs, finite losses, bpd close to fp32 on the same seed."""
import json
import math

import pytest
import torch

from conftest import PART1, SMALL, run_script
from dgmkit.engine import hardware
from train_torch import main, parse_args


def train(data_dir, log_dir, *flags):
    args = parse_args(["--data_dir", str(data_dir), "--log_dir", str(log_dir), *SMALL, "--sample_epochs", "2", *flags])
    metrics = main(args)
    run_dir = next(p for p in log_dir.iterdir() if p.is_dir())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()
             and not p.name.startswith("events.out")}
    return metrics, history, files


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    return train(tiny_data, tmp_path_factory.mktemp("fp32"), "--precision", "fp32", "--no-channels_last",
                 "--compile", "off")


@pytest.mark.parametrize("flags, tolerance", [
    (["--channels_last", "--compile", "off"], 1e-4),   # a memory layout: the same maths up to float rounding
    pytest.param(["--precision", "bf16", "--compile", "off"], 0.05, marks=pytest.mark.slow),  # ~3 digits; slow on AVX2
    (["--eval_batch_size", "7", "--compile", "off"], 0.03),  # other batches draw other z noise for validation
    pytest.param(["--compile"], 1e-3, marks=pytest.mark.slow),  # fused kernels, fp32 (a bare --compile means on)
])
def test_option_keeps_the_contract(flags, tolerance, reference, tiny_data, tmp_path):
    ref_metrics, ref_history, ref_files = reference
    metrics, history, files = train(tiny_data, tmp_path, *flags)
    assert files == ref_files
    for ours, theirs in zip(history, ref_history, strict=True):
        for key in ("train_bpd", "val_bpd", "train_kl_nats", "val_kl_nats"):
            assert math.isfinite(ours[key])
        assert abs(ours["train_bpd"] - theirs["train_bpd"]) < tolerance
        assert abs(ours["val_bpd"] - theirs["val_bpd"]) < tolerance
    assert abs(metrics["test_bpd"] - ref_metrics["test_bpd"]) < tolerance


@pytest.mark.slow
def test_benchmark_runs_and_writes_json(tmp_path):
    """Tiny sizes, every pipeline, one repeat: the benchmark cannot rot."""
    out = tmp_path / "bench.json"
    result = run_script([PART1 / "benchmark.py", "--device", "cpu", "--num_images", "400", "--batch_size", "16", "--steps", "2",
                         "--probe_steps", "1", "--warmup", "1", "--repeats", "1", "--baseline_workers", "0",
                         "--no_compile", "--family_steps", "1", "--out", out])
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads(out.read_text())
    assert set(bench["images_per_second"]) == {"baseline", "default", "fastest", "ceiling"}
    assert all(v > 0 for v in bench["images_per_second"].values())
    ips = bench["images_per_second"]
    assert bench["ratios"]["default/baseline"] == pytest.approx(ips["default"] / ips["baseline"])
    # The default is what the CLI's auto choice gives for 80 epochs of this training set (360 images, batch 16).
    auto = hardware.choose(torch.device("cpu"), "auto", "auto", None, 80 * 23)
    assert bench["auto_choice"]["precision"] == auto["precision"]
    assert bench["default_options"] == (f"{auto['precision']}, {'channels_last' if auto['channels_last'] else 'NCHW'}"
                                        f"{', compile' if auto['compile'] else ''}")
    assert set(bench["family_images_per_second"]) == {"elbo K=1", "iwae K=5", "iwae K=50", "planar L=10",
                                                      "radial L=10"}
    assert all(v > 0 for v in bench["family_images_per_second"].values())
    assert "baseline" in result.stdout and "ratios: default/baseline" in result.stdout

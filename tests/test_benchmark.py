"""benchmark.py: the images-per-second figure counts the images really trained on (a cycled loader, short batches),
and a tiny run of every pipeline writes its JSON (bad inputs: tests/end_to_end/test_bad_inputs_runs.py)."""
import json

import pytest
import torch

import benchmark
from conftest import PART1, generated_data, run_script
from dgmkit.engine import hardware


def test_benchmark_counts_the_images_it_trains_on(tmp_path, monkeypatch):
    """A training set smaller than steps x batch: the loader is cycled (each pass a new epoch), and the
    figure divides the images really trained on (short last batches included) by the time. Before, 3 steps
    of batch 128 on 36 images counted 384 images for the one batch the loader had."""
    loader = [(torch.zeros(4, 1, 28, 28), torch.zeros(4)), (torch.zeros(2, 1, 28, 28), torch.zeros(2))]
    batches, seen = benchmark.counted(benchmark.cycled(loader))
    run = lambda n: [next(batches) for _ in range(n)]  # noqa: E731
    run(1)  # warm-up: 4 images
    monkeypatch.setattr(benchmark, "timed", lambda fn, device: (fn(), 2.0)[1])  # every measurement "takes" 2 s
    assert benchmark.images_per_second(run, 5, seen, torch.device("cpu")) == (2 + 4 + 2 + 4 + 2) / 2.0
    data = generated_data(tmp_path, 40, 10, seed=0)  # 36 training images: one batch of 128 is one epoch
    args, choice = benchmark.option(torch.device("cpu"), 128, "fp32", False, False)
    vars(args).update(num_filters=4, z_dim=2)
    trainer = benchmark.ProjectTrainer(args, choice, data, torch.device("cpu"))
    assert trainer.images_per_second(steps=3, warmup=1) == 3 * 36 / 2.0


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

"""The shared-memory all-reduce that torchrun ranks on one host use for gradients, against known sums."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.shared_memory_allreduce import supported

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")

# Runs under torchrun. Rank r contributes (r + 1) * base, so the sum is (1 + 2 + ... + K) * base.
# Rank 0 prints one line per check; the test compares the lines.
SCRIPT = """
import torch
import torch.distributed as dist
from shared.distributed import all_reduce_sum, init_distributed, shutdown

context = init_distributed("cpu")
rank, world = context.rank, context.world_size
total = sum(range(1, world + 1))
report = []

def check(name, tensor, expected):
    gathered = [torch.zeros_like(tensor) for _ in range(world)]
    dist.all_gather(gathered, tensor)
    same = all(torch.equal(gathered[0], other) for other in gathered)
    report.append(f"{name} exact={torch.equal(tensor, expected)} same_on_all_ranks={same}")

report.append(f"allreduce={context.allreduce}")
base = torch.linspace(-3.0, 3.0, 9000)
gradient = (rank + 1) * base
all_reduce_sum(gradient)
check("float32", gradient, total * base)

steps = torch.tensor([1000.0 * (rank + 1)], dtype=torch.float64)
all_reduce_sum(steps)
check("float64", steps, torch.tensor([1000.0 * total], dtype=torch.float64))

large = torch.full((600_000,), float(rank + 1))  # 2.4 MB, more than the first segment's 1 MiB slots
all_reduce_sum(large)
check("grown", large, torch.full((600_000,), float(total)))

# Many calls of alternating sizes reuse both buffer parities; each must see only its own call.
failures = 0
for call in range(500):
    size = 10 + call % 7
    values = torch.full((size,), float(call * (rank + 1)))
    all_reduce_sum(values)
    failures += int(not torch.equal(values, torch.full((size,), float(call * total))))
report.append(f"repeated failures={failures}")

try:
    all_reduce_sum(torch.zeros(4, 4).t())
    report.append("non-contiguous accepted")
except ValueError:
    report.append("non-contiguous rejected")

if context.is_main:
    print("\\n".join(report))
shutdown()
"""

EXPECTED_CHECKS = [
    "float32 exact=True same_on_all_ranks=True",
    "float64 exact=True same_on_all_ranks=True",
    "grown exact=True same_on_all_ranks=True",
    "repeated failures=0",
]


def run_ranks(tmp_path: Path, allreduce: str) -> list[str]:
    script = tmp_path / "allreduce.py"
    script.write_text(SCRIPT)
    environment = {**os.environ, "SCENARIOLAB_ALLREDUCE": allreduce}
    command = [str(TORCHRUN), "--nproc-per-node", "2", "--standalone", str(script)]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_supported_only_on_one_x86_host(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert supported(world_size=2, local_world_size=2)
    assert not supported(world_size=4, local_world_size=2)  # ranks on two hosts
    assert not supported(world_size=1, local_world_size=1)
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert not supported(world_size=2, local_world_size=2)


@pytest.mark.skipif(not supported(2, 2), reason="the shared-memory path needs an x86 CPU")
def test_shared_memory_sums_exactly(tmp_path):
    lines = run_ranks(tmp_path, "")
    assert lines[0] == "allreduce=shared_memory"
    assert lines[1:5] == EXPECTED_CHECKS
    assert lines[5] == "non-contiguous rejected"


def test_gloo_fallback_sums_exactly(tmp_path):
    lines = run_ranks(tmp_path, "gloo")
    assert lines[0] == "allreduce=gloo"
    assert lines[1:5] == EXPECTED_CHECKS
    # gloo accepts strided tensors, so only the shared-memory path rejects the transposed one
    assert lines[5] == "non-contiguous accepted"

"""`eduhub bench scale` refuses worker counts it cannot run, before touching Kafka."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hub.ops.cli import app


@pytest.mark.parametrize("workers", ["x", "1,two", "0", "1,-2", ","])
def test_bench_scale_refuses_worker_counts_it_cannot_run(workers: str) -> None:
    result = CliRunner().invoke(app, ["bench", "scale", "--workers", workers])
    assert result.exit_code == 2
    assert "--workers" in result.output and "such as 1,2,3" in result.output

"""The benchmark's own bookkeeping (the timings themselves are not tested)."""

import pytest

from noisewarp import bench


def test_rounds_pool_frames_and_keep_the_largest_peak():
    first = {"method": "particle", "res": 100, "times_ms": [3.0, 1.0, 2.0], "peak_mib": 5.0}
    second = {"method": "particle", "res": 100, "times_ms": [10.0, 9.0, 8.0], "peak_mib": 7.0}
    row = bench.pool([first, second])
    assert row["times_ms"] == [3.0, 1.0, 2.0, 10.0, 9.0, 8.0]
    assert row["median_ms"] == 5.5 and row["min_ms"] == 1.0
    assert row["ns_per_pixel"] == pytest.approx(1e6 * 5.5 / 100**2)
    assert row["peak_mib"] == 7.0


def test_a_failed_round_is_reported_not_pooled():
    ok = {"method": "grid", "res": 64, "times_ms": [1.0], "peak_mib": 1.0}
    failed = {"method": "grid", "res": 64, "error": ["MemoryError"]}
    assert bench.pool([ok, failed]) is failed


@pytest.mark.parametrize("flag", ["--rounds", "--repeats"])
def test_non_positive_counts_are_rejected(flag, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--res", "32", flag, "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_an_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "nope", "--res", "16"])
    assert "unknown method(s) ['nope']" in capsys.readouterr().err


def test_a_failed_configuration_fails_the_command(monkeypatch, capsys):
    failed = {"method": "particle", "res": 16, "error": ["MemoryError"]}
    monkeypatch.setattr(bench, "_run_child", lambda *args: failed)
    assert bench.main(["--res", "16", "--repeats", "1"]) == 1


def test_paper_table_memory_counts_the_arrays_kept_between_frames():
    """The table's worker times frames, then measures memory with the kept work arrays
    released and built again: grid's resident growth must include its partition record
    (about 16 bytes per entry, ~4 entries per pixel), not just its 1 MiB output."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_table.py"
    done = subprocess.run(
        [sys.executable, str(script), "--worker", "grid", "0", "256", "near-identity", "2"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["times"]) == 2 and all(t > 0 for t in result["times"])
    output = 256 * 256 * 4 * 4
    record = result["entries"] * 16
    assert result["traced_bytes"] >= output
    assert result["peak_rss_bytes"] >= output + record // 2, result

"""``fakewatch bench --ramp``: the mechanics on a tiny clip (not a timed test: no speed is asserted)."""

from __future__ import annotations

import json

import pytest

from daemon.bench import RampStep, judge_step, max_sustained, ramp_schedule


def test_schedule_and_judgement():
    assert ramp_schedule(2, 2, 7) == [2, 4, 6]
    assert ramp_schedule(1, 1, 1) == [1]
    with pytest.raises(ValueError):
        ramp_schedule(3, 1, 2)
    good = RampStep(streams=2, target_fps=10, seconds=2.0, frames=20, faces=20, latency={"p99": 0.3})
    assert judge_step(good) == (True, "")
    slow = RampStep(streams=2, target_fps=10, seconds=2.0, frames=15, faces=15, latency={"p99": 0.3})
    assert not judge_step(slow)[0] and "analysed 7.5 fps" in judge_step(slow)[1]
    lossy = RampStep(streams=2, target_fps=10, seconds=2.0, frames=20, faces=20, drops={"stale": 3})
    assert judge_step(lossy) == (False, "dropped stale=3")
    late = RampStep(streams=2, target_fps=10, seconds=2.0, frames=20, faces=20, latency={"p99": 1.4})
    ok, why = judge_step(late)
    assert not ok and "p99 latency 1.40 s > 1 s" in why
    assert judge_step(late, max_p99_s=2.0)[0]
    late.ok = False
    assert max_sustained([good, late]) is good and max_sustained([late]) is None


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from detectors import samples

    p = tmp_path_factory.mktemp("clip") / "tiny.mp4"
    return samples.write_video(p, samples.moving_frames(samples.astronaut(), 20, (320, 180)), fps=10)


def _bench(argv):
    from daemon.cli import build_parser

    args = build_parser().parse_args(["bench", *argv])
    return args.func(args)


def test_ramp_writes_table_json_plot_and_stops_at_the_limit(tiny_clip, tmp_path, capsys):
    out = tmp_path / "ramp"
    # p99 limit of 1 us: no step can keep up, so the ramp must stop after its first step
    rc = _bench(["--ramp", "--clip", str(tiny_clip), "--fps", "2", "--ramp-start", "1", "--ramp-step", "1",
                 "--ramp-max", "3", "--seconds", "1.5", "--settle-seconds", "0.5", "--max-p99-ms", "0.001",
                 "--no-baseline", "--runtime", "cpu", "--ramp-out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    summary = json.loads((out / "ramp.json").read_text())
    assert len(summary["steps"]) == 1 and summary["max_sustained_streams"] == 0
    step = summary["steps"][0]
    assert step["ok"] is False and "p99 latency" in step["why"] and step["frames"] > 0
    assert "maximum sustained: none" in text, text
    assert (out / "ramp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| streams |" in (out / "ramp.md").read_text()


def test_ramp_runs_its_steps_with_a_generous_limit(tiny_clip, tmp_path, capsys):
    out = tmp_path / "ramp"
    rc = _bench(["--ramp", "--clip", str(tiny_clip), "--fps", "1", "--ramp-start", "1", "--ramp-step", "1",
                 "--ramp-max", "2", "--seconds", "2", "--settle-seconds", "0.5", "--max-p99-ms", "60000",
                 "--no-baseline", "--ramp-out", str(out)])
    assert rc == 0
    summary = json.loads((out / "ramp.json").read_text())
    steps = summary["steps"]
    assert 1 <= len(steps) <= 2 and [s["streams"] for s in steps] == [1, 2][: len(steps)]
    assert all(s["ok"] for s in steps[:-1])  # the ramp only stops at a failing step
    if all(s["ok"] for s in steps):  # a busy CI machine may miss the fps target: then it stopped at that step
        assert len(steps) == 2 and summary["max_sustained_streams"] == 2
        assert "the ramp's maximum" in capsys.readouterr().out
    for s in steps:
        assert s["batch_mean"]["frame"] is None or s["batch_mean"]["frame"] >= 1
        assert s["gpu_mem_mb"] is None or s["gpu_mem_mb"] > 0
    assert (out / "ramp.png").is_file()


def test_cli_runtime_choices_match_the_runtimes():
    from daemon.cli import RUNTIME_CHOICES
    from detectors.runtime import RUNTIMES

    assert set(RUNTIME_CHOICES) == set(RUNTIMES)

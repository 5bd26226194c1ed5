"""``accelerate launch -m idealagent eval``: each process runs its rank's shard into a file of its
own, and rank 0 merges them into the file one process writes; a killed rank resumes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from idealagent.errors import InputError
from idealagent.evaluation import ranks
from idealagent.evaluation.ranks import Rank, check_out, launch_rank, merge, use_own_gpu
from idealagent.evaluation.results import read_existing
from idealagent.evaluation.runner import run_eval
from tests.test_cli import assert_one_error_line
from tests.test_eval_cli import ROOT, builds, run_eval_cli  # noqa: F401  (builds is a fixture)
from tests.test_eval_runner import N_ITEMS, fake, read_lines, write_fixture  # noqa: F401  (fake is a fixture)


def same_answers(row: dict) -> tuple:
    """What a row says about its sample, without the timings that differ between runs."""
    baseline = row["baseline"] or {}
    return (row["id"], row["index"], row["prediction"], row["score"], row["confidence"], row["stop_reason"],
            row["error"], baseline.get("prediction"), baseline.get("score"))


def test_the_rank_comes_from_the_launchers_environment() -> None:
    assert launch_rank({}) is None
    assert launch_rank({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None
    rank = launch_rank({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert rank == Rank(3, 4, 1) and rank.shard == (3, 4)
    assert rank.path(Path("out/r.jsonl")) == Path("out/r.ranks/shard-3-of-4.jsonl")
    for bad in ({"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"}):
        with pytest.raises(InputError, match="RANK"):
            launch_rank(bad)


@pytest.mark.parametrize(("visible", "local", "chosen"), [
    (None, 1, "1"),  # every GPU visible: the LOCAL_RANK-th
    ("4,5", 1, "5"),  # the launcher's --gpu_ids: the LOCAL_RANK-th of those
    ("4,5", 2, "4"),  # more processes than GPUs: they take turns
    ("", 1, ""),  # no GPU allowed: stays so
])
def test_each_rank_sees_only_its_own_gpu(visible: str | None, local: int, chosen: str) -> None:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    use_own_gpu(Rank(local, 4, local), environ)
    assert environ["CUDA_VISIBLE_DEVICES"] == chosen


def test_merged_shards_are_the_single_run_and_keep_what_out_held(tmp_path: Path, fake: str) -> None:  # noqa: F811
    data = write_fixture(tmp_path / "data", n=12)
    single = run_eval("jsonl", data, out=tmp_path / "single.jsonl", preset=fake)
    assert single.n == 12
    out = tmp_path / "r.jsonl"
    paths = [Rank(i, 3, i).path(out) for i in range(3)]
    for index, path in enumerate(paths):
        run_eval("jsonl", data, out=path, preset=fake, shard=(index, 3))
    header = read_lines(paths[0])[0]
    merged = merge(out, header, paths, check_out(out, header, force=False))
    got_header, rows = read_lines(out)
    want_header, want = read_lines(tmp_path / "single.jsonl")
    assert [same_answers(r) for r in rows] == [same_answers(r) for r in want] == [same_answers(r) for r in merged]
    assert {k: v for k, v in got_header.items() if k != "started"} == {
        k: v for k, v in want_header.items() if k != "started"}
    # Merging again, with the merged file kept, changes nothing: a finished launch reruns idle.
    assert [same_answers(r) for r in merge(out, header, paths, check_out(out, header, force=False))] == [
        same_answers(r) for r in want]
    assert read_lines(out)[0] == got_header


def test_out_of_another_configuration_is_refused_before_any_rank_runs(tmp_path: Path, fake: str) -> None:  # noqa: F811
    data = write_fixture(tmp_path / "data", n=4)
    out = tmp_path / "r.jsonl"
    run_eval("jsonl", data, out=out, preset=fake, seed=1)
    header = read_lines(out)[0]
    assert check_out(out, {**header, "seed": 2}, force=True) is None
    with pytest.raises(InputError, match="another configuration.*seed"):
        check_out(out, {**header, "seed": 2}, force=False)
    assert check_out(out, header, force=False).done.keys() == read_existing(out).done.keys()


def test_shard_and_a_launchers_rank_do_not_mix(tmp_path: Path, builds, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_eval_cli(write_fixture(tmp_path / "data", n=4), tmp_path / "r.jsonl", "--shard", "1/2")
    assert_one_error_line(result, 2, "--shard", "leave it out")
    assert builds.count == 0


def test_a_bad_rank_timeout_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("IDEALAGENT_RANK_TIMEOUT_S", "soon")
    with pytest.raises(InputError, match="IDEALAGENT_RANK_TIMEOUT_S"):
        ranks.rank_timeout_s()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_give_the_single_run_and_a_killed_rank_resumes(tmp_path: Path, builds) -> None:  # noqa: F811
    pytest.importorskip("accelerate")
    data = write_fixture(tmp_path / "data", n=16)
    single = tmp_path / "single.jsonl"
    assert run_eval_cli(data, single, "--batch-size", "2").exit_code == 0
    out = tmp_path / "r.jsonl"
    # Rank 1 of an earlier launch was killed after 3 samples, in the middle of the 4th line.
    shard1 = Rank(1, 2, 1).path(out)
    assert run_eval_cli(data, shard1, "--shard", "1/2").exit_code == 0
    lines = shard1.read_bytes().splitlines(keepends=True)
    shard1.write_bytes(b"".join(lines[:4]) + lines[4][:40])
    # accelerate's --cpu starts one process (several need mpirun); --multi_gpu starts them with
    # torchrun, which on a machine without GPUs runs them on the CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "tests.eval_fake_preset",
               "eval", "jsonl", "--data", str(data), "--out", str(out), "--preset", "fake-eval", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stderr
    assert "2 processes; this one runs shard 0/2" in run.stderr
    # Rank 1 kept its 3 lines, cut the torn one, and ran the other 5.
    resumed = shard1.read_bytes().splitlines(keepends=True)
    assert resumed[:4] == lines[:4] and len(resumed) == 9
    assert len(read_lines(Rank(0, 2, 0).path(out))[1]) == 8
    header, rows = read_lines(out)
    want_header, want = read_lines(single)
    assert [same_answers(r) for r in rows] == [same_answers(r) for r in sorted(want, key=lambda r: r["index"])]
    assert header["shard"] == [0, 1] and {k: v for k, v in header.items() if k != "started"} == {
        k: v for k, v in want_header.items() if k != "started"}
    assert "16 samples (0 failed): agent 62.5%, baseline 100.0%; this run 13 in" in run.stdout

"""``python -m DTCCore spare`` as real processes: it runs one command exactly as the one-shot command does
(events, files, exit codes), initialises no CUDA while it waits, and exits by itself when its stdin closes or
its parent dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from conftest import REPO, SAMPLE_IMAGE
from DTCCore.cli.spare import parse_command
from DTCCore.errors import DTCError
from DTCCore.protocol import EXIT_CANCELLED, EXIT_OK, EXIT_USER_ERROR, SPARE_COMMANDS

EXIT_WITHIN_S = 10.0  # a waiting spare polls its parent every 0.5 s; generous for a loaded 2-core machine
WARM_UP_TIMEOUT_S = 180.0


def spawn_spare(*args, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdin", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "DTCCore", "spare", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def ready_event(process: subprocess.Popen) -> dict:
    event = json.loads(process.stdout.readline())
    assert event["event"] == "spare-ready" and event["pid"] == process.pid, event
    return event


def send(process: subprocess.Popen, argv: list[str], cwd=None, env=None) -> tuple[int, list[dict], str]:
    """Hand the spare its command; (exit status, its JSON events after spare-ready, stderr)."""
    line = json.dumps({"argv": [str(a) for a in argv], "cwd": cwd, "env": env}) + "\n"
    out, err = process.communicate(line, timeout=WARM_UP_TIMEOUT_S)  # writes the line, closes stdin, reads
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return process.returncode, events, err


def one_shot(argv: list[str]) -> tuple[int, list[dict], str]:
    run = subprocess.run([sys.executable, "-m", "DTCCore", *map(str, argv)], cwd=REPO, capture_output=True,
                         text=True, timeout=WARM_UP_TIMEOUT_S)
    return run.returncode, [json.loads(line) for line in run.stdout.splitlines() if line.strip()], run.stderr


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent to reap it counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return True  # gone between the two looks
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return not state or state.startswith("Z")  # no /proc (macOS): ask ps


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.1)
    return gone(pid)


def test_the_spare_runs_segment_exactly_as_the_one_shot_command(tiny_model_file, tmp_path):
    spare = spawn_spare("--model", tiny_model_file)  # the model loaded in advance is the one the command uses
    ready = ready_event(spare)
    assert ready["cuda_initialized"] is False  # it holds no GPU while it waits
    assert ready["model"] == str(Path(tiny_model_file).resolve())
    common = ["--model", tiny_model_file, "--device", "cpu", "--jsonl", "--whole-volume", "--threads", "1"]
    code, warm, _ = send(spare, ["segment", SAMPLE_IMAGE, "-o", tmp_path / "warm", *common], cwd=str(REPO),
                         env=dict(os.environ))
    cold_code, cold, cold_err = one_shot(["segment", SAMPLE_IMAGE, "-o", tmp_path / "cold", *common])
    assert code == cold_code == EXIT_OK, cold_err
    assert [e["event"] for e in warm] == [e["event"] for e in cold]  # no spare-ready among the job's events
    assert warm[0] == cold[0] and warm[0]["threads"] == 1  # start: device, labels, --threads applied
    warm_files, cold_files = warm[-1]["files"], cold[-1]["files"]
    assert sorted(warm_files) == sorted(cold_files)
    for kind in cold_files:
        a, b = sitk.ReadImage(warm_files[kind]), sitk.ReadImage(cold_files[kind])
        assert (sitk.GetArrayFromImage(a) == sitk.GetArrayFromImage(b)).all(), kind
        assert a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()


def test_the_spare_keeps_the_exit_codes_and_refuses_what_it_does_not_run(tiny_model_file, tmp_path):
    cancel = tmp_path / "cancel"
    cancel.touch()
    spares = [spawn_spare() for _ in range(3)]  # their imports overlap
    cancelled = send(spares[0], ["segment", SAMPLE_IMAGE, "-o", tmp_path / "out", "--model", tiny_model_file,
                                 "--device", "cpu", "--jsonl", "--cancel-file", cancel])
    missing = send(spares[1], ["rank", tmp_path / "absent.nrrd", "--model", tiny_model_file, "--device", "cpu",
                               "--jsonl"])
    refused = send(spares[2], ["train", "manifest.json", "-o", tmp_path / "run"])
    assert cancelled[0] == EXIT_CANCELLED and "cancelled" in cancelled[2]
    assert missing[0] == EXIT_USER_ERROR and "absent.nrrd does not exist" in missing[2]
    assert refused[0] == EXIT_USER_ERROR and "a spare runs info, rank, segment, not 'train'" in refused[2]
    assert [e["event"] for e in cancelled[1]] == ["spare-ready", "start"]  # read as-is here: no driver strips it


@pytest.mark.parametrize("line, problem", [
    ("not json", "not JSON"), ('["segment"]', "a list of strings"), ('{"argv": []}', "a list of strings"),
    ('{"argv": ["evaluate", "a", "b"]}', "not 'evaluate'"), ('{"argv": ["info"], "cwd": 3}', "folder path"),
    ('{"argv": ["info"], "env": {"A": 1}}', "object of strings"),
])
def test_a_malformed_command_is_named(line, problem):
    with pytest.raises(DTCError, match=problem):
        parse_command(line)


def test_the_commands_a_spare_runs_are_parsed():
    assert parse_command('{"argv": ["info", "m.pt"], "cwd": "/x", "env": {"A": "1"}}') == (["info", "m.pt"], "/x",
                                                                                          {"A": "1"})
    assert SPARE_COMMANDS == {"segment", "rank", "info"}


def test_a_waiting_spare_exits_when_its_stdin_closes():
    spare = spawn_spare()
    ready_event(spare)
    spare.stdin.close()
    assert spare.wait(EXIT_WITHIN_S) == EXIT_OK


PARENT = textwrap.dedent("""
    import subprocess, sys
    spare = subprocess.Popen([sys.executable, "-m", "DTCCore", "spare"], stdin=int(sys.argv[1]),
                             stdout=subprocess.PIPE, pass_fds=(int(sys.argv[1]),))
    print(spare.pid, flush=True)
    print(spare.stdout.readline().decode().strip(), flush=True)
    spare.wait()
""")


def test_a_waiting_spare_exits_when_its_parent_dies(tmp_path):
    """The parent is killed; the test keeps the spare's stdin open: only the parent watch can end it."""
    read_end, write_end = os.pipe()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(read_end)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, pass_fds=(read_end,))
    os.close(read_end)
    try:
        pid = int(parent.stdout.readline())
        assert json.loads(parent.stdout.readline())["event"] == "spare-ready"
        assert not gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_gone(pid, EXIT_WITHIN_S), "the spare outlived its parent"
    finally:
        os.close(write_end)
        parent.kill()

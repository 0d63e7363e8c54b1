"""`clipdistill` ends with os._exit (cli.run / cli.exit_now): what the interpreter's teardown would have written
is still written, and the exit status is the one sys.exit would give."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)


def test_open_files_threads_and_atexit_are_finished(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = _run(tmp_path, f"""
        import atexit, threading, time
        from clipdistill.cli import exit_now
        kept = open({str(out / 'reachable.txt')!r}, "w")     # never closed, still referenced
        kept.write("reachable\\n" * 1000)
        class Cycle:
            pass
        c = Cycle(); c.self = c; c.f = open({str(out / 'cycle.bin')!r}, "wb"); c.f.write(b"cycle" * 1000)
        del c       # unreachable, only a collection frees it (binary: CPython loses a text file's pending
                    # text in a collected cycle whatever the exit, bpo-17852)
        def late():
            time.sleep(0.3)
            open({str(out / 'thread.txt')!r}, "w").write("thread")
        threading.Thread(target=late).start()             # non-daemon: teardown would wait for it
        atexit.register(lambda: open({str(out / 'atexit.txt')!r}, "w").write("atexit"))
        print("to stdout", end="")                        # no newline: left in the buffer
        exit_now(3)
    """)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "to stdout"
    assert (out / "reachable.txt").read_text() == "reachable\n" * 1000
    assert (out / "cycle.bin").read_bytes() == b"cycle" * 1000
    assert (out / "thread.txt").read_text() == "thread"
    assert (out / "atexit.txt").read_text() == "atexit"


@pytest.mark.parametrize(("code", "status", "stderr"), [(None, 0, ""), (0, 0, ""), (2, 2, ""),
                                                         ("'a message'", 1, "a message\n")])
def test_status_is_what_sys_exit_gives(tmp_path, code, status, stderr):
    proc = _run(tmp_path, f"""
        from clipdistill.cli import exit_now
        exit_now({code})
    """)
    assert (proc.returncode, proc.stderr) == (status, stderr)


def test_the_command_reports_user_errors_with_status_2(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "clipdistill", "balance", "--features", str(tmp_path / "empty"),
                           "--out", str(tmp_path / "b"), "--clusters", "4"], capture_output=True, text=True,
                          timeout=300)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("error: ") and "has no manifest.json" in proc.stderr

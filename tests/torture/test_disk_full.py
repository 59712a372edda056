"""A full disk (issue 11.3): one line naming the folder, nothing stored lost, read-only
commands keep working (skipping their optional saves with a warning), and the same command
converges once there is space again.

The collection lives on a small tmpfs mounted in a private mount namespace
(``unshare --user --map-root-user --mount``): no root needed, nothing visible outside. Where
the system does not allow user namespaces the test is skipped, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image, retrieval_exe

HERE = Path(__file__).parent


def _namespaces_work() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="no user and mount namespaces here "
                    "(unshare --user --map-root-user --mount fails)")
def test_full_disk(tmp_path):
    for i in range(40):
        make_image(tmp_path / "a" / f"a{i:02d}.jpg", i, size=(320, 240))
        make_image(tmp_path / "b" / f"b{i:02d}.jpg", 100 + i, size=(320, 240))
    (tmp_path / "texts.txt").write_text("".join(f"a caption number {i}\n" for i in range(300)))
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", sys.executable,
         str(HERE / "disk_full_scenario.py"), str(tmp_path), retrieval_exe(), "3m"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(proc.stdout)
    for name, step in steps.items():
        assert "Traceback" not in step["stderr"], (name, step["stderr"])
        assert step["items"]["check"] == "ok", name
    assert steps["index a"]["rc"] == 0 and steps["index a"]["items"]["images"] == 40

    full = steps["index b (disk full)"]
    lines = [ln for ln in full["stderr"].splitlines() if ln.strip()]
    assert full["rc"] == 1 and len(lines) == 1, full["stderr"]
    assert lines[0].startswith("Error: no space left on the device of ")
    assert str(tmp_path / "small" / "col") in lines[0]
    assert full["items"]["images"] in range(40, 81)  # whole batches only, nothing lost

    for name in ("search (disk full)", "info (disk full)", "duplicates (disk full)"):
        step = steps[name]
        assert step["rc"] == 0, (name, step["stderr"])
        for line in step["stderr"].splitlines():  # at most warnings, one line each
            counted = line.endswith(("cluster", "clusters"))  # duplicates' count on stderr
            assert line.startswith("WARNING: ") or counted, (name, line)
    assert len(steps["search (disk full)"]["stdout"].splitlines()) == 4  # a header, 3 hits
    assert "WARNING: the image index is not saved" in steps["search (disk full)"]["stderr"]
    texts_full = steps["add-texts (disk full)"]
    assert texts_full["rc"] == 1 and "no space left" in texts_full["stderr"]

    again = steps["index b (space again)"]
    assert again["rc"] == 0 and again["items"]["images"] == 80, again["stderr"]
    texts = steps["add-texts (space again)"]
    assert texts["rc"] == 0 and texts["items"]["texts"] == 300, texts["stderr"]

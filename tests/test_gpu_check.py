"""The device check (benchmarks/gpu_check.py) rehearsed on CPU end to end, and the wheel slimming that lets its
wheels travel to the device machine."""

import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
NUMBER = r"\d+(?:\.\d+)?"
SUMMARY = re.compile(
    rf"gpu_check: sample {NUMBER} tok/s, full round {NUMBER} steps/s peak n/a GiB \(policy {NUMBER} GiB\), "
    rf"lora round {NUMBER} steps/s peak n/a GiB, redeploy->first sample {NUMBER} s, gpu tests \d+/\d+")


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_stage_and_ends_with_the_summary_line():
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-rehearsal"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    assert SUMMARY.fullmatch(last), last


def test_slimming_a_wheel_drops_what_the_check_never_loads_and_their_record_rows(tmp_path):
    wheel = tmp_path / "pyarrow-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    kept = ["pyarrow/__init__.py", "pyarrow/libarrow.so.2600", "pyarrow/libarrow_python.so.2600",
            "pyarrow/flight.py", "pyarrow-1.0.dist-info/METADATA"]
    dropped = ["pyarrow/libarrow_flight.so.2600", "pyarrow/_flight.cpython-312-x86_64-linux-gnu.so",
               "pyarrow/libarrow_python_flight.so.2600", "pyarrow/libarrow_s3.so.2600",
               "pyarrow/_s3fs.cpython-312-x86_64-linux-gnu.so", "pyarrow/libarrow_python.so",
               "pyarrow/libarrow_python.so.2600.1.0", "pyarrow/include/arrow/api.h", "pyarrow/tests/test_x.py"]
    record = "pyarrow-1.0.dist-info/RECORD"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in kept + dropped:
            z.writestr(name, b"x" * 1000)
        z.writestr(record, "".join(f"{name},sha256=abc,1000\n" for name in kept + dropped) + f"{record},,\n")

    assert gpu_check_module().slim_wheel(wheel) > 0

    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == sorted(kept + [record])
        rows = [line.split(",")[0] for line in z.read(record).decode().splitlines()]
    assert sorted(rows) == sorted(kept + [record])

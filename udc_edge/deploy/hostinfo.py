"""Host facts for latency reports: memory in use, a measured FP32 convolution peak, Jetson power.

Jetson power comes from ``tegrastats`` (its ``VDD_IN``/``POM_5V_IN`` rails, mW); where the
tool is absent the readings are simply not reported. ``nvpmodel -q`` gives the power mode.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

import numpy as np


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def conv_peak_gflops(threads: int = 0, repeats: int = 5) -> float | None:
    """Achieved FP32 GFLOP/s of a large 3x3 convolution in torch (oneDNN): a measured stand-in
    for the CPU's peak on the work restorers do. (A BLAS matmul is a poor probe here: an
    OPENBLAS_CORETYPE override can pin it to older kernels than the convolutions use.)
    None where torch is not installed (a runtime-only install): no peak, no "% peak"."""
    from udc_edge.core.extras import has_torch

    if not has_torch():
        return None
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        x, w = torch.rand(1, 64, 128, 128), torch.rand(64, 64, 3, 3)
        flops = 2 * 64 * 64 * 9 * 128 * 128
        with torch.inference_mode():
            torch.nn.functional.conv2d(x, w, padding=1)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                torch.nn.functional.conv2d(x, w, padding=1)
                best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return flops / best / 1e9


_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN|VIN_SYS_5V0)\s+(\d+)m?W?/(\d+)m?W?")


def parse_tegrastats_power_mw(line: str) -> float | None:
    """Board input power (mW) from one tegrastats line (JetPack 4-6 rail names)."""
    m = _RAIL.search(line)
    return float(m.group(2)) if m else None


class PowerMonitor:
    """Samples tegrastats in the background while a benchmark runs (no-op when absent)."""

    def __init__(self, interval_ms: int = 100):
        self.interval_ms = interval_ms
        self.samples: list[float] = []
        self.available = shutil.which("tegrastats") is not None
        self._proc = None
        self._thread = None

    def __enter__(self) -> PowerMonitor:  # noqa: PYI034
        if self.available:
            self._proc = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)],
                                          stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:  # type: ignore[union-attr]
            mw = parse_tegrastats_power_mw(line)
            if mw is not None:
                self.samples.append(mw)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def mean_mw(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def nvpmodel_mode() -> str | None:
    """The Jetson power mode (``nvpmodel -q``), or None off Jetson."""
    if shutil.which("nvpmodel") is None:
        return None
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)", out)
    return m.group(1) if m else out.strip() or None

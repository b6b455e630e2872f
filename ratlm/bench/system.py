"""What a benchmark ran on (CPU model and ISA flags) and how much memory a workload peaked at."""
from __future__ import annotations

import os
import platform
import re
import time

import torch

_FLAGS = {"avx2": ("avx2",), "avx512": ("avx512f",), "amx": ("amx_tile",),
          "bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def cpu_info():
    """{"model": name, "cores": n, "isa": {avx2, avx512, amx, bf16, fp16: bool}, "torch_capability": the
    vector ISA torch's kernels use (e.g. AVX512)}. bf16 means native bf16 instructions (AVX512-BF16 or
    AMX-BF16). Read from /proc/cpuinfo on Linux; elsewhere the model is platform.processor()."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = m.group(1).strip() if m else model
        m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(m.group(1).split()) if m else set()
    except OSError:
        pass
    isa = {name: any(f in flags for f in names) for name, names in _FLAGS.items()}
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        capability = None
    return {"model": model, "cores": os.cpu_count(), "isa": isa, "torch_capability": capability}


def cpu_summary(info=None):
    """One line: 'Intel(R) Xeon(R) Processor (avx512, amx, bf16; torch AVX512)'."""
    info = info or cpu_info()
    have = [k for k in ("avx512", "amx", "bf16") if info["isa"].get(k)] or [
        "avx2" if info["isa"].get("avx2") else "no avx2/avx512"]
    cap = f"; torch {info['torch_capability']}" if info.get("torch_capability") else ""
    return f"{info['model']} ({', '.join(have)}{cap})"


def _status_kib(key):
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


class PeakMemory:
    """`with PeakMemory(device) as pm: ...; pm.bytes`: the peak memory of the block above its start.

    CUDA: peak allocated bytes (torch.cuda.max_memory_allocated after a reset) minus those allocated
    at the start (`kind` "cuda_allocated"). CPU on Linux: the peak resident set size (VmHWM, reset by
    writing 5 to /proc/self/clear_refs) minus the resident set at the start ("cpu_rss"); memory the
    allocator kept from earlier work is reused without showing up, so small peaks can read low.
    Elsewhere `bytes` is None."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.kind, self.bytes, self._start = None, None, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind, self._start = "cuda_allocated", torch.cuda.memory_allocated(self.device)
        elif self.device.type == "cpu":
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._start = _status_kib("VmRSS")
                self.kind = "cpu_rss" if self._start is not None else None
            except OSError:
                self._start = None
        return self

    def __exit__(self, *exc):
        if self.kind == "cuda_allocated":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self.kind == "cpu_rss":
            peak = _status_kib("VmHWM")
            self.bytes = None if peak is None else max(0, peak - self._start)
        return False


_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def set_clock(name):
    """'wall' (default): elapsed time. 'cpu': this process's CPU time, which a shared, loaded machine
    inflates far less than elapsed time; meaningful with one torch thread (CPU only)."""
    _clock[0] = _CLOCKS[name]


def now():
    """The benchmarks' clock (see set_clock)."""
    return _clock[0]()


def _cpu_times():
    """(busy, total) jiffies of the whole machine from /proc/stat (steal counts as busy), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(seconds: float = 0.5):
    """How many cores other work kept busy over the next `seconds` (this process sleeps meanwhile; a
    virtual machine's steal time counts too), or None where /proc/stat is not available."""
    a = _cpu_times()
    time.sleep(seconds)
    b = _cpu_times()
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


BUSY_NOTE_CORES = 0.25  # other work above this many busy cores: the benchmark says its timings are suspect
_busy_at_start = [None]


def check_busy(seconds: float = 0.5):
    """Measure other work before a benchmark (`busy_cores`); returns a note for the user when it is above
    BUSY_NOTE_CORES, else None. The figure goes into the benchmark's JSON (`busy_cores_at_start`)."""
    busy = _busy_at_start[0] = busy_cores(seconds)
    if busy is None or busy <= BUSY_NOTE_CORES:
        return None
    return (f"other work kept {busy:.1f} of {os.cpu_count()} cores busy as the benchmark started: its timings "
            "will be slower and noisier than on an idle machine (ratios measured in the same run suffer less; "
            "on a shared machine --threads 1 --clock cpu helps)")


def busy_at_start():
    return _busy_at_start[0]


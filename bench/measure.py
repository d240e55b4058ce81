"""What the harness reads from /proc and how it summarises: process trees, CPU seconds, RSS, the CPU that
other users of the machine took meanwhile, medians with min-max, and the markdown table."""

import os
import statistics

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # The command name may hold spaces and parentheses: split after the last ')'.
    return s[s.rindex(")") + 2:].split()


def tree(pid):
    """`pid` and all its descendants alive now."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(_stat_fields(d)[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    """{pid: CPU clock ticks} for the pids still alive: utime+stime (all threads) plus cutime+cstime (children
    it has waited for, such as a finished load generator, or a worker a master restarted)."""
    out = {}
    for p in pids:
        try:
            f = _stat_fields(p)
            out[p] = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except (OSError, ValueError, IndexError):
            pass
    return out


class CpuMeter:
    """CPU seconds a process tree used between start() and stop(); processes born meanwhile count whole."""

    def __init__(self, *pids):
        self.pids = pids

    def _family(self):
        return [p for root in self.pids for p in tree(root)]

    def start(self):
        self.before = cpu_ticks(self._family())
        return self

    def stop(self):
        after = cpu_ticks(self._family())
        ticks = sum(t - self.before.get(p, 0) for p, t in after.items())
        return ticks / CLK_TCK


class CoreMeter:
    """CPU seconds one CPU was busy between start() and stop(), whoever ran there: for a system under test
    whose children are reaped where their times are lost (fcgiwrap ignores SIGCHLD), pinned alone to `cpu`."""

    def __init__(self, cpu):
        self.cpu = int(cpu)

    def _busy(self):
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{self.cpu} "):
                    v = [int(x) for x in line.split()[1:]]
                    return sum(v) - v[3] - v[4]
        raise RuntimeError(f"no cpu{self.cpu} in /proc/stat")

    def start(self):
        self.before = self._busy()
        return self

    def stop(self):
        return (self._busy() - self.before) / CLK_TCK


def _busy_ticks():
    """Busy clock ticks of the whole machine (all CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: everything but idle and iowait.
    return sum(v) - v[3] - v[4]


class ForeignMeter:
    """CPU seconds the machine spent outside this harness's own process tree (other users' builds) between
    start() and stop(): the number that says whether a measurement was taken under load."""

    def __init__(self):
        self.mine = CpuMeter(os.getpid())

    def start(self):
        self.mine.start()
        self.busy = _busy_ticks()
        return self

    def stop(self):
        mine = self.mine.stop()
        return max(0.0, (_busy_ticks() - self.busy) / CLK_TCK - mine)


def rss_kib(pids, field="VmRSS"):
    """Sum of a /proc/PID/status memory field (kB) over `pids`."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def reset_peak_rss(pids):
    """Resets VmHWM to the current RSS (writing 5 to clear_refs, Linux 4.0+)."""
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def loadavg():
    return os.getloadavg()[0]


# --- summarising -------------------------------------------------------------------------------------------


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_num(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def fmt_range(xs, digits=None, unit=""):
    """`median (min–max)`; one value alone when all repetitions agree or there is one."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = fmt_num(med(xs), digits)
    lo, hi = fmt_num(min(xs), digits), fmt_num(max(xs), digits)
    if lo == hi:
        return f"{m}{unit}"
    return f"{m}{unit} ({lo}–{hi})"


def ratios(rows, ref, key):
    """Per repetition: row[key] / reference[key]; rows is {name: [sample per repetition]}."""
    out = {}
    if ref not in rows:  # left out (bench/run --rows)
        return {name: [None] * len(samples) for name, samples in rows.items()}
    for name, samples in rows.items():
        out[name] = [
            (s.get(key) / r.get(key)) if (s and r and s.get(key) and r.get(key)) else None
            for s, r in zip(samples, rows[ref])
        ]
    return out


def markdown_table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out)

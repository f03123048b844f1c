"""Run sampled mutmut mutants directly (no stats pass): W worker processes, each preloads
torch and the mutated package once and forks one child per mutant that runs the given test
files with -x under MUTANT_UNDER_TEST (exit 1: killed, 0: survived, CPU limit: timeout).
Usage (in GROUP/mutants): direct.py SAMPLE_FILE WORKERS CPU_LIMIT_S TESTFILE... ; writes
SAMPLE_FILE.results (name status seconds)."""
import os
import resource
import sys
import time

sample_file, workers, cpu_limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
files = sys.argv[4:]
names = open(sample_file).read().split()
sys.path.insert(0, os.path.abspath("src"))
sys.path.insert(0, os.path.abspath("tests"))
import pytest  # noqa: E402
import torch  # noqa: E402,F401

import qlam  # noqa: E402,F401

assert qlam.__file__.startswith(os.path.abspath("src")), qlam.__file__


def child(name):
    os.environ["MUTANT_UNDER_TEST"] = name
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1), os.dup2(fd, 2)
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow and not network",
                        *files])
    os._exit(int(code))


def worker(k):
    out = open(f"{sample_file}.results.{k}", "a")
    for name in names[k::workers]:
        t0 = time.time()
        pid = os.fork()
        if pid == 0:
            child(name)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            verdict = {0: "survived", 1: "killed", 3: "killed", 5: "no-tests"}.get(code, f"exit{code}")
        else:
            verdict = "timeout" if os.WTERMSIG(status) in (24, 9) else f"signal{os.WTERMSIG(status)}"
        out.write(f"{name} {verdict} {time.time() - t0:.0f}\n")
        out.flush()
    os._exit(0)


pids = []
for k in range(workers):
    pid = os.fork()
    if pid == 0:
        worker(k)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)

"""Benchmarks (`qlam bench ...`): ``sim`` (simulator training throughput against PennyLane,
Qiskit Aer), ``memory`` (peak memory of a training step against length), ``roofline``
(recurrence FLOP/s against the machine's GEMM), ``models`` (QLAM against the baselines at
equal size), ``all`` (the four, with a README summary) and ``report``."""

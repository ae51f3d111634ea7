"""Scale benchmark of the controller: `make bench`, or `python -m bench --sizes 1000,5000,10000`.

Runs the controller as a process against the real local control plane and the fake Alibaba
Cloud (in its own process, 20 ms per KMS call), at each size on a fresh test bed, and measures
cold start, create-to-Secret latency, a quiet poll, change propagation and memory. See
`bench/run.py` for what each phase does, docs/performance.md for the results and
docs/tuning.md for what they mean for the flags. Not part of the test suite.
"""

"""Benchmark of Transformer X-Ray: the app's compute paths side by side with plain transformers
and Captum calls on the same models and inputs, start-up, first requests, throughput, memory and
input-length scaling. Run `python -m bench.run [--quick] [--hub] [--out artifacts/bench.json]`.
"""

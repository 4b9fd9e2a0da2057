"""The load generator: locust sending the trainer's generated transactions through the gateway proxy.

Deliberately empty of imports: `python -m services.loadgen` must monkey-patch with gevent before anything
else loads; the lab's client and command line for it are in lab/parts/loadgen.py. See docs/loadgen.md.
"""

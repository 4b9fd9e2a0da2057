"""The load generator: locust sending the trainer's generated transactions through the gateway proxy.

Deliberately empty of imports: `python -m services.loadgen` must monkey-patch with gevent before anything
else loads, and the lab imports `services.loadgen.client` without pulling in locust. See docs/loadgen.md.
"""

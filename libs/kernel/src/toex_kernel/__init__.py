"""toex_kernel: what every service's domain and the CLI share, and nothing of the runtime.

Regions, roles and principals, domain errors (their gRPC statuses are toex_common's), ids,
resource names, method rules, clocks, timestamps and decoding an event off the wire. A domain
module imports from here, never from toex_common (`make lint` checks it).
"""

"""Real peers for the demo, the tests and the benchmarks (no Django here).

Each launcher starts its own process on loopback with its own folders and a
free port, and stops exactly that process by PID.
"""

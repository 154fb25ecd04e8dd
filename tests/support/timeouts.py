"""The bounds every network test runs under, in one place.

A bound is not a sleep: a test that works finishes long before it. They are generous because CI
machines are shared and `make test` runs test files in parallel (two cores, several servers at
once); a test that hits one has hung, and the bound turns the hang into a failure with a trace.
"""

#: One test against one server: logins, a few stanzas each way, a room or two.
TIMEOUT = 40.0
#: A test that starts, kills or restarts worker processes (failover, the mesh, rooms moving home).
WORKERS_TIMEOUT = 120.0
#: A server process (the node supervisor and its workers) printing its listening ports; a killed
#: worker replaced by a new one.
START_TIMEOUT = 60.0

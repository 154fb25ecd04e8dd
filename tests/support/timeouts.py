"""The bounds every network test runs under, in one place.

A bound is not a sleep: a test that works finishes long before it. They are generous because CI
machines are shared and `make test` runs test files in parallel (two cores, several servers at
once); a test that hits one has hung, and the bound turns the hang into a failure with a trace.

A number written in a test instead is not a bound of the test but the check itself: "answered
before the 30 s handshake timeout" (`fail_after(5)`), or a protocol delay it waits out.
"""

#: One test against one server: logins, a few stanzas each way, a room or two.
TIMEOUT = 40.0
#: A test that starts, kills or restarts worker processes (failover, the mesh, rooms moving home).
WORKERS_TIMEOUT = 120.0
#: A server process (the node supervisor and its workers) printing its listening ports; a killed
#: worker replaced by a new one; a CLI call (a process start).
START_TIMEOUT = 60.0
#: A test that is slow by design: a flood of stanzas, a socket buffer filled up, throttled logins
#: waiting out their penalty, a dozen connections in a row, OMEMO key generation.
SLOW_TIMEOUT = 150.0

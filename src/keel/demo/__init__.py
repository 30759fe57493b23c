"""`keel demo`: realistic traffic through a running Keel, so that every page of the UI has data.

`scenario` plans what to send (seeded, no I/O), `agent` is the traced application that some of
the traffic goes through, `runner` paces the plan against Keel and counts what happened,
`client` speaks to Keel's gateway and API, `telemetry` sets up keel.sdk's tracing, and
`progress` draws the progress line. The `keel demo` command (keel.cli.demo) is the face.
"""

"""The GPU proof's own steps (.ci/gpu; docs/gpu.md): the checkpoint it
serves, the engine alone at growing batch sizes, and where a request's time
went. `python -m loadtest.bench.gpu --help` lists them; .ci/gpu runs them
between the parity tests and the load tests of the whole server."""

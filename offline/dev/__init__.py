"""Developer helpers: tiny random-weight models of real architectures for tests, demos and benchmarks without a download."""

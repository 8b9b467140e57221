"""Load generator, workloads, reports and plots for a running Brew service."""

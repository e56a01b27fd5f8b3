"""Building and timing cases: models, backends, the correctness gate, measuring, the worker process."""

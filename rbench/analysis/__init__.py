"""Reading results: loading, comparing, rendering, baselines, reports. Never imports torch, triton, rbench.hw or rbench.run."""

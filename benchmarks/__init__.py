"""featzoo's benchmarks against timm: ``python -m benchmarks`` writes ``benchmarks/RESULTS.md``."""

"""Runs jaxdet.tools.benchmark from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import benchmark

if __name__ == "__main__":
  benchmark.run()

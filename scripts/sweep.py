"""Runs jaxdet.tools.sweep from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import sweep

if __name__ == "__main__":
  sweep.run()

"""Runs jaxdet.tools.train from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import train

if __name__ == "__main__":
  train.run()

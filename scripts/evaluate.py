"""Runs jaxdet.tools.evaluate from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import evaluate

if __name__ == "__main__":
  evaluate.run()

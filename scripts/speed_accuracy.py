"""Runs jaxdet.tools.speed_accuracy from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import speed_accuracy

if __name__ == "__main__":
  speed_accuracy.run()

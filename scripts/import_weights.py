"""Runs jaxdet.tools.import_weights from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import import_weights

if __name__ == "__main__":
  import_weights.run()

"""Runs jaxdet.tools.predict from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import predict

if __name__ == "__main__":
  predict.run()

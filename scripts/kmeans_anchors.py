"""Runs jaxdet.tools.kmeans_anchors from a checkout; ``--help`` shows its usage."""
from jaxdet.tools import kmeans_anchors

if __name__ == "__main__":
  kmeans_anchors.run()

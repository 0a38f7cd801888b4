"""Nested dicts of arrays (a model's variables) as flat ``{path tuple: leaf}`` dicts and back."""


def flatten(tree, prefix=()):
  """``{path tuple: leaf}`` of nested dicts, in their order."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def unflatten(flat):
  """Nested dicts of ``{path tuple: leaf}``."""
  nested = {}
  for path, value in flat.items():
    node = nested
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return nested

"""YOLO9000's WordTree and hierarchical softmax (Redmon & Farhadi 2017, "YOLO9000: Better, Faster,
Stronger", Sec. 4 "Stronger" and Fig. 5).

The tree is host-side numpy, built once; its index arrays enter jit as constants. Node ``i`` is
output channel ``i`` of the class head, in the order of the file it came from. As in darknet's
``data/9k.tree``, a parent of ``-1`` puts a node in the top sibling set: the root itself (WordNet's
"physical object" in the paper) is implicit and has no channel. Unlike darknet, siblings need not
be contiguous in index order.

Probabilities (Sec. 4, "Hierarchical classification"): the network predicts, for every node, the
conditional ``Pr(node | parent)``, a softmax over each sibling set; the absolute probability of a
node is the product of the conditionals along its path to the root (times objectness for
detection, ``Pr(physical object) = 1``). The functions below stay in log space and are vectorized
over the whole tree and any leading dims: segment ops over the node axis, loops over depth levels
only.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class WordTree:
  """A class hierarchy; build it with :func:`from_parents` or a reader.

  Compared and hashed by identity, so a tree may be a static argument of ``jax.jit``. All arrays
  are read-only int32 (``is_leaf`` bool).
  """
  names: tuple                 # [N] str, node i's name (a WordNet id in darknet's tree)
  parents: np.ndarray          # [N] parent node, -1 for the top sibling set
  display_names: tuple = None  # [N] str, human-readable names (darknet's 9k.names); default names
  # Derived in __post_init__:
  group: np.ndarray = dataclasses.field(init=False)        # [N] sibling set; set 0 = top set
  num_groups: int = dataclasses.field(init=False)
  group_parent: np.ndarray = dataclasses.field(init=False)  # [G] parent of each set, -1 for set 0
  group_size: np.ndarray = dataclasses.field(init=False)   # [G]
  child_group: np.ndarray = dataclasses.field(init=False)  # [N] set of a node's children, or -1
  depth: np.ndarray = dataclasses.field(init=False)        # [N] top sibling set = 1
  max_depth: int = dataclasses.field(init=False)
  ancestors: np.ndarray = dataclasses.field(init=False)    # [N, max_depth] self, parent, ..., -1
  is_leaf: np.ndarray = dataclasses.field(init=False)      # [N] bool
  _index: dict = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    names = tuple(str(n) for n in self.names)
    num = len(names)
    display = names if self.display_names is None else tuple(str(n) for n in self.display_names)
    if len(display) != num:
      raise ValueError(f"{len(display)} display names for {num} tree nodes")
    parents = np.asarray(self.parents)
    if parents.shape != (num,) or (num and not np.issubdtype(parents.dtype, np.integer)):
      raise ValueError(f"parents must be {num} integers, got shape {parents.shape} "
                       f"of {parents.dtype}")
    if num == 0:
      raise ValueError("a WordTree needs at least one node")
    index = {}
    for i, name in enumerate(names):
      if name in index:
        raise ValueError(f"duplicate node name {name!r} (nodes {index[name]} and {i})")
      index[name] = i
    for i, p in enumerate(parents):
      if not -1 <= p < num:
        raise ValueError(f"node {names[i]!r} (node {i}) has parent index {p}, outside [-1, {num})")
    parents = parents.astype(np.int32)
    depth = _depths(names, parents)
    max_depth = int(depth.max())
    ancestors = np.full((num, max_depth), -1, np.int32)
    ancestors[:, 0] = np.arange(num)
    for k in range(1, max_depth):
      prev = ancestors[:, k - 1]
      ancestors[:, k] = np.where(prev >= 0, parents[np.maximum(prev, 0)], -1)
    # Sibling sets: set 0 is the top set, the others in order of first appearance.
    keys, first = np.unique(parents, return_index=True)
    keys = keys[np.argsort(first, kind="stable")]
    group_parent = np.concatenate([[-1], keys[keys >= 0]]).astype(np.int32)
    group_of_parent = np.full(num + 1, -1, np.int32)              # slot num: parent -1
    group_of_parent[group_parent] = np.arange(len(group_parent))  # -1 -> last slot
    group = group_of_parent[parents]
    child_group = group_of_parent[:num].copy()
    derived = dict(
        names=names, display_names=display, parents=parents, group=group,
        num_groups=len(group_parent), group_parent=group_parent,
        group_size=np.bincount(group, minlength=len(group_parent)).astype(np.int32),
        child_group=child_group, depth=depth, max_depth=max_depth, ancestors=ancestors,
        is_leaf=child_group < 0, _index=index)
    for key, value in derived.items():
      if isinstance(value, np.ndarray):
        value.setflags(write=False)
      object.__setattr__(self, key, value)

  def __repr__(self):
    return (f"WordTree(num_nodes={self.num_nodes}, num_groups={self.num_groups}, "
            f"max_depth={self.max_depth}, leaves={int(self.is_leaf.sum())})")

  @property
  def num_nodes(self):
    return len(self.names)

  def __len__(self):
    return len(self.names)

  def children(self, i):
    """Node indices of ``i``'s children (``i = -1``: the top sibling set), in index order."""
    return np.flatnonzero(self.parents == i).astype(np.int32)

  def index(self, name):
    """The node named ``name``; ``KeyError`` naming it if absent."""
    try:
      return self._index[name]
    except KeyError:
      raise KeyError(f"{name!r} is not a node of the tree") from None


def _depths(names, parents):
  """``[N]`` depth of every node (top set = 1); ``ValueError`` naming a node on a cycle."""
  depth = np.zeros(len(parents), np.int32)
  for start in range(len(parents)):
    chain, on_chain, j = [], set(), start
    while j >= 0 and depth[j] == 0:
      if j in on_chain:
        raise ValueError(f"node {names[j]!r} (node {j}) is its own ancestor: the parents form "
                         "a cycle")
      on_chain.add(j)
      chain.append(j)
      j = parents[j]
    d = 0 if j < 0 else depth[j]
    for k in reversed(chain):
      d += 1
      depth[k] = d
  return depth


def from_parents(names, parents, display_names=None):
  """A validated :class:`WordTree` from node names and parent indices (-1 = top sibling set).

  Raises ``ValueError`` naming the offending node for a duplicate name, a parent index out of
  range or a cycle.
  """
  return WordTree(tuple(names), np.asarray(parents), display_names)


# ----------------------------------------------------------------------------
# Construction from (node, parent) pairs and dataset classes
# ----------------------------------------------------------------------------


def from_pairs(pairs, source="pairs"):
  """A tree from ``(node, parent)`` pairs, parents by name (``None`` or ``""``: top set), node
  order = order of the pairs. Raises ``ValueError`` naming a duplicate node, a parent that is not
  a node (``source`` prefixes the message) or a node on a cycle."""
  pairs = list(pairs)
  for i, pair in enumerate(pairs):
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str)
        or not isinstance(pair[1], (str, type(None)))):
      raise ValueError(f"{source}: item {i} is not a (node, parent) pair of strings: {pair!r}")
  index = {}
  for i, (name, _) in enumerate(pairs):
    if name in index:
      raise ValueError(f"{source}: duplicate node name {name!r}")
    index[name] = i
  parents = []
  for node, parent in pairs:
    if not parent:
      parents.append(-1)
    elif parent in index:
      parents.append(index[parent])
    else:
      raise ValueError(f"{source}: parent {parent!r} of {node!r} is not a node of the tree")
  return from_parents([node for node, _ in pairs], parents)


def label_nodes(tree, class_names, label_map=None):
  """``[C]`` int32 tree node of each dataset class: ``label_map`` if given (darknet's
  ``coco9k.map``), else by exact name (``tree.names`` first, then ``tree.display_names``, which
  must be unambiguous). A class with no node is refused with a ``ValueError`` naming it."""
  class_names = [str(c) for c in class_names]
  if label_map is not None:
    label_map = np.asarray(label_map)
    if label_map.shape != (len(class_names),):
      raise ValueError(f"label map has {label_map.size} entries for {len(class_names)} classes")
    for name, node in zip(class_names, label_map):
      if not 0 <= node < tree.num_nodes:
        raise ValueError(f"class {name!r} maps to node {node}, outside the tree's "
                         f"{tree.num_nodes} nodes")
    return label_map.astype(np.int32)
  by_display = {}
  for i, name in enumerate(tree.display_names):
    by_display.setdefault(name, []).append(i)
  nodes = []
  for name in class_names:
    if name in tree._index:
      nodes.append(tree._index[name])
    elif len(by_display.get(name, ())) == 1:
      nodes.append(by_display[name][0])
    elif name in by_display:
      raise ValueError(f"class {name!r} matches {len(by_display[name])} tree display names "
                       f"(nodes {by_display[name][:5]}); give a label map")
    else:
      raise ValueError(f"class {name!r} matches no tree node (tree names: "
                       f"{', '.join(repr(n) for n in tree.names[:5])}, ...)")
  return np.asarray(nodes, np.int32)


# ----------------------------------------------------------------------------
# Hierarchical softmax (jit-compatible)
# ----------------------------------------------------------------------------


def _float(x):
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_nodes(x, tree):
  if x.shape[-1] != tree.num_nodes:
    raise ValueError(f"last axis has {x.shape[-1]} entries, the tree {tree.num_nodes} nodes")


def _with_sentinel(x, value=0):
  """``x [..., N]`` -> ``[..., N + 1]``, the last entry ``value``: index N stands for "none"."""
  return jnp.concatenate([x, jnp.full(x.shape[:-1] + (1,), value, x.dtype)], axis=-1)


def conditional_log_probs(logits, tree):
  """``log Pr(node | parent)`` ``[..., N]``: a log-softmax within each sibling set (Sec. 4, "we
  compute the softmax over all synsets that are hyponyms of the same concept", Fig. 5).

  Segment ops over the node axis, stabilized by each set's maximum; memory O(leading * N).
  Computed in float32 (or float64) whatever the logits' dtype.
  """
  x = _float(logits)
  _check_nodes(x, tree)
  x = jnp.moveaxis(x, -1, 0)                                        # [N, ...]
  group = tree.group
  set_max = jax.ops.segment_max(x, group, num_segments=tree.num_groups)
  # A set whose logits are all -inf gives -inf, not NaN, below.
  set_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(set_max), set_max, 0))
  shifted = x - set_max[group]
  log_sum = jnp.log(jax.ops.segment_sum(jnp.exp(shifted), group, num_segments=tree.num_groups))
  return jnp.moveaxis(shifted - log_sum[group], 0, -1)


@functools.lru_cache(maxsize=8)
def _depth_levels(tree):
  """Nodes sorted by depth: ``(order [N], position of each node in it [N], level bounds
  [max_depth + 1], for each level the positions of its nodes' parents within the level above)``."""
  order = np.argsort(tree.depth, kind="stable")
  position = np.empty_like(order)
  position[order] = np.arange(len(order))
  bounds = np.searchsorted(tree.depth[order], np.arange(1, tree.max_depth + 2))
  parent_in_level = [position[tree.parents[order[bounds[d]:bounds[d + 1]]]] - bounds[d - 1]
                     for d in range(1, tree.max_depth)]
  return order, position, bounds, parent_in_level


def path_log_probs(cond_log_probs, tree):
  """Absolute ``log Pr(node)`` ``[..., N]``: the sum of the conditionals along the path from the
  node up to the top set (Sec. 4: "Pr(Norfolk terrier) = Pr(Norfolk terrier | terrier) *
  Pr(terrier | hunting dog) * ... "), with ``Pr(physical object) = 1``.

  Level by level from the top: the nodes sorted by depth, each level adds its parents' values
  from the level above, so every node is visited once (a gather of N values per level instead
  would cost ``max_depth`` passes over the whole tree).
  """
  cond = _float(cond_log_probs)
  _check_nodes(cond, tree)
  order, position, bounds, parent_in_level = _depth_levels(tree)
  by_depth = jnp.take(cond, order, axis=-1)
  levels = [by_depth[..., bounds[0]:bounds[1]]]
  for depth, parents in enumerate(parent_in_level, start=1):
    level = by_depth[..., bounds[depth]:bounds[depth + 1]]
    levels.append(level + jnp.take(levels[-1], parents, axis=-1))
  return jnp.take(jnp.concatenate(levels, axis=-1), position, axis=-1)


def hierarchical_nll(logits, labels, tree):
  """``-log Pr(label)`` ``[...]`` = -sum over the label and its ancestors ``a`` of
  ``log Pr(a | parent(a))``, for ``logits [..., N]`` and int ``labels [...]`` (-1: no loss).

  A label is a positive for itself and every ancestor and for nothing below it (Sec. 4: "we take
  the label and propagate it up the tree"; "if a network sees a picture of a dog but is uncertain
  what type of dog it is, it will still predict 'dog' with high confidence"; for a coarse label
  darknet's ``delta_region_class`` stops at the label), so sibling sets off the path get no
  gradient.
  """
  cond = conditional_log_probs(logits, tree)
  num = tree.num_nodes
  paths = np.concatenate([tree.ancestors, np.full((1, tree.max_depth), -1, np.int32)])
  paths = jnp.asarray(np.where(paths >= 0, paths, num).astype(np.int32))  # [N + 1, D]
  labels = jnp.asarray(labels).astype(jnp.int32)
  path = paths[jnp.where(labels >= 0, labels, num)]                       # [..., D]
  return -jnp.sum(jnp.take_along_axis(_with_sentinel(cond), path, axis=-1), axis=-1)


def top_down_prediction(cond_log_probs, tree, threshold, log_objectness=None):
  """darknet's ``hierarchy_top_prediction`` (Sec. 4, "When performing detection ... we traverse
  the tree down, taking the highest confidence path at every split until we reach some threshold
  and we predict that object class").

  Starts at the top set with ``p = objectness`` (1 if ``log_objectness`` is None); at each set
  takes the most probable child ``c`` (the lowest index among equals); descends into ``c`` while
  ``p * Pr(c | set) > threshold`` (``p`` then takes that value), stopping at a leaf. Unlike
  darknet, which returns the top set's best node even below threshold, nothing passing gives -1;
  and darknet's region layer calls it on absolute probabilities (after ``hierarchy_predictions``)
  without objectness, where this follows the paper: conditionals, scaled by objectness.

  Args:
    cond_log_probs: ``[..., N]`` from :func:`conditional_log_probs`.
    threshold: a scalar (may be traced).
    log_objectness: ``[...]`` (or broadcastable) log objectness, optional.
  Returns:
    ``(node [...] int32`` the deepest accepted node or -1, ``path [..., max_depth] int32`` the
    accepted nodes top-down padded with -1, ``probability [...]`` its ``p``, 0 for -1).
  """
  cond = _float(cond_log_probs)
  _check_nodes(cond, tree)
  lead = cond.shape[:-1]
  num, num_groups, group = tree.num_nodes, tree.num_groups, tree.group
  # Best child of every sibling set, once: its conditional and its (first) index.
  x = jnp.moveaxis(cond, -1, 0)
  set_max = jax.ops.segment_max(x, group, num_segments=num_groups)      # [G, ...]
  ids = jnp.arange(num, dtype=jnp.int32).reshape((num,) + (1,) * len(lead))
  set_best = jax.ops.segment_min(jnp.where(x == set_max[group], ids, num), group,
                                 num_segments=num_groups)
  set_max, set_best = jnp.moveaxis(set_max, 0, -1), jnp.moveaxis(set_best, 0, -1)
  # The set below each node; slot N (no node yet) -> the top set 0; leaves -> -1.
  below = jnp.asarray(np.concatenate([tree.child_group, [0]]).astype(np.int32))
  p = jnp.ones(lead, cond.dtype)
  if log_objectness is not None:
    p = jnp.broadcast_to(jnp.exp(_float(log_objectness)), lead).astype(cond.dtype)
  node = jnp.full(lead, -1, jnp.int32)
  active = jnp.ones(lead, bool)
  path = []
  for _ in range(tree.max_depth):
    current = below[jnp.where(node >= 0, node, num)]
    at = jnp.maximum(current, 0)[..., None]
    child = jnp.take_along_axis(set_best, at, axis=-1)[..., 0]
    p_child = p * jnp.exp(jnp.take_along_axis(set_max, at, axis=-1)[..., 0])
    active = active & (current >= 0) & (p_child > threshold)
    node = jnp.where(active, child, node)
    p = jnp.where(active, p_child, p)
    path.append(jnp.where(active, child, -1))
  return node, jnp.stack(path, axis=-1), jnp.where(node >= 0, p, 0)

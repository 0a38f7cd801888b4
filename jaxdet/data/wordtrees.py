"""Where WordTrees come from: darknet's files (``9k.tree``, ``9k.names``, ``coco9k.map``), files
of (node, parent) pairs, WordNet (the paper's construction, YOLO9000 Sec. 4), and a synthetic tree
shaped like darknet's 9k.tree, a generated stand-in for the file jaxdet cannot ship (like
:mod:`jaxdet.data.digit_scenes` for images). The tree itself and its jit functions are
:mod:`jaxdet.ops.wordtree`."""
import json
import re

import numpy as np

from jaxdet.ops import wordtree

# Nodes per depth (top sibling set = depth 1) of darknet's data/9k.tree (pjreddie/darknet, the
# YOLO9000 WordTree: 9418 nodes, max depth 17), measured once from that file.
DARKNET_9K_NODES_PER_DEPTH = (4, 18, 60, 161, 480, 1027, 1613, 1708, 1231, 918, 734, 580, 402,
                              228, 183, 61, 10)
# Nodes with children per depth in the same file (1845 internal nodes, so 1846 sibling sets).
DARKNET_9K_INTERNAL_PER_DEPTH = (4, 13, 26, 65, 131, 295, 344, 284, 194, 146, 135, 101, 47, 36,
                                 21, 3, 0)



def _lines(path):
  """``(line number, stripped line)`` of the non-blank lines of a text file."""
  with open(path, encoding="utf-8") as f:
    return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]


def read_darknet_tree(tree_path, names_path=None):
  """darknet's tree format (``data/9k.tree``): one ``<name> <parent index>`` a line, -1 for the
  top sibling set; blank lines ignored. ``names_path``: darknet's ``data/9k.names``, one display
  name per (non-blank) line in the same order."""
  names, parents = [], []
  for number, line in _lines(tree_path):
    fields = line.split()
    if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
      raise ValueError(f"{tree_path}:{number}: expected '<name> <parent index>', got {line!r}")
    names.append(fields[0])
    parents.append(int(fields[1]))
  display = None
  if names_path is not None:
    display = [line for _, line in _lines(names_path)]
    if len(display) != len(names):
      raise ValueError(f"{names_path} has {len(display)} names but {tree_path} has "
                       f"{len(names)} nodes")
  return wordtree.from_parents(names, np.asarray(parents, np.int64), display)


def read_pairs(path):
  """A tree from ``(node, parent)`` pairs with parents referenced by name, node order = file
  order: a JSON list of ``[node, parent]`` (parent ``null`` or ``""`` for the top set), or a text
  file of ``node parent`` lines (parent ``-`` for the top set). The format is sniffed: JSON when
  the file starts with ``[``."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if text.lstrip().startswith("["):
    return wordtree.from_pairs(json.loads(text), str(path))
  pairs = []
  for number, line in enumerate(text.splitlines(), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2:
      raise ValueError(f"{path}:{number}: expected '<node> <parent>', got {line.strip()!r}")
    pairs.append((fields[0], None if fields[1] == "-" else fields[1]))
  return wordtree.from_pairs(pairs, str(path))


def from_hypernym_paths(paths_by_noun, nouns):
  """The paper's WordTree construction from WordNet (Sec. 4, "Hierarchical classification").

  ``paths_by_noun[noun]`` lists the noun's hypernym paths, each a list of synset names from the
  root (e.g. ``"entity.n.01"``) down to the noun itself. First every noun with a single path adds
  its whole path, in the order of ``nouns``; then every other noun, in order, adds the one of its
  paths that adds the fewest new nodes to the tree so far ("we choose the shorter path", ties: the
  first). The root shared by all paths becomes the implicit root, not a node.

  WordNet is a graph: a chosen path may reach a node already in the tree through a different
  parent. The tree keeps the first parent (edge) it saw and ignores the new one, so every node has
  exactly one parent. Node order = order of insertion (parents before children).
  """
  nouns = list(nouns)
  if not nouns:
    raise ValueError("no nouns to build a tree from")
  for noun in nouns:
    paths = paths_by_noun[noun] if noun in paths_by_noun else None
    if not paths:
      raise ValueError(f"noun {noun!r} has no hypernym path")
    for path in paths:
      if len(path) < 2 or path[-1] != noun:
        raise ValueError(f"hypernym path {list(path)!r} of {noun!r} must run from the root down "
                         "to the noun itself")
  roots = {path[0] for noun in nouns for path in paths_by_noun[noun]}
  if len(roots) != 1:
    raise ValueError(f"hypernym paths do not share one root: {sorted(roots)}")
  (root,) = roots
  parent_of = {}  # node -> parent name (None = top set); dict order = insertion order

  def new_nodes(path):
    return sum(1 for node in path[1:] if node not in parent_of)

  def add(path):
    for parent, node in zip(path[:-1], path[1:]):
      if node == root:
        raise ValueError(f"the root {root!r} appears inside the path {list(path)!r}")
      parent_of.setdefault(node, None if parent == root else parent)

  for noun in nouns:
    if len(paths_by_noun[noun]) == 1:
      add(paths_by_noun[noun][0])
  for noun in nouns:
    paths = paths_by_noun[noun]
    if len(paths) > 1:
      add(min(paths, key=new_nodes))  # min keeps the first of equals
  return wordtree.from_pairs(parent_of.items(), "hypernym paths")


_NLTK_HELP = ("WordNet needs nltk and its corpus: `pip install nltk` and "
              "`python -m nltk.downloader wordnet`")


def wordnet_hypernym_paths(wnids, wordnet=None):
  """``paths_by_noun`` for :func:`from_hypernym_paths` from WordNet ids (``"n01440764"``).

  Uses nltk's WordNet corpus unless ``wordnet`` (an object with nltk's
  ``synset_from_pos_and_offset``) is given. Each path lists synset names (``synset.name()``) from
  the root down; a synset that is itself one of ``wnids`` is named by its wnid instead, so a
  requested noun is the same node whether it ends its own path or lies on another noun's.
  """
  if wordnet is None:
    try:
      from nltk.corpus import wordnet
    except ImportError as e:
      raise ImportError(_NLTK_HELP) from e
  synsets = {}
  for wnid in wnids:
    match = re.fullmatch(r"([nvasr])(\d{8})", wnid)
    if match is None:
      raise ValueError(f"{wnid!r} is not a WordNet id like 'n01440764'")
    try:
      synsets[wnid] = wordnet.synset_from_pos_and_offset(match.group(1), int(match.group(2)))
    except LookupError as e:  # nltk installed, corpus not downloaded
      raise LookupError(_NLTK_HELP) from e
  wnid_of = {synset.name(): wnid for wnid, synset in synsets.items()}
  return {wnid: [[wnid_of.get(s.name(), s.name()) for s in path]
                 for path in synset.hypernym_paths()]
          for wnid, synset in synsets.items()}


def read_label_map(path):
  """darknet's label map (``data/coco9k.map``): line i holds the tree node of dataset class i."""
  nodes = []
  for number, line in _lines(path):
    if not re.fullmatch(r"-?\d+", line):
      raise ValueError(f"{path}:{number}: expected one integer tree index, got {line!r}")
    nodes.append(int(line))
  return np.asarray(nodes, np.int32)


def synthetic_tree(num_nodes=9418, seed=0):
  """A deterministic random tree shaped like darknet's 9k.tree, for tests and benchmarks.

  Nodes per depth and nodes with children per depth follow ``DARKNET_9K_*_PER_DEPTH`` (scaled to
  ``num_nodes``; exact at 9418). The parents of each depth are a random subset of the level above;
  every parent gets two children (one where the level is too small) and the rest are spread with
  Pareto(1.8) weights, giving few huge sibling sets and many small ones (9k.tree: 1846 sets, median
  3, max 149). Nodes are depth-major, siblings interleaved (not contiguous). Names: ``"s00000"``...
  """
  if num_nodes < 1:
    raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
  profile = np.asarray(DARKNET_9K_NODES_PER_DEPTH, np.float64)
  levels = min(len(profile), num_nodes)
  quota = profile[:levels] * num_nodes / profile[:levels].sum()
  counts = np.maximum(np.floor(quota).astype(np.int64), 1)
  while counts.sum() < num_nodes:  # largest remainder first
    counts[np.argmax(quota - counts)] += 1
  while counts.sum() > num_nodes:  # undo the minimum-1 bumps on the largest levels
    counts[np.argmax(counts)] -= 1
  rng = np.random.default_rng(seed)
  parents = [np.full(counts[0], -1, np.int64)]
  start = 0  # first node of the previous level
  for d in range(1, levels):
    above, below = int(counts[d - 1]), int(counts[d])
    ratio = DARKNET_9K_INTERNAL_PER_DEPTH[d - 1] / DARKNET_9K_NODES_PER_DEPTH[d - 1]
    num_parents = int(np.clip(round(ratio * above), 1, min(above, below)))
    chosen = start + rng.choice(above, num_parents, replace=False)
    base = 2 if below >= 2 * num_parents else 1
    weights = rng.pareto(1.8, num_parents) + 1e-3
    sizes = base + rng.multinomial(below - base * num_parents, weights / weights.sum())
    parents.append(rng.permutation(np.repeat(chosen, sizes)))
    start += above
  names = [f"s{i:05d}" for i in range(num_nodes)]
  return wordtree.from_parents(names, np.concatenate(parents))


def load_tree(tree_config):
  """The WordTree of ``model.tree``: inline ``pairs`` of (node, parent name or ""), or a
  ``file`` in darknet's format (``9k.tree``, optional ``names_file``) or of pairs."""
  if tree_config.pairs and tree_config.file:
    raise ValueError("set model.tree.pairs or model.tree.file, not both")
  if tree_config.pairs:
    return wordtree.from_pairs([tuple(p) for p in tree_config.pairs])
  if not tree_config.file:
    raise ValueError("YOLO9000 needs a WordTree: set model.tree.file (darknet's 9k.tree or a "
                     "JSON/text list of (node, parent) pairs) or model.tree.pairs. darknet's "
                     "tree, names and COCO map are data/9k.tree, data/9k.names and "
                     "data/coco9k.map of https://github.com/pjreddie/darknet: "
                     "--config.model.tree.file=9k.tree --config.model.tree.names_file=9k.names "
                     "--config.model.class_map_file=coco9k.map")
  if tree_config.format == "darknet":
    return read_darknet_tree(tree_config.file, tree_config.names_file or None)
  if tree_config.format == "pairs":
    return read_pairs(tree_config.file)
  raise ValueError(f"unknown model.tree.format {tree_config.format!r}; use 'darknet' or 'pairs'")


def class_nodes(tree, class_names, map_file):
  """Tree nodes of a dataset's classes: a darknet ``.map`` file if given, else by name."""
  label_map = read_label_map(map_file) if map_file else None
  return wordtree.label_nodes(tree, class_names, label_map)

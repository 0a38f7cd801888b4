"""WordTree readers and the hierarchical softmax against hand-written arrays and float64
plain-Python oracles that walk ``parents`` node by node (never the tree's derived arrays)."""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.ops import wordtree

# Hand-drawn tree; siblings deliberately not contiguous (cat, tree, dog).
#   top: animal, plant;  animal: cat, dog;  dog: terrier, hound;  plant: tree
HAND_NAMES = ("animal", "plant", "cat", "tree", "dog", "terrier", "hound")
HAND_PARENTS = (-1, -1, 0, 1, 0, 4, 4)


@pytest.fixture(scope="module")
def hand():
  return wordtree.from_parents(HAND_NAMES, HAND_PARENTS)


@pytest.fixture(scope="module")
def small():
  return wordtree.synthetic_tree(500, seed=3)


@pytest.fixture(scope="module")
def full():
  return wordtree.synthetic_tree()


# ----------------------------------------------------------------------------
# Oracles: float64, loops over nodes, from the parent list only.
# ----------------------------------------------------------------------------


def sibling_sets(parents):
  sets = {}
  for i, p in enumerate(parents):
    sets.setdefault(int(p), []).append(i)
  return sets


def ref_conditional(logits, parents):
  x = np.asarray(logits, np.float64)
  out = np.empty_like(x)
  for members in sibling_sets(parents).values():
    z = x[..., members]
    z = z - z.max(axis=-1, keepdims=True)
    out[..., members] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
  return out


def path_to_top(i, parents):
  path = []
  while i >= 0:
    path.append(i)
    i = int(parents[i])
  return path


def ref_path(cond, parents):
  out = np.zeros_like(cond)
  for i in range(len(parents)):
    for a in path_to_top(i, parents):
      out[..., i] += cond[..., a]
  return out


def ref_nll(logits, labels, parents):
  cond = ref_conditional(logits, parents)
  out = np.zeros(labels.shape)
  for idx in np.ndindex(labels.shape):
    if labels[idx] >= 0:
      out[idx] = -sum(cond[idx + (a,)] for a in path_to_top(int(labels[idx]), parents))
  return out


def ref_top_down(cond_row, parents, threshold, p=1.0):
  """One position: returns (node, path, probability)."""
  sets = sibling_sets(parents)
  node, path, members = -1, [], sets[-1]
  while members:
    best = max(members, key=lambda j: (cond_row[j], -j))   # first among equals
    if p * np.exp(cond_row[best]) <= threshold:         # darknet: descend while p > thresh
      break
    p *= np.exp(cond_row[best])
    node = best
    path.append(best)
    members = sets.get(best, [])
  return node, path, (p if node >= 0 else 0.0)


def random_logits(shape, scale=3.0, seed=0):
  return np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32)


# ----------------------------------------------------------------------------
# Tree structure and readers
# ----------------------------------------------------------------------------


def test_derived_arrays_of_hand_tree(hand):
  np.testing.assert_array_equal(hand.parents, HAND_PARENTS)
  # Sets: 0 = top, then by first appearance: animal's (cat), plant's (tree), dog's (terrier).
  np.testing.assert_array_equal(hand.group, [0, 0, 1, 2, 1, 3, 3])
  assert hand.num_groups == 4
  np.testing.assert_array_equal(hand.group_parent, [-1, 0, 1, 4])
  np.testing.assert_array_equal(hand.group_size, [2, 2, 1, 2])
  np.testing.assert_array_equal(hand.child_group, [1, 2, -1, -1, 3, -1, -1])
  np.testing.assert_array_equal(hand.depth, [1, 1, 2, 2, 2, 3, 3])
  assert hand.max_depth == 3
  np.testing.assert_array_equal(hand.ancestors, [[0, -1, -1], [1, -1, -1], [2, 0, -1],
                                                 [3, 1, -1], [4, 0, -1], [5, 4, 0], [6, 4, 0]])
  np.testing.assert_array_equal(hand.is_leaf, [0, 0, 1, 1, 0, 1, 1])
  np.testing.assert_array_equal(hand.children(0), [2, 4])
  np.testing.assert_array_equal(hand.children(-1), [0, 1])
  assert hand.children(5).size == 0
  assert hand.index("dog") == 4 and len(hand) == hand.num_nodes == 7
  assert hand.display_names == HAND_NAMES
  with pytest.raises(KeyError, match="wolf"):
    hand.index("wolf")
  for array in (hand.parents, hand.group, hand.depth, hand.ancestors):
    assert array.dtype == np.int32 and not array.flags.writeable


def test_ancestors_match_parent_walk(small):
  for i in range(small.num_nodes):
    path = path_to_top(i, small.parents)
    assert small.depth[i] == len(path)
    np.testing.assert_array_equal(small.ancestors[i], path + [-1] * (small.max_depth - len(path)))


@pytest.mark.parametrize("names, parents, match", [
    (("a", "b", "a"), (-1, 0, 0), "duplicate node name 'a'"),
    (("a", "b"), (-1, 2), "'b'.*parent index 2"),
    (("a", "b"), (-1, -2), "'b'.*parent index -2"),
    (("a", "b", "c"), (-1, 2, 1), "'[bc]'.*cycle"),
    (("a", "b"), (-1, 1), "'b'.*cycle"),
])
def test_from_parents_errors_name_the_node(names, parents, match):
  with pytest.raises(ValueError, match=match):
    wordtree.from_parents(names, parents)


def test_darknet_tree_round_trip(tmp_path, hand):
  tree_file = tmp_path / "hand.tree"
  tree_file.write_text("".join(f"{n} {p}\n" for n, p in zip(HAND_NAMES, HAND_PARENTS))
                       .replace("cat 0\n", "cat 0\n\n"))            # a blank line is ignored
  names_file = tmp_path / "hand.names"
  display = ["Animal", "Plant", "house cat", "Tree", "Dog", "terrier", "hound dog"]
  names_file.write_text("\n".join(display) + "\n")
  tree = wordtree.read_darknet_tree(tree_file, names_path=names_file)
  assert tree.names == HAND_NAMES and tree.display_names == tuple(display)
  np.testing.assert_array_equal(tree.parents, HAND_PARENTS)
  np.testing.assert_array_equal(tree.group, hand.group)
  assert wordtree.read_darknet_tree(tree_file).display_names == HAND_NAMES


def test_darknet_tree_errors(tmp_path):
  path = tmp_path / "bad.tree"
  path.write_text("a -1\nb 0\nc zero\n")
  with pytest.raises(ValueError, match=r":3: .*'c zero'"):
    wordtree.read_darknet_tree(path)
  path.write_text("a -1\nb 5\n")
  with pytest.raises(ValueError, match="'b'"):
    wordtree.read_darknet_tree(path)
  path.write_text("a -1\nb 0\n")
  names = tmp_path / "bad.names"
  names.write_text("A\n")
  with pytest.raises(ValueError, match="1 names but .* 2 nodes"):
    wordtree.read_darknet_tree(path, names_path=names)


def test_read_pairs_json_and_text(tmp_path):
  pairs = [["animal", None], ["plant", ""], ["cat", "animal"], ["tree", "plant"],
           ["dog", "animal"], ["terrier", "dog"], ["hound", "dog"]]
  (tmp_path / "t.json").write_text(json.dumps(pairs))
  (tmp_path / "t.txt").write_text("animal -\nplant -\n\ncat animal\ntree plant\ndog animal\n"
                                  "terrier dog\nhound dog\n")
  for name in ("t.json", "t.txt"):
    tree = wordtree.read_pairs(tmp_path / name)
    assert tree.names == HAND_NAMES
    np.testing.assert_array_equal(tree.parents, HAND_PARENTS)


def test_from_pairs_inline():
  tree = wordtree.from_pairs([("even", ""), ("odd", None), ("2", "even"), ("3", "odd"),
                              ("4", "even")])
  assert tree.names == ("even", "odd", "2", "3", "4")
  np.testing.assert_array_equal(tree.parents, [-1, -1, 0, 1, 0])
  with pytest.raises(ValueError, match="item 1 .*'ab'"):
    wordtree.from_pairs([("a", ""), "ab"])
  with pytest.raises(ValueError, match="parent 'three' of '3'"):
    wordtree.from_pairs([("odd", ""), ("3", "three")])


def test_read_pairs_parent_may_come_later(tmp_path):
  (tmp_path / "t.txt").write_text("pug dog\ndog -\n")
  tree = wordtree.read_pairs(tmp_path / "t.txt")
  assert tree.names == ("pug", "dog")
  np.testing.assert_array_equal(tree.parents, [1, -1])


@pytest.mark.parametrize("text, match", [
    ("animal -\ncat animal\ncat -\n", "duplicate node name 'cat'"),
    ("animal -\ncat mammal\n", "parent 'mammal' of 'cat'"),
    ("a b\nb a\n", "'[ab]'.*cycle"),
    ("animal -\ncat animal extra\n", r":2: .*cat animal extra"),
    ('[["animal", null], ["cat"]]', "item 1"),
    ('[["animal", null], ["cat", "felid"]]', "'felid'"),
])
def test_read_pairs_errors(tmp_path, text, match):
  (tmp_path / "bad").write_text(text)
  with pytest.raises(ValueError, match=match):
    wordtree.read_pairs(tmp_path / "bad")


def test_label_map_and_label_nodes(tmp_path, hand):
  (tmp_path / "coco.map").write_text("4\n2\n\n3\n")
  label_map = wordtree.read_label_map(tmp_path / "coco.map")
  np.testing.assert_array_equal(label_map, [4, 2, 3])
  assert label_map.dtype == np.int32
  classes = ["dog", "cat", "tree"]
  np.testing.assert_array_equal(wordtree.label_nodes(hand, classes, label_map), [4, 2, 3])
  np.testing.assert_array_equal(wordtree.label_nodes(hand, classes), [4, 2, 3])
  with pytest.raises(ValueError, match="3 entries for 2 classes"):
    wordtree.label_nodes(hand, classes[:2], label_map)
  with pytest.raises(ValueError, match="'tree' maps to node 7"):
    wordtree.label_nodes(hand, classes, [4, 2, 7])
  with pytest.raises(ValueError, match="class 'horse' matches no tree node.*'animal'"):
    wordtree.label_nodes(hand, ["dog", "horse"])
  (tmp_path / "bad.map").write_text("1\ntwo\n")
  with pytest.raises(ValueError, match=r":2: .*'two'"):
    wordtree.read_label_map(tmp_path / "bad.map")


def test_label_nodes_by_display_name():
  tree = wordtree.from_parents(["n1", "n2", "n3", "n4"], [-1, -1, 0, 1],
                               display_names=["animal", "plant", "crane", "crane"])
  np.testing.assert_array_equal(wordtree.label_nodes(tree, ["plant", "n3"]), [1, 2])
  with pytest.raises(ValueError, match="'crane' matches 2"):
    wordtree.label_nodes(tree, ["crane"])


# ----------------------------------------------------------------------------
# WordNet construction (Sec. 4)
# ----------------------------------------------------------------------------

ROOT = "entity.n.01"


def test_from_hypernym_paths_prefers_the_path_adding_fewest_nodes():
  paths = {
      # Two paths: via object/pet adds 3 new nodes (object, pet, dog), via the animal branch
      # only dog itself, once cat's single path is in the tree.
      "dog": [[ROOT, "object", "pet", "dog"], [ROOT, "organism", "animal", "dog"]],
      "cat": [[ROOT, "organism", "animal", "feline", "cat"]],
      # Reaches animal through another parent: animal keeps its first parent, organism.
      "horse": [[ROOT, "living_thing", "animal", "horse"]],
  }
  tree = wordtree.from_hypernym_paths(paths, ["dog", "cat", "horse"])
  # Single-path nouns first (cat, horse), whatever the order; then dog.
  assert tree.names == ("organism", "animal", "feline", "cat", "living_thing", "horse", "dog")
  np.testing.assert_array_equal(tree.parents, [-1, 0, 1, 2, -1, 1, 1])


def test_from_hypernym_paths_ties_take_the_first_path():
  paths = {"dog": [[ROOT, "object", "dog"], [ROOT, "animal", "dog"]],
           "pug": [[ROOT, "animal", "dog", "pug"], [ROOT, "toy", "pug"]]}
  # dog: both paths add 2 -> the first (object); then pug: via animal adds animal + pug = 2
  # (dog exists, keeps parent object), via toy adds toy + pug = 2 -> first again.
  tree = wordtree.from_hypernym_paths(paths, ["dog", "pug"])
  assert tree.names == ("object", "dog", "animal", "pug")
  np.testing.assert_array_equal(tree.parents, [-1, 0, -1, 1])


@pytest.mark.parametrize("paths, match", [
    ({"dog": []}, "'dog' has no hypernym path"),
    ({"dog": [[ROOT, "animal", "canine"]]}, "of 'dog'"),
    ({"dog": [[ROOT, "dog"]], "cat": [["thing", "cat"]]}, "one root"),
])
def test_from_hypernym_paths_errors(paths, match):
  with pytest.raises(ValueError, match=match):
    wordtree.from_hypernym_paths(paths, list(paths))
  with pytest.raises(ValueError, match="'wolf'"):
    wordtree.from_hypernym_paths({}, ["wolf"])


class FakeSynset:
  def __init__(self, name, paths=()):
    self._name, self._paths = name, paths

  def name(self):
    return self._name

  def hypernym_paths(self):
    return self._paths


class FakeWordNet:
  def __init__(self, synsets):
    self._synsets = synsets

  def synset_from_pos_and_offset(self, pos, offset):
    if (pos, offset) not in self._synsets:
      raise LookupError("Resource wordnet not found.")
    return self._synsets[(pos, offset)]


def test_wordnet_adapter_with_a_fake_wordnet():
  entity, animal = FakeSynset("entity.n.01"), FakeSynset("animal.n.01")
  dog, pug = FakeSynset("dog.n.01"), FakeSynset("pug.n.01")
  dog._paths, pug._paths = [[entity, animal, dog]], [[entity, animal, dog, pug]]
  fake = FakeWordNet({("n", 2084071): dog, ("n", 2110958): pug})
  paths = wordtree.wordnet_hypernym_paths(["n02110958", "n02084071"], wordnet=fake)
  # A requested synset is named by its wnid everywhere, also inside another noun's path.
  assert paths == {"n02110958": [["entity.n.01", "animal.n.01", "n02084071", "n02110958"]],
                   "n02084071": [["entity.n.01", "animal.n.01", "n02084071"]]}
  tree = wordtree.from_hypernym_paths(paths, ["n02110958", "n02084071"])
  assert tree.names == ("animal.n.01", "n02084071", "n02110958")
  np.testing.assert_array_equal(tree.parents, [-1, 0, 1])
  with pytest.raises(LookupError, match="nltk.downloader wordnet"):
    wordtree.wordnet_hypernym_paths(["n00000001"], wordnet=fake)
  with pytest.raises(ValueError, match="'dog.n.01'"):
    wordtree.wordnet_hypernym_paths(["dog.n.01"], wordnet=fake)


def test_wordnet_adapter_without_nltk_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "nltk", None)
  monkeypatch.setitem(sys.modules, "nltk.corpus", None)
  with pytest.raises(ImportError, match="pip install nltk.*nltk.downloader wordnet"):
    wordtree.wordnet_hypernym_paths(["n02084071"])


# ----------------------------------------------------------------------------
# Synthetic 9k-shaped tree
# ----------------------------------------------------------------------------


def test_synthetic_tree_has_the_9k_profile(full):
  assert full.num_nodes == 9418 == sum(wordtree.DARKNET_9K_NODES_PER_DEPTH)
  assert full.max_depth == 17
  depth = [path_to_top(i, full.parents) for i in range(full.num_nodes)]
  counts = np.bincount([len(p) for p in depth])[1:]
  np.testing.assert_array_equal(counts, wordtree.DARKNET_9K_NODES_PER_DEPTH)
  internal = np.bincount(full.depth[np.unique(full.parents[full.parents >= 0])], minlength=18)
  np.testing.assert_array_equal(internal[1:], wordtree.DARKNET_9K_INTERNAL_PER_DEPTH)
  sizes = np.bincount(full.parents + 1)
  assert full.num_groups == 1846 and np.median(sizes) <= 4 and sizes.max() >= 40
  again = wordtree.synthetic_tree()
  np.testing.assert_array_equal(again.parents, full.parents)
  assert again.names == full.names
  assert not np.array_equal(wordtree.synthetic_tree(seed=1).parents, full.parents)


@pytest.mark.parametrize("num_nodes", [1, 5, 17, 50, 500])
def test_synthetic_tree_scales(num_nodes):
  tree = wordtree.synthetic_tree(num_nodes)
  assert tree.num_nodes == num_nodes and tree.max_depth == min(num_nodes, 17)


# ----------------------------------------------------------------------------
# Hierarchical softmax
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("tree_name", ["hand", "small"])
def test_conditional_and_path_log_probs_match_loops(tree_name, request):
  tree = request.getfixturevalue(tree_name)
  logits = random_logits((2, 3, tree.num_nodes), seed=1)
  cond = jax.jit(wordtree.conditional_log_probs, static_argnums=1)(logits, tree)
  want_cond = ref_conditional(logits, tree.parents)
  np.testing.assert_allclose(cond, want_cond, rtol=1e-5, atol=1e-5)
  absolute = jax.jit(lambda c: wordtree.path_log_probs(c, tree))(cond)
  np.testing.assert_allclose(absolute, ref_path(want_cond, tree.parents), rtol=1e-5, atol=2e-5)
  # Each sibling set sums to 1; Pr(parent) = sum of Pr(children) (Sec. 4).
  prob, cond_prob = np.exp(np.asarray(absolute, np.float64)), np.exp(np.asarray(cond, np.float64))
  for parent, members in sibling_sets(tree.parents).items():
    np.testing.assert_allclose(cond_prob[..., members].sum(-1), 1, rtol=1e-5)
    top = 1.0 if parent < 0 else prob[..., parent]
    np.testing.assert_allclose(prob[..., members].sum(-1), top, rtol=1e-4, atol=1e-6)


def test_hand_values():
  tree = wordtree.from_parents(HAND_NAMES, HAND_PARENTS)
  logits = np.log([[0.9, 0.1, 0.2, 1.0, 0.8, 0.6, 0.4]]) + 5.0  # a shift per row changes nothing
  absolute = np.exp(wordtree.path_log_probs(wordtree.conditional_log_probs(logits, tree), tree))
  # Pr(terrier) = 0.6 * 0.8 * 0.9; Pr(tree) = 1 * 0.1.
  np.testing.assert_allclose(absolute[0], [0.9, 0.1, 0.18, 0.1, 0.72, 0.432, 0.288], rtol=1e-5)
  nll = wordtree.hierarchical_nll(logits, np.array([5]), tree)
  np.testing.assert_allclose(nll, [-np.log(0.432)], rtol=1e-5)


def test_full_tree_numerics_with_large_logits(full):
  logits = random_logits((2, 5, full.num_nodes), scale=30.0, seed=2)
  logits[0, 0, :100] = 1e4                     # extreme, and equal within sets
  cond = jax.jit(wordtree.conditional_log_probs, static_argnums=1)(logits, full)
  absolute = wordtree.path_log_probs(cond, full)
  assert np.all(np.isfinite(cond)) and np.all(np.isfinite(absolute))
  assert np.all(np.asarray(cond) <= 0)
  want_cond = ref_conditional(logits, full.parents)
  np.testing.assert_allclose(cond, want_cond, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(absolute, ref_path(want_cond, full.parents), rtol=1e-5, atol=1e-3)
  cond_prob = np.exp(np.asarray(cond, np.float64))
  for members in sibling_sets(full.parents).values():
    np.testing.assert_allclose(cond_prob[..., members].sum(-1), 1, rtol=1e-5)
  labels = np.random.default_rng(0).integers(-1, full.num_nodes, (2, 5))
  nll = wordtree.hierarchical_nll(logits, labels, full)
  np.testing.assert_allclose(nll, ref_nll(logits, labels, full.parents), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("tree_name", ["hand", "small"])
def test_hierarchical_nll_matches_loop(tree_name, request):
  tree = request.getfixturevalue(tree_name)
  logits = random_logits((2, 3, tree.num_nodes), seed=4)
  labels = np.random.default_rng(5).integers(0, tree.num_nodes, (2, 3))
  labels[0, 1] = -1
  nll = jax.jit(wordtree.hierarchical_nll, static_argnums=2)(logits, labels, tree)
  np.testing.assert_allclose(nll, ref_nll(logits, labels, tree.parents), rtol=1e-5, atol=1e-5)
  assert nll[0, 1] == 0


def ref_gradient(logits, label, parents):
  """d nll / d logits for one position: softmax - onehot in each set on the label's path."""
  grad = np.zeros(len(parents))
  sets = sibling_sets(parents)
  for a in path_to_top(label, parents):
    members = sets[int(parents[a])]
    z = np.exp(logits[members] - logits[members].max())
    grad[members] = z / z.sum()
    grad[a] -= 1
  return grad


@pytest.mark.parametrize("tree_name, label", [("hand", 5), ("hand", 4), ("small", None)])
def test_gradient_only_on_the_label_path(tree_name, label, request):
  tree = request.getfixturevalue(tree_name)
  if label is None:   # the small tree: a coarse label with a deep subtree below it
    label = int(np.flatnonzero((tree.depth == 3) & ~tree.is_leaf)[0])
  logits = random_logits((tree.num_nodes,), seed=6)
  grad = jax.grad(lambda x: wordtree.hierarchical_nll(x, jnp.int32(label), tree))(logits)
  want = ref_gradient(logits.astype(np.float64), label, tree.parents)
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)
  on_path_sets = {int(tree.parents[a]) for a in path_to_top(label, tree.parents)}
  off = np.array([int(p) not in on_path_sets for p in tree.parents])
  assert np.all(np.asarray(grad)[off] == 0)                       # exactly 0, below and beside
  below = [i for i in range(tree.num_nodes) if label in path_to_top(i, tree.parents)[1:]]
  assert bool(below) == (label != 5)    # terrier is a leaf; dog and the small tree's label not
  assert np.all(np.asarray(grad)[below] == 0)
  if tree_name == "hand" and label == 4:  # dog: sets of (animal, plant) and (cat, dog) only
    np.testing.assert_array_equal(np.asarray(grad)[[3, 5, 6]], 0)
  grad_none = jax.grad(lambda x: wordtree.hierarchical_nll(x, jnp.int32(-1), tree))(logits)
  assert np.all(np.asarray(grad_none) == 0)


# ----------------------------------------------------------------------------
# Top-down prediction
# ----------------------------------------------------------------------------


def hand_cond():
  #       animal plant cat  tree dog  terrier hound
  return np.log(np.array([0.9, 0.1, 0.2, 1.0, 0.8, 0.6, 0.4], np.float32))


@pytest.mark.parametrize("threshold, objectness, node, path, prob", [
    (0.5, None, 4, [0, 4, -1], 0.72),     # animal .9, dog .72, terrier .432 < .5: stop at dog
    (0.0, None, 5, [0, 4, 5], 0.432),     # down to a leaf
    (0.4, 0.5, 0, [0, -1, -1], 0.45),     # objectness .5 scales the path: animal .45, dog .36
    (0.5, 0.5, -1, [-1, -1, -1], 0.0),    # even the first choice (.45) is below threshold
    (0.95, None, -1, [-1, -1, -1], 0.0),
])
def test_top_down_prediction_hand(threshold, objectness, node, path, prob):
  tree = wordtree.from_parents(HAND_NAMES, HAND_PARENTS)
  log_obj = None if objectness is None else jnp.log(objectness)
  got_node, got_path, got_prob = wordtree.top_down_prediction(hand_cond(), tree, threshold,
                                                              log_obj)
  assert int(got_node) == node and got_node.dtype == jnp.int32
  np.testing.assert_array_equal(got_path, path)
  np.testing.assert_allclose(got_prob, prob, rtol=1e-5)


@pytest.mark.parametrize("tree_name", ["hand", "small"])
def test_top_down_prediction_matches_loop(tree_name, request):
  tree = request.getfixturevalue(tree_name)
  logits = random_logits((2, 3, tree.num_nodes), scale=4.0, seed=7)
  logits[1, 2] = 0.0                          # all ties: the first node of each set wins
  cond = np.asarray(ref_conditional(logits, tree.parents), np.float32)
  log_obj = np.log(np.random.default_rng(8).uniform(0.3, 1.0, (2, 3))).astype(np.float32)
  predict = jax.jit(wordtree.top_down_prediction, static_argnums=1)
  for threshold in (0.0, 0.05, 0.3, 0.6):
    for objectness in (None, log_obj):
      node, path, prob = predict(cond, tree, threshold, objectness)
      assert path.shape == (2, 3, tree.max_depth)
      for idx in np.ndindex(2, 3):
        start = 1.0 if objectness is None else np.exp(np.float64(objectness[idx]))
        want_node, want_path, want_prob = ref_top_down(cond[idx].astype(np.float64),
                                                       tree.parents, threshold, start)
        assert int(node[idx]) == want_node, (threshold, idx)
        np.testing.assert_array_equal(path[idx], want_path + [-1] * (tree.max_depth
                                                                     - len(want_path)))
        np.testing.assert_allclose(prob[idx], want_prob, rtol=1e-5)

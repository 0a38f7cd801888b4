"""The WordTree and its hierarchical softmax against hand-written arrays and float64
plain-Python oracles that walk ``parents`` node by node (never the tree's derived arrays)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet.data import wordtrees
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
  return wordtrees.synthetic_tree(500, seed=3)


@pytest.fixture(scope="module")
def full():
  return wordtrees.synthetic_tree()


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
# Tree structure, construction from pairs and class names
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


def test_from_pairs_inline():
  tree = wordtree.from_pairs([("even", ""), ("odd", None), ("2", "even"), ("3", "odd"),
                              ("4", "even")])
  assert tree.names == ("even", "odd", "2", "3", "4")
  np.testing.assert_array_equal(tree.parents, [-1, -1, 0, 1, 0])
  with pytest.raises(ValueError, match="item 1 .*'ab'"):
    wordtree.from_pairs([("a", ""), "ab"])
  with pytest.raises(ValueError, match="parent 'three' of '3'"):
    wordtree.from_pairs([("odd", ""), ("3", "three")])


def test_label_nodes_by_display_name():
  tree = wordtree.from_parents(["n1", "n2", "n3", "n4"], [-1, -1, 0, 1],
                               display_names=["animal", "plant", "crane", "crane"])
  np.testing.assert_array_equal(wordtree.label_nodes(tree, ["plant", "n3"]), [1, 2])
  with pytest.raises(ValueError, match="'crane' matches 2"):
    wordtree.label_nodes(tree, ["crane"])


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

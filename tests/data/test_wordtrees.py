"""Where WordTrees come from: darknet's tree, names and map files, pairs files, WordNet (the
paper's construction) and the synthetic 9k-shaped tree."""
import json
import sys

import numpy as np
import pytest

from jaxdet.data import wordtrees
from jaxdet.ops import wordtree
from tests.ops.test_wordtree import HAND_NAMES, HAND_PARENTS, path_to_top


@pytest.fixture(scope="module")
def hand():
  return wordtree.from_parents(HAND_NAMES, HAND_PARENTS)


@pytest.fixture(scope="module")
def full():
  return wordtrees.synthetic_tree()


# ----------------------------------------------------------------------------
# darknet's files and pairs files
# ----------------------------------------------------------------------------


def test_darknet_tree_round_trip(tmp_path, hand):
  tree_file = tmp_path / "hand.tree"
  tree_file.write_text("".join(f"{n} {p}\n" for n, p in zip(HAND_NAMES, HAND_PARENTS))
                       .replace("cat 0\n", "cat 0\n\n"))            # a blank line is ignored
  names_file = tmp_path / "hand.names"
  display = ["Animal", "Plant", "house cat", "Tree", "Dog", "terrier", "hound dog"]
  names_file.write_text("\n".join(display) + "\n")
  tree = wordtrees.read_darknet_tree(tree_file, names_path=names_file)
  assert tree.names == HAND_NAMES and tree.display_names == tuple(display)
  np.testing.assert_array_equal(tree.parents, HAND_PARENTS)
  np.testing.assert_array_equal(tree.group, hand.group)
  assert wordtrees.read_darknet_tree(tree_file).display_names == HAND_NAMES


def test_darknet_tree_errors(tmp_path):
  path = tmp_path / "bad.tree"
  path.write_text("a -1\nb 0\nc zero\n")
  with pytest.raises(ValueError, match=r":3: .*'c zero'"):
    wordtrees.read_darknet_tree(path)
  path.write_text("a -1\nb 5\n")
  with pytest.raises(ValueError, match="'b'"):
    wordtrees.read_darknet_tree(path)
  path.write_text("a -1\nb 0\n")
  names = tmp_path / "bad.names"
  names.write_text("A\n")
  with pytest.raises(ValueError, match="1 names but .* 2 nodes"):
    wordtrees.read_darknet_tree(path, names_path=names)


def test_read_pairs_json_and_text(tmp_path):
  pairs = [["animal", None], ["plant", ""], ["cat", "animal"], ["tree", "plant"],
           ["dog", "animal"], ["terrier", "dog"], ["hound", "dog"]]
  (tmp_path / "t.json").write_text(json.dumps(pairs))
  (tmp_path / "t.txt").write_text("animal -\nplant -\n\ncat animal\ntree plant\ndog animal\n"
                                  "terrier dog\nhound dog\n")
  for name in ("t.json", "t.txt"):
    tree = wordtrees.read_pairs(tmp_path / name)
    assert tree.names == HAND_NAMES
    np.testing.assert_array_equal(tree.parents, HAND_PARENTS)


def test_read_pairs_parent_may_come_later(tmp_path):
  (tmp_path / "t.txt").write_text("pug dog\ndog -\n")
  tree = wordtrees.read_pairs(tmp_path / "t.txt")
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
    wordtrees.read_pairs(tmp_path / "bad")


def test_label_map_and_label_nodes(tmp_path, hand):
  (tmp_path / "coco.map").write_text("4\n2\n\n3\n")
  label_map = wordtrees.read_label_map(tmp_path / "coco.map")
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
    wordtrees.read_label_map(tmp_path / "bad.map")


# ----------------------------------------------------------------------------
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
  tree = wordtrees.from_hypernym_paths(paths, ["dog", "cat", "horse"])
  # Single-path nouns first (cat, horse), whatever the order; then dog.
  assert tree.names == ("organism", "animal", "feline", "cat", "living_thing", "horse", "dog")
  np.testing.assert_array_equal(tree.parents, [-1, 0, 1, 2, -1, 1, 1])


def test_from_hypernym_paths_ties_take_the_first_path():
  paths = {"dog": [[ROOT, "object", "dog"], [ROOT, "animal", "dog"]],
           "pug": [[ROOT, "animal", "dog", "pug"], [ROOT, "toy", "pug"]]}
  # dog: both paths add 2 -> the first (object); then pug: via animal adds animal + pug = 2
  # (dog exists, keeps parent object), via toy adds toy + pug = 2 -> first again.
  tree = wordtrees.from_hypernym_paths(paths, ["dog", "pug"])
  assert tree.names == ("object", "dog", "animal", "pug")
  np.testing.assert_array_equal(tree.parents, [-1, 0, -1, 1])


@pytest.mark.parametrize("paths, match", [
    ({"dog": []}, "'dog' has no hypernym path"),
    ({"dog": [[ROOT, "animal", "canine"]]}, "of 'dog'"),
    ({"dog": [[ROOT, "dog"]], "cat": [["thing", "cat"]]}, "one root"),
])
def test_from_hypernym_paths_errors(paths, match):
  with pytest.raises(ValueError, match=match):
    wordtrees.from_hypernym_paths(paths, list(paths))
  with pytest.raises(ValueError, match="'wolf'"):
    wordtrees.from_hypernym_paths({}, ["wolf"])


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
  paths = wordtrees.wordnet_hypernym_paths(["n02110958", "n02084071"], wordnet=fake)
  # A requested synset is named by its wnid everywhere, also inside another noun's path.
  assert paths == {"n02110958": [["entity.n.01", "animal.n.01", "n02084071", "n02110958"]],
                   "n02084071": [["entity.n.01", "animal.n.01", "n02084071"]]}
  tree = wordtrees.from_hypernym_paths(paths, ["n02110958", "n02084071"])
  assert tree.names == ("animal.n.01", "n02084071", "n02110958")
  np.testing.assert_array_equal(tree.parents, [-1, 0, 1])
  with pytest.raises(LookupError, match="nltk.downloader wordnet"):
    wordtrees.wordnet_hypernym_paths(["n00000001"], wordnet=fake)
  with pytest.raises(ValueError, match="'dog.n.01'"):
    wordtrees.wordnet_hypernym_paths(["dog.n.01"], wordnet=fake)


def test_wordnet_adapter_without_nltk_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "nltk", None)
  monkeypatch.setitem(sys.modules, "nltk.corpus", None)
  with pytest.raises(ImportError, match="pip install nltk.*nltk.downloader wordnet"):
    wordtrees.wordnet_hypernym_paths(["n02084071"])


# ----------------------------------------------------------------------------
# ----------------------------------------------------------------------------
# Synthetic 9k-shaped tree
# ----------------------------------------------------------------------------


def test_synthetic_tree_has_the_9k_profile(full):
  assert full.num_nodes == 9418 == sum(wordtrees.DARKNET_9K_NODES_PER_DEPTH)
  assert full.max_depth == 17
  depth = [path_to_top(i, full.parents) for i in range(full.num_nodes)]
  counts = np.bincount([len(p) for p in depth])[1:]
  np.testing.assert_array_equal(counts, wordtrees.DARKNET_9K_NODES_PER_DEPTH)
  internal = np.bincount(full.depth[np.unique(full.parents[full.parents >= 0])], minlength=18)
  np.testing.assert_array_equal(internal[1:], wordtrees.DARKNET_9K_INTERNAL_PER_DEPTH)
  sizes = np.bincount(full.parents + 1)
  assert full.num_groups == 1846 and np.median(sizes) <= 4 and sizes.max() >= 40
  again = wordtrees.synthetic_tree()
  np.testing.assert_array_equal(again.parents, full.parents)
  assert again.names == full.names
  assert not np.array_equal(wordtrees.synthetic_tree(seed=1).parents, full.parents)


@pytest.mark.parametrize("num_nodes", [1, 5, 17, 50, 500])
def test_synthetic_tree_scales(num_nodes):
  tree = wordtrees.synthetic_tree(num_nodes)
  assert tree.num_nodes == num_nodes and tree.max_depth == min(num_nodes, 17)

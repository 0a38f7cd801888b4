"""YOLO9000: "YOLO9000: Better, Faster, Stronger" (Redmon & Farhadi, CVPR 2017), Sec. 4
"Stronger".

YOLOv2's network and region loss (``jaxdet.detectors.yolo_v2``) with the class softmax replaced by
a hierarchical one over a WordTree (``jaxdet.ops.wordtree``), trained jointly on detection and
classification images:

* Classes (Sec. 4 "Hierarchical classification"): one logit per tree node and prior; a softmax
  over each set of siblings gives ``Pr(node | parent)``, and ``Pr(node) = Pr(object) * prod of
  the conditionals along its path``. A label is a positive for every node on its path and for
  nothing below it, so a box labelled only "odd" (a coarse label) trains the top split and
  nothing deeper (darknet's ``delta_region_class`` with a tree).
* Detection images (Sec. 4 "Joint classification and detection") train every YOLOv2 term, the
  class term as the hierarchical cross-entropy above.
* Classification images (batch ``image_label >= 0``, no boxes), as in the paper: "we only
  backpropagate classification loss", "on just its predicted tree", at "the bounding box that
  predicts the highest probability for that class" (``Pr(object) * Pr(label)`` over all slots,
  as darknet ranks them), and "we also assume that the predicted box overlaps what would be the
  ground truth label by at least .3 IoU and we backpropagate objectness loss based on this
  assumption": that box's objectness is pulled up to ``loss.classification_iou`` (0.3) when
  below it, ``l_obj (0.3 - sigma(t_o))^2 / 2``, nothing above. No coordinate term.
* darknet's code differs on classification images (src/region_layer.c): every other slot gets
  the no-object term ``l_noobj sigma(t_o)^2 / 2`` (``loss.classification_noobject``), in the
  revision released with yolo9000.weights (2017-01-04) and since; from July 2017 the chosen
  box's 0.3 pull is computed and then overwritten by 0 (``loss.classification_iou=0``).
* Priors: 3 per cell instead of 5, "to limit the output size" (Sec. 4). The paper says "we use
  the base YOLOv2 architecture"; darknet's released cfg/yolo9000.cfg puts the prediction on
  Darknet-19's last layer without YOLOv2's added convolutions and passthrough
  (``model.head="darknet19"``).

The recipe (experiments/yolo9000.py) follows what produced the paper's numbers, darknet's
yolo9000.cfg and region layer of 2017-01-04: the ``darknet19`` head, the no-object term on
classification images and the 0.3 pull. Deliberate deviation: two truths on one slot train the
later one only, while darknet's tree deltas keep the sibling groups of the earlier truth's path
that the later one does not overwrite.

Labels meet the tree in :meth:`YOLO9000.training_labels`: detection classes go to their node
(by name, or by a darknet ``.map`` file such as ``coco9k.map``), or to the node given in
``detection_label_nodes`` (a coarser one: boxes labelled only by a parent); classification
classes by name (ImageNet's WordNet ids are 9k.tree's node names) or a ``.map`` file.

Outputs: :meth:`decode` scores the detection dataset's classes (``Pr(object) Pr(class node)``)
for COCO/VOC evaluation; :meth:`display_decode` gives, per box, the deepest confident node
(darknet's ``hierarchy_top_prediction``: from the top, take the most probable child while the
path probability stays above ``hierarchy_threshold``) and :meth:`display_names` its path.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import detectors
from jaxdet.detectors import base
from jaxdet.detectors import yolo_slots
from jaxdet.detectors import yolo_v2
from jaxdet.ops import losses
from jaxdet.data import wordtrees
from jaxdet.ops import wordtree


class YOLO9000(yolo_v2.YOLOv2):
  """The YOLO9000 family behind the :class:`base.Detector` interface; ``num_classes`` are the
  detection dataset's classes (those evaluated), the class outputs are the tree's nodes."""

  def __init__(self, config):
    self.tree = wordtrees.load_tree(config.tree)
    super().__init__(config, class_outputs=len(self.tree.names))
    if not config.class_map_file and len(config.class_names) != config.num_classes:
      raise ValueError(f"model.class_names lists {len(config.class_names)} classes for "
                       f"num_classes={config.num_classes}; name the detection dataset's classes "
                       "(tree node names) or give model.class_map_file (e.g. coco9k.map)")
    self.class_nodes = wordtrees.class_nodes(self.tree, tuple(config.class_names),
                                             config.class_map_file)
    if len(self.class_nodes) != config.num_classes:
      raise ValueError(f"model.class_map_file maps {len(self.class_nodes)} classes for "
                       f"num_classes={config.num_classes}")
    self.detection_label_nodes = (
        wordtree.label_nodes(self.tree, tuple(config.detection_label_nodes))
        if config.detection_label_nodes else self.class_nodes)
    if len(self.detection_label_nodes) != config.num_classes:
      raise ValueError(f"model.detection_label_nodes names {len(self.detection_label_nodes)} "
                       f"nodes for num_classes={config.num_classes}")

  def training_labels(self, detection_classes, classification_classes):
    """Both sets' classes to tree nodes (see the module docstring)."""
    if not self.config.class_map_file:
      for index, (data_name, model_name) in enumerate(zip(detection_classes,
                                                          self.config.class_names)):
        if data_name != model_name:
          raise ValueError(f"class {index} of the detection set is {data_name!r} but "
                           f"model.class_names[{index}] is {model_name!r}: list the dataset's "
                           "classes in its order, or give model.class_map_file")
    classification = (None if classification_classes is None else
                      wordtrees.class_nodes(self.tree, classification_classes,
                                            self.config.classification_map_file))
    return base.TrainingLabels(self.tree.names, tuple(self.detection_label_nodes),
                               classification)

  def class_loss(self, outputs, targets):
    """``[B, N]`` hierarchical cross-entropy of the assigned node at positive slots."""
    nll = wordtree.hierarchical_nll(outputs["class_logits"], targets.labels, self.tree)
    return jnp.where(targets.positive, nll, 0.0)

  def image_label_terms(self, outputs, image_label):
    """``[B, N]`` terms of classification images (``image_label [B]``, -1 for detection
    images): the class term at the slot of highest ``Pr(object) Pr(label)``, its objectness
    pulled up to ``loss.classification_iou``, and with ``loss.classification_noobject`` the
    no-object term at every other slot (module docstring)."""
    cfg = self.config.loss
    labelled = image_label >= 0
    label = jnp.broadcast_to(jnp.maximum(image_label, 0)[:, None],
                             outputs["objectness_logits"].shape)
    nll = wordtree.hierarchical_nll(outputs["class_logits"], label, self.tree)  # -log Pr(label)
    log_objectness = jax.nn.log_sigmoid(outputs["objectness_logits"])
    best = jnp.argmax(jax.lax.stop_gradient(log_objectness - nll), axis=1)
    chosen = jax.nn.one_hot(best, label.shape[1], dtype=jnp.bool_) & labelled[:, None]
    objectness = jax.nn.sigmoid(outputs["objectness_logits"].astype(jnp.float32))
    shortfall = jnp.maximum(cfg.classification_iou - objectness, 0.0)
    terms = {"image_class_loss": cfg.class_weight * jnp.where(chosen, nll, 0.0),
             "image_object_loss": cfg.object_weight * jnp.where(
                 chosen, losses.half_squared_error(shortfall, 0.0), 0.0)}
    if cfg.classification_noobject:
      others = labelled[:, None] & ~chosen
      terms["image_noobject_loss"] = cfg.noobject_weight * jnp.where(
          others, losses.half_squared_error(objectness, 0.0), 0.0)
    return terms

  def loss(self, outputs, batch):
    """YOLOv2's terms on detection images, :meth:`image_label_terms` on classification images,
    averaged over the images of the global batch."""
    terms, targets = self.loss_terms(outputs, batch)
    if "image_label" in batch:
      detection_image = (batch["image_label"] < 0)[:, None]
      terms = {name: jnp.where(detection_image, value, 0.0) for name, value in terms.items()}
      terms.update(self.image_label_terms(outputs, batch["image_label"]))
    return yolo_slots.per_image_sum(terms, targets.positive)

  def class_scores(self, outputs):
    """``[B, N, K]`` Pr(object) Pr(class node) of the detection dataset's classes."""
    cond = wordtree.conditional_log_probs(outputs["class_logits"], self.tree)
    log_probs = wordtree.path_log_probs(cond, self.tree)[..., self.class_nodes]
    return jnp.exp(jax.nn.log_sigmoid(outputs["objectness_logits"])[..., None] + log_probs)

  def display_decode(self, outputs, image_size):
    """Per box the deepest confident tree node (classes are node indices, scores ``Pr(object)
    Pr(node)``), then NMS per node."""
    cond = wordtree.conditional_log_probs(outputs["class_logits"], self.tree)
    node, _, probability = wordtree.top_down_prediction(cond, self.tree,
                                                        self.config.hierarchy_threshold)
    score = jnp.where(node >= 0, jax.nn.sigmoid(outputs["objectness_logits"]) * probability, 0.0)
    return yolo_slots.decode_detections(self.grid(tuple(image_size)), outputs["box_logits"],
                                        score[..., None], image_size, self.config.decode,
                                        classes=jnp.maximum(node, 0)[..., None],
                                        location=self.location)

  def display_names(self, class_names):
    """Each tree node shown with its path from the top, e.g. ``"odd > 7"``."""
    del class_names  # display_decode's classes are tree nodes
    names = self.tree.display_names
    return tuple(" > ".join(names[a] for a in reversed(path[path >= 0]))
                 for path in np.asarray(self.tree.ancestors))


@detectors.register("yolo9000")
def build(config):
  return YOLO9000(config)

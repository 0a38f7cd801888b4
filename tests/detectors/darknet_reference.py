"""Line-by-line float64 ports of darknet's training deltas (pjreddie/darknet, src/):
``forward_detection_layer`` (YOLOv1), ``forward_region_layer`` with its GPU backward pass
(YOLOv2, YOLO9000) and ``forward_yolo_layer`` (YOLOv3).

darknet writes ``l.delta``, the *negative* gradient of its loss with respect to the layer's
input, one image at a time, later writes overwriting earlier ones; its SGD update then divides
the summed deltas by the batch. Each port returns, per loss term of jaxdet, the delta entries
that term wrote last, laid out as jaxdet's raw outputs, so a test compares ``-delta`` with
``jax.grad`` of that term times the number of images. The ports keep darknet's loops and
arithmetic (normalised centre boxes, ``box_iou``, strict ``>`` for the best prior) and share no
code with jaxdet.
"""
import math

import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def overlap(x1, w1, x2, w2):                       # box.c
  left = max(x1 - w1 / 2, x2 - w2 / 2)
  right = min(x1 + w1 / 2, x2 + w2 / 2)
  return right - left


def box_iou(a, b):                                 # box.c: boxes are (x, y, w, h)
  w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
  intersection = 0.0 if w < 0 or h < 0 else w * h
  return intersection / (a[2] * a[3] + b[2] * b[3] - intersection)


def box_rmse(a, b):
  return math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b)))


def best_prior(prior_shapes, w, h):
  """The prior whose (w, h), centred on the truth's, has the highest IoU with it: the truth
  loops of both layers (``bias_match``; strict ``>``, so the first of equals)."""
  best_iou, best = 0.0, 0
  for index, (pw, ph) in enumerate(prior_shapes):
    iou = box_iou((0, 0, pw, ph), (0, 0, w, h))
    if iou > best_iou:
      best_iou, best = iou, index
  return best


class Deltas:
  """darknet's ``l.delta`` over jaxdet-shaped outputs, each entry tagged with the term that
  wrote it last."""

  def __init__(self, shapes):
    self.values = {name: np.zeros(shape) for name, shape in shapes.items()}
    self.terms = {name: np.full(shape, "", dtype=object) for name, shape in shapes.items()}

  def write(self, output, index, value, term):
    self.values[output][index] = value
    self.terms[output][index] = term

  def of_term(self, term):
    return {name: np.where(self.terms[name] == term, value, 0.0)
            for name, value in self.values.items()}

  def of_terms(self, terms):
    return {term: self.of_term(term) for term in terms}


def detection_layer_delta(grid, cell_truths, boxes_per_cell, num_classes, coord_scale=5.0,
                          noobject_scale=0.5, object_scale=1.0, class_scale=1.0):
  """``forward_detection_layer`` with ``rescore=1, sqrt=1, softmax=0`` (cfg/yolov1.cfg) on
  jaxdet's ``grid [B, S, S, 5 nb + K]`` (per cell nb boxes of x, y, sqrt w, sqrt h, C, then the
  K class scores); ``cell_truths[(b, row, col)] = (x, y, w, h, class)`` as darknet's loader
  writes them (x, y offsets in the cell, w, h of the image). Returns ``{term: delta}``."""
  batch, side = grid.shape[0], grid.shape[1]
  deltas = Deltas({"grid": grid.shape})
  for b in range(batch):
    for row in range(side):
      for col in range(side):
        cell = grid[b, row, col]
        for j in range(boxes_per_cell):
          deltas.write("grid", (b, row, col, 5 * j + 4), noobject_scale * (0 - cell[5 * j + 4]),
                       "noobject_loss")
        if (b, row, col) not in cell_truths:
          continue
        x, y, w, h, label = cell_truths[b, row, col]
        for k in range(num_classes):
          deltas.write("grid", (b, row, col, 5 * boxes_per_cell + k),
                       class_scale * (float(k == label) - cell[5 * boxes_per_cell + k]),
                       "class_loss")
        truth = (x / side, y / side, w, h)
        best_index, best_iou, best_rmse = -1, 0.0, 20.0
        for j in range(boxes_per_cell):
          out = (cell[5 * j] / side, cell[5 * j + 1] / side, cell[5 * j + 2] ** 2,
                 cell[5 * j + 3] ** 2)
          iou, rmse = box_iou(out, truth), box_rmse(out, truth)
          if best_iou > 0 or iou > 0:
            if iou > best_iou:
              best_iou, best_index = iou, j
          elif rmse < best_rmse:
            best_rmse, best_index = rmse, j
        j = best_index
        out = (cell[5 * j] / side, cell[5 * j + 1] / side, cell[5 * j + 2] ** 2,
               cell[5 * j + 3] ** 2)
        iou = box_iou(out, truth)
        deltas.write("grid", (b, row, col, 5 * j + 4), object_scale * (iou - cell[5 * j + 4]),
                     "object_loss")
        for c, target in enumerate((x, y, math.sqrt(w), math.sqrt(h))):
          deltas.write("grid", (b, row, col, 5 * j + c), coord_scale * (target - cell[5 * j + c]),
                       "coord_loss")
  return deltas.of_terms(("coord_loss", "object_loss", "noobject_loss", "class_loss"))


class Tree:
  """darknet's ``tree`` (src/tree.c) from (node, parent name or "") pairs: ``parent`` of each
  node and its sibling group. darknet's files list a group's nodes contiguously and index them
  by offset; the groups here list their members, so any order of the pairs works."""

  def __init__(self, pairs):
    names = [name for name, _ in pairs]
    self.parent = [names.index(p) if p else -1 for _, p in pairs]
    parents = list(dict.fromkeys(self.parent))
    self.group = [parents.index(p) for p in self.parent]
    self.members = [[n for n, p in enumerate(self.parent) if p == q] for q in parents]

  def softmax(self, logits):                        # softmax_tree: one softmax per group
    probs = np.empty_like(logits)
    for members in self.members:
      z = np.exp(logits[members] - logits[members].max())
      probs[members] = z / z.sum()
    return probs

  def probability(self, probs, c):                  # get_hierarchy_probability
    p = 1.0
    while c >= 0:
      p *= probs[c]
      c = self.parent[c]
    return p


def delta_region_class(deltas, b, n, probs, label, num_classes, tree, scale, term):
  if tree is not None:
    while label >= 0:
      for i in tree.members[tree.group[label]]:
        deltas.write("class_logits", (b, n, i), scale * (0 - probs[i]), term)
      deltas.write("class_logits", (b, n, label), scale * (1 - probs[label]), term)
      label = tree.parent[label]
  else:
    for k in range(num_classes):
      deltas.write("class_logits", (b, n, k), scale * (float(k == label) - probs[k]), term)


def region_layer_delta(outputs, feature_size, priors, truths, image_labels=None, tree=None,
                       coord_scale=1.0, object_scale=5.0, noobject_scale=1.0, class_scale=1.0,
                       thresh=0.6, area_weighted=True, image_noobject=True, image_iou=0.3):
  """``forward_region_layer`` (``rescore=1, bias_match=1, softmax=1``, past 12,800 images) and
  ``backward_region_layer_gpu`` (the sigmoid's derivative on the x, y and objectness deltas).

  ``outputs``: jaxdet's raw ``box_logits [B, N, 4]``, ``objectness_logits [B, N]``,
  ``class_logits [B, N, C]``, slots ordered (row, column, prior); ``priors [A, 2]`` in cells;
  ``truths[b]``: (x, y, w, h, class) normalised by the image, in the order darknet reads them.
  ``area_weighted``: the coordinate scale ``coord_scale (2 - w h)`` of the revision since
  2017-03-26, else ``coord_scale`` (2016). With a ``tree`` (YOLO9000) an image whose
  ``image_labels[b] >= 0`` is a classification image: every slot gets the no-object delta
  (``image_noobject``; the paper has none), the slot of highest objectness x hierarchy
  probability the class delta, and its objectness ``object_scale (image_iou - sigma)`` when
  below ``image_iou`` (2017-01-04; ``image_iou = 0``: zeroed, as since 2017-07)."""
  rows, cols = feature_size
  num_priors = len(priors)
  batch, _, num_classes = outputs["class_logits"].shape
  t_box, t_obj = outputs["box_logits"], outputs["objectness_logits"]
  out_xy, out_obj = sigmoid(t_box[..., :2]), sigmoid(t_obj)
  deltas = Deltas({name: value.shape for name, value in outputs.items()})
  for b in range(batch):
    probs = [tree.softmax(z) if tree else np.exp(z - z.max()) / np.exp(z - z.max()).sum()
             for z in outputs["class_logits"][b]]
    if tree is not None and image_labels is not None and image_labels[b] >= 0:
      label, maxp, maxi = image_labels[b], 0.0, 0
      for n in range(rows * cols * num_priors):
        if image_noobject:
          deltas.write("objectness_logits", (b, n), noobject_scale * (0 - out_obj[b, n]),
                       "image_noobject_loss")
        p = out_obj[b, n] * tree.probability(probs[n], label)
        if p > maxp:
          maxp, maxi = p, n
      delta_region_class(deltas, b, maxi, probs[maxi], label, num_classes, tree, class_scale,
                         "image_class_loss")
      pull = object_scale * (image_iou - out_obj[b, maxi]) if out_obj[b, maxi] < image_iou else 0
      deltas.write("objectness_logits", (b, maxi), pull, "image_object_loss")
      continue
    for j in range(rows):
      for i in range(cols):
        for a, (pw, ph) in enumerate(priors):
          n = (j * cols + i) * num_priors + a
          pred = ((i + out_xy[b, n, 0]) / cols, (j + out_xy[b, n, 1]) / rows,
                  math.exp(t_box[b, n, 2]) * pw / cols, math.exp(t_box[b, n, 3]) * ph / rows)
          best_iou = max([box_iou(pred, truth[:4]) for truth in truths[b]], default=0.0)
          deltas.write("objectness_logits", (b, n), noobject_scale * (0 - out_obj[b, n]),
                       "noobject_loss")
          if best_iou > thresh:
            deltas.write("objectness_logits", (b, n), 0.0, "")
    for x, y, w, h, label in truths[b]:
      i, j = int(x * cols), int(y * rows)
      best_a = best_prior([(pw / cols, ph / rows) for pw, ph in priors], w, h)
      n = (j * cols + i) * num_priors + best_a
      pw, ph = priors[best_a]
      pred = ((i + out_xy[b, n, 0]) / cols, (j + out_xy[b, n, 1]) / rows,
              math.exp(t_box[b, n, 2]) * pw / cols, math.exp(t_box[b, n, 3]) * ph / rows)
      iou = box_iou(pred, (x, y, w, h))
      scale = coord_scale * (2 - w * h) if area_weighted else coord_scale
      targets = (x * cols - i, y * rows - j, math.log(w * cols / pw), math.log(h * rows / ph))
      predictions = (out_xy[b, n, 0], out_xy[b, n, 1], t_box[b, n, 2], t_box[b, n, 3])
      for c in range(4):
        deltas.write("box_logits", (b, n, c), scale * (targets[c] - predictions[c]), "coord_loss")
      deltas.write("objectness_logits", (b, n), object_scale * (iou - out_obj[b, n]),
                   "object_loss")
      delta_region_class(deltas, b, n, probs[n], label, num_classes, tree, class_scale,
                         "class_loss")
  # backward_region_layer_gpu: gradient_array(LOGISTIC) on x, y and the objectness.
  deltas.values["box_logits"][..., :2] *= out_xy * (1 - out_xy)
  deltas.values["objectness_logits"] *= out_obj * (1 - out_obj)
  return deltas


def yolo_layer_delta(outputs, image_size, feature_sizes, priors, masks, truths,
                     ignore_thresh=0.5, logistic_gradient_xy=False):
  """``forward_yolo_layer`` for each of the three yolo layers (``truth_thresh = 1``), whose
  backward pass adds the deltas to the raw outputs unchanged. Slots are jaxdet's: levels in
  ``feature_sizes`` order, then (row, column, prior of the level's ``mask``); ``priors [9, 2]``
  in pixels of ``image_size = (H, W)``; ``truths[b]``: (x, y, w, h, class) normalised.
  ``logistic_gradient_xy``: multiply the x, y deltas by the sigmoid's derivative (YOLOv2's
  region layer: jaxdet's ``coord_loss="sse"``), which darknet's yolo layer does not."""
  height, width = image_size
  batch, _, num_classes = outputs["class_logits"].shape
  t_box, t_obj = outputs["box_logits"], outputs["objectness_logits"]
  out_xy, out_obj, out_cls = (sigmoid(t_box[..., :2]), sigmoid(t_obj),
                              sigmoid(outputs["class_logits"]))
  deltas = Deltas({name: value.shape for name, value in outputs.items()})
  first = 0
  for (rows, cols), mask in zip(feature_sizes, masks):
    def slot(j, i, a):
      return first + (j * cols + i) * len(mask) + a

    for b in range(batch):
      for j in range(rows):
        for i in range(cols):
          for a in range(len(mask)):
            n = slot(j, i, a)
            pred = ((i + out_xy[b, n, 0]) / cols, (j + out_xy[b, n, 1]) / rows,
                    math.exp(t_box[b, n, 2]) * priors[mask[a]][0] / width,
                    math.exp(t_box[b, n, 3]) * priors[mask[a]][1] / height)
            best_iou = max([box_iou(pred, truth[:4]) for truth in truths[b]], default=0.0)
            deltas.write("objectness_logits", (b, n), 0 - out_obj[b, n], "noobject_loss")
            if best_iou > ignore_thresh:
              deltas.write("objectness_logits", (b, n), 0.0, "")
      for x, y, w, h, label in truths[b]:
        i, j = int(x * cols), int(y * rows)
        best_n = best_prior([(pw / width, ph / height) for pw, ph in priors], w, h)
        if best_n not in mask:
          continue
        n = slot(j, i, list(mask).index(best_n))
        scale = 2 - w * h
        targets = (x * cols - i, y * rows - j, math.log(w * width / priors[best_n][0]),
                   math.log(h * height / priors[best_n][1]))
        predictions = (out_xy[b, n, 0], out_xy[b, n, 1], t_box[b, n, 2], t_box[b, n, 3])
        for c in range(4):
          deltas.write("box_logits", (b, n, c), scale * (targets[c] - predictions[c]),
                       "coord_loss")
        deltas.write("objectness_logits", (b, n), 1 - out_obj[b, n], "object_loss")
        if deltas.values["class_logits"][b, n, 0]:           # delta_yolo_class
          deltas.write("class_logits", (b, n, label), 1 - out_cls[b, n, label], "class_loss")
        else:
          for k in range(num_classes):
            deltas.write("class_logits", (b, n, k), float(k == label) - out_cls[b, n, k],
                         "class_loss")
    first += rows * cols * len(mask)
  if logistic_gradient_xy:
    deltas.values["box_logits"][..., :2] *= out_xy * (1 - out_xy)
  return deltas


def normalised_truths(boxes, labels, mask, image_size):
  """darknet's label rows ``(x, y, w, h, class)``, normalised by the image, per image, in slot
  order, from jaxdet's padded pixel ``(x1, y1, x2, y2)`` boxes."""
  height, width = image_size
  return [[((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height,
            int(label))
           for (x1, y1, x2, y2), label in zip(image_boxes[m].astype(np.float64), image_labels[m])]
          for image_boxes, image_labels, m in zip(boxes, labels, mask)]


def term_gradients(loss_fn, outputs, batch, terms):
  """``{term: jax.grad of metrics[term]}`` with respect to ``outputs``, times the number of
  images (darknet's deltas are per image), from one reverse-mode Jacobian. ``loss_fn(outputs,
  batch) -> (loss, metrics)``."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  stacked = jax.jit(jax.jacrev(lambda o, b: jnp.stack([loss_fn(o, b)[1][t] for t in terms])))(
      outputs, batch)
  batch = len(next(iter(jax.tree.leaves(outputs))))
  return {t: jax.tree.map(lambda g, i=i: np.asarray(g[i], np.float64) * batch, stacked)
          for i, t in enumerate(terms)}


def assert_gradients_are_deltas(gradients, deltas, rtol=1e-6):
  """Each term's ``gradients[term][output]`` (of one loss term, times the number of images)
  equals ``-deltas[term][output]`` to ``rtol`` of the term's largest delta, entry by entry,
  zeros included. ``deltas``: ``{term: {output: delta}}``."""
  for term, delta in deltas.items():
    scale = max(np.max(np.abs(value)) for value in delta.values())
    assert scale > 0, f"{term}: darknet writes no delta for it in this test"
    for output, value in delta.items():
      np.testing.assert_allclose(gradients[term][output], -value, rtol=0, atol=rtol * scale,
                                 err_msg=f"{term}, {output}")

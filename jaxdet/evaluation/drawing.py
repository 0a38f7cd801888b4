"""Detections drawn on images (PIL), for scripts/predict.py."""
import colorsys

import numpy as np
from PIL import Image, ImageDraw


def class_colour(label):
  """A distinct, saturated colour per class (golden-ratio steps around the hue wheel)."""
  r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
  return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image, detections, class_names, score_threshold):
  """RGB ``image`` (uint8 array) with boxes and "<class> <score>" for every detection scoring at
  least ``score_threshold``; ``detections`` as returned by evaluator.detect (original pixels)."""
  canvas = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
  draw = ImageDraw.Draw(canvas)
  width = max(1, round(max(canvas.size) / 300))
  order = np.argsort(detections["scores"])     # strongest drawn last, on top
  for i in order:
    score = float(detections["scores"][i])
    if score < score_threshold:
      continue
    label = int(detections["labels"][i])
    colour = class_colour(label)
    x1, y1, x2, y2 = (float(v) for v in detections["boxes"][i])
    draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
    text = f"{class_names[label]} {score:.2f}"
    left, top, right, bottom = draw.textbbox((x1, y1), text)
    ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
    draw.rectangle([x1, ty, x1 + (right - left) + 2, ty + (bottom - top) + 2], fill=colour)
    draw.text((x1 + 1, ty), text, fill=(0, 0, 0))
  return canvas

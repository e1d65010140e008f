"""Build data/cat_and_coffee.png: chelsea's face (left) beside the coffee cup (right).

Two square tiles side by side on a square grey canvas, so the models' centre crop keeps
both objects and "which half holds the evidence" has a known answer. Run from the
repository root:  python data/make_cat_and_coffee.py
"""
from pathlib import Path

from PIL import Image

from featviz_helpers.images import load_image

TILE = 200          # each object's square tile, pixels
CANVAS = 2 * TILE   # square canvas: tiles in the middle band, grey above and below
GREY = (124, 116, 104)  # ImageNet's mean colour: as neutral as a background gets

cat = load_image("chelsea").crop((90, 0, 390, 300))      # the face, 300×300
cup = load_image("coffee").crop((100, 0, 500, 400))      # cup and saucer, 400×400
canvas = Image.new("RGB", (CANVAS, CANVAS), GREY)
canvas.paste(cat.resize((TILE, TILE), Image.LANCZOS), (0, (CANVAS - TILE) // 2))
canvas.paste(cup.resize((TILE, TILE), Image.LANCZOS), (TILE, (CANVAS - TILE) // 2))
out = Path(__file__).resolve().parent / "cat_and_coffee.png"
canvas.save(out, optimize=True)
print(f"wrote {out} ({canvas.size[0]}×{canvas.size[1]})")

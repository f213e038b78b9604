"""Pillow drawings: a checkout page showing an error, and a photographed-looking price tag.

Each picture is a pure function of its spec (every random choice is made by the planner in
make_media.py and stored in the spec), so the manifest can record exactly what was drawn and the
same spec always gives the same pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tunewright.errors import TunewrightError

FONT_ROOT = Path("/usr/share/fonts/truetype")
# family -> (regular, bold), relative to FONT_ROOT; Debian packages fonts-dejavu-core and fonts-liberation.
FONT_FAMILIES = {
    "DejaVu Sans": ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf"),
    "DejaVu Sans Mono": ("dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansMono-Bold.ttf"),
    "DejaVu Serif": ("dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSerif-Bold.ttf"),
    "Liberation Sans": ("liberation/LiberationSans-Regular.ttf", "liberation/LiberationSans-Bold.ttf"),
    "Liberation Mono": ("liberation/LiberationMono-Regular.ttf", "liberation/LiberationMono-Bold.ttf"),
    "Liberation Serif": ("liberation/LiberationSerif-Regular.ttf", "liberation/LiberationSerif-Bold.ttf"),
    "Liberation Sans Narrow": ("liberation/LiberationSansNarrow-Regular.ttf",
                               "liberation/LiberationSansNarrow-Bold.ttf"),
}


def font_files(family: str) -> list[Path]:
    return [FONT_ROOT / name for name in FONT_FAMILIES[family]]


def font_sha256(family: str) -> dict[str, str]:
    """Recorded in the manifest: the same spec gives the same bytes only with the same font files."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in font_files(family)}


@lru_cache(maxsize=None)
def font(family: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    path = font_files(family)[1 if bold else 0]
    if not path.is_file():
        raise TunewrightError(f"font '{family}' is not installed (apt-get install fonts-dejavu-core "
                              "fonts-liberation)", file=path)
    return ImageFont.truetype(str(path), size)


def wrap(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.FreeTypeFont, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=face) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def line_height(face: ImageFont.FreeTypeFont) -> int:
    ascent, descent = face.getmetrics()
    return ascent + descent


# --- Checkout screenshot ---------------------------------------------------------------------------------

THEMES = {
    "light": dict(page=(255, 255, 255), chrome=(222, 225, 230), chrome_text=(40, 44, 52), bar=(245, 246, 248),
                  url=(255, 255, 255), text=(31, 35, 40), muted=(87, 96, 106), border=(200, 207, 214),
                  input=(255, 255, 255), accent=(201, 90, 36), err_bg=(255, 235, 233), err_line=(207, 34, 46),
                  err_text=(130, 7, 30), panel=(246, 248, 250), on_accent=(255, 255, 255)),
    "dark": dict(page=(13, 17, 23), chrome=(36, 41, 47), chrome_text=(201, 209, 217), bar=(22, 27, 34),
                 url=(13, 17, 23), text=(230, 237, 243), muted=(139, 148, 158), border=(60, 66, 74),
                 input=(22, 27, 34), accent=(240, 136, 62), err_bg=(62, 22, 26), err_line=(248, 81, 73),
                 err_text=(255, 170, 160), panel=(22, 27, 34), on_accent=(13, 17, 23)),
}
URL = "https://shop.peachtree-outfitters.example/checkout"


@dataclass(frozen=True)
class Screenshot:
    font: str
    font_size: int
    theme: str
    width: int
    code: str
    title: str
    message: str
    field: str                     # the input outlined in the error colour
    cart: tuple[tuple[str, str, str], ...]   # (code, name, price)
    out_of_stock: str              # product code marked out of stock in the summary, or ""
    subtotal: str
    shipping: str
    total: str
    values: tuple[tuple[str, str], ...]     # form field -> shown value


FORM_ROWS = (  # rows of (field, label); a row's fields share its width
    ("Shipping", (("name", "Full name"), ("email", "Email"))),
    (None, (("street", "Street address"),)),
    (None, (("city", "City, state, ZIP"), ("country", "Country"))),
    ("Payment", (("card", "Card number"),)),
    (None, (("expiry", "Expiry"), ("cvv", "CVV"), ("promo", "Promo code"))),
)


def _message_lines(s: Screenshot) -> list[str]:
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    return wrap(probe, s.message, font(s.font, s.font_size), s.width - 48 - 64)


def banner_lines(s: Screenshot) -> list[str]:
    """The error banner's text lines, exactly as render_screenshot draws them."""
    return [f"{s.title} ({s.code})", *_message_lines(s)]


def render_screenshot(s: Screenshot) -> Image.Image:
    t = THEMES[s.theme]
    fs = s.font_size
    regular, bold = font(s.font, fs), font(s.font, fs, True)
    small, heading = font(s.font, fs - 2), font(s.font, fs + 9, True)
    width = s.width
    img = Image.new("RGB", (width, 1600), t["page"])
    d = ImageDraw.Draw(img)

    # Window chrome: title bar with the three buttons, then the address bar.
    d.rectangle((0, 0, width, 31), fill=t["chrome"])
    for i, colour in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        d.ellipse((14 + 20 * i, 10, 26 + 20 * i, 22), fill=colour)
    d.text((width / 2, 16), "Checkout - Peachtree Outfitters", font=small, fill=t["chrome_text"], anchor="mm")
    d.rectangle((0, 32, width, 73), fill=t["bar"])
    d.line((0, 73, width, 73), fill=t["border"])
    for x, sign in ((22, 1), (48, -1)):  # back and forward chevrons
        d.line((x + 4 * sign, 46, x - 4 * sign, 53, x + 4 * sign, 60), fill=t["muted"], width=2)
    d.rounded_rectangle((72, 39, width - 18, 66), radius=13, fill=t["url"], outline=t["border"])
    d.rectangle((86, 51, 95, 59), fill=t["muted"])  # padlock
    d.arc((87, 45, 94, 55), 180, 360, fill=t["muted"], width=2)
    d.text((104, 53), URL, font=small, fill=t["text"], anchor="lm")

    # Shop header and page title.
    y = 74
    d.text((24, y + 22), "Peachtree Outfitters", font=font(s.font, fs + 3, True), fill=t["accent"], anchor="lm")
    d.text((width - 24, y + 22), f"Cart ({len(s.cart)})", font=regular, fill=t["muted"], anchor="rm")
    y += 44
    d.line((0, y, width, y), fill=t["border"])
    d.text((24, y + 16), "Checkout", font=heading, fill=t["text"])
    y += 24 + line_height(heading)

    # The error banner: icon, "title (code)", then the message.
    lines = _message_lines(s)
    lh = line_height(regular) + 3
    height = 24 + line_height(bold) + 4 + lh * len(lines)
    d.rounded_rectangle((24, y, width - 24, y + height), radius=6, fill=t["err_bg"], outline=t["err_line"], width=2)
    d.ellipse((40, y + 14, 64, y + 38), fill=t["err_line"])
    d.text((52, y + 26), "!", font=font(s.font, 16, True), fill=t["err_bg"], anchor="mm")
    d.text((80, y + 12), banner_lines(s)[0], font=bold, fill=t["err_text"])
    for i, line in enumerate(lines):
        d.text((80, y + 16 + line_height(bold) + lh * i), line, font=regular, fill=t["err_text"])
    y += height + 20

    # Left: the form; right: the order summary.
    split = int(width * 0.6)
    values = dict(s.values)
    box_h = fs + 16
    left_y = y
    for section, fields in FORM_ROWS:
        if section:
            d.text((24, left_y), section, font=bold, fill=t["text"])
            left_y += line_height(bold) + 8
        cell = (split - 24 - 12 * (len(fields) - 1)) / len(fields)
        for i, (key, label) in enumerate(fields):
            x0 = 24 + i * (cell + 12)
            d.text((x0, left_y), label, font=small, fill=t["muted"])
            top = left_y + line_height(small) + 3
            flagged = key == s.field
            d.rounded_rectangle((x0, top, x0 + cell, top + box_h), radius=4, fill=t["input"],
                                outline=t["err_line"] if flagged else t["border"], width=2 if flagged else 1)
            value = values.get(key, "")
            shown, colour = (value, t["text"]) if value else ("Enter code" if key == "promo" else "", t["muted"])
            if d.textlength(shown, font=regular) > cell - 16:
                # The manifest records each value as drawn in full; a clipped one would make it lie.
                raise ValueError(f"{key} value {shown!r} does not fit its {cell - 16:.0f} px box in {s.font} {fs}")
            d.text((x0 + 8, top + box_h / 2), shown, font=regular, fill=colour, anchor="lm")
        left_y += line_height(small) + 3 + box_h + 12

    x0, x1 = split + 24, width - 24
    right_y = y
    rows = []  # (text, value, face, colour) drawn inside the panel
    for code, name, price in s.cart:
        room = x1 - x0 - 28 - d.textlength(price, font=regular) - 12
        for n, line in enumerate(wrap(d, name, regular, room)):
            rows.append((line, price if n == 0 else "", regular, t["text"]))
        if code == s.out_of_stock:
            rows.append(("Out of stock", "", small, t["err_text"]))
    rows += [None, ("Subtotal", s.subtotal, regular, t["muted"]), ("Shipping", s.shipping, regular, t["muted"]),
             None, ("Total", s.total, bold, t["text"])]
    panel_h = 16 + line_height(bold) + 12 + sum(10 if r is None else line_height(r[2]) + 8 for r in rows) + box_h + 26
    d.rounded_rectangle((x0, right_y, x1, right_y + panel_h), radius=6, fill=t["panel"], outline=t["border"])
    d.text((x0 + 14, right_y + 14), "Order summary", font=bold, fill=t["text"])
    ry = right_y + 16 + line_height(bold) + 12
    for row in rows:
        if row is None:
            d.line((x0 + 14, ry + 4, x1 - 14, ry + 4), fill=t["border"])
            ry += 10
            continue
        text, value, face, colour = row
        d.text((x0 + 14, ry), text, font=face, fill=colour)
        d.text((x1 - 14, ry), value, font=face, fill=colour, anchor="ra")
        ry += line_height(face) + 8
    ry += 8
    d.rounded_rectangle((x0 + 14, ry, x1 - 14, ry + box_h), radius=5, fill=t["accent"])
    d.text(((x0 + x1) / 2, ry + box_h / 2), "Place order", font=bold, fill=t["on_accent"], anchor="mm")

    bottom = max(left_y, right_y + panel_h) + 20
    return img.crop((0, 0, width, int(bottom)))


# --- Price tag photo -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Label:
    font: str
    name: str
    code: str
    price: str
    paper: tuple[int, int, int]
    ink: tuple[int, int, int]
    accent: tuple[int, int, int]
    tag_width: int
    surface: str                   # background texture, a key of SURFACES
    canvas: tuple[int, int]
    corners: tuple[float, ...]     # perspective: each corner's offset, as a fraction of the tag width
    rotation: float                # degrees
    light: tuple[float, float]     # gradient direction (degrees) and strength (0..1)
    blur: float
    grain: float                   # sensor noise, standard deviation in 8-bit levels
    seed: int                      # the texture's and grain's noise


SURFACES = {  # base colour and how it is patterned
    "oak": ((150, 105, 62), "grain"),
    "walnut": ((92, 62, 40), "grain"),
    "concrete": ((150, 150, 146), "mottle"),
    "slate": ((58, 63, 70), "mottle"),
    "linen": ((214, 204, 184), "mottle"),
}


BRAND = "PEACHTREE OUTFITTERS"


def _tag_faces(label: Label):
    w = label.tag_width
    return (font(label.font, max(12, w // 26), True), font(label.font, w // 14, True),
            font(label.font, w // 20), font(label.font, w // 8, True))


def _name_lines(label: Label) -> list[str]:
    w = label.tag_width
    return wrap(ImageDraw.Draw(Image.new("L", (1, 1))), label.name, _tag_faces(label)[1], w - w // 9 - 2 * (w // 14))


def tag_lines(label: Label) -> list[str]:
    """The tag's text lines top to bottom, exactly as draw_tag draws them."""
    return [BRAND, *_name_lines(label), f"Item {label.code}", label.price]


def draw_tag(label: Label) -> Image.Image:
    """The flat tag: a punched card with brand, product name, item code, price and a barcode."""
    w = label.tag_width
    pad, hole = w // 14, w // 9
    brand, name_face, code_face, price_face = _tag_faces(label)
    names = _name_lines(label)
    h = (pad + line_height(brand) + 12 + line_height(name_face) * len(names) + 8 + line_height(code_face)
         + 10 + line_height(price_face) + 10 + w // 9 + pad)
    tag = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(tag)
    d.rounded_rectangle((0, 0, w - 1, h - 1), radius=w // 30, fill=label.paper + (255,),
                        outline=tuple(int(c * 0.8) for c in label.paper) + (255,), width=2)
    cx, cy, r = hole // 2 + 4, h // 2, max(6, w // 40)
    d.ellipse((cx - r - 5, cy - r - 5, cx + r + 5, cy + r + 5), fill=tuple(int(c * 0.85) for c in label.paper) + (255,))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(0, 0, 0, 0))  # the punched hole shows the surface
    x, y = hole + pad // 2, pad
    d.text((x, y), BRAND, font=brand, fill=label.accent)
    y += line_height(brand) + 4
    d.line((x, y + 4, w - pad, y + 4), fill=label.accent, width=2)
    y += 12
    for line in names:
        d.text((x, y), line, font=name_face, fill=label.ink)
        y += line_height(name_face)
    y += 8
    d.text((x, y), f"Item {label.code}", font=code_face, fill=label.ink)
    y += line_height(code_face) + 10
    d.text((x, y), label.price, font=price_face, fill=label.ink)
    y += line_height(price_face) + 10
    bar_x = x
    for char in label.code:  # a barcode-looking strip: bars from the code's bits, not a real symbology
        for bit in f"{ord(char):08b}":
            bar = 3 if bit == "1" else 1
            d.rectangle((bar_x, y, bar_x + bar - 1, y + w // 9), fill=label.ink)
            bar_x += bar + 2
            if bar_x > w - pad:
                break
    return tag


def perspective_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """Pillow's PERSPECTIVE maps output pixels to input pixels: solve for the 8 coefficients doing dst -> src."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    # Rounded so a last-bit difference between linear-algebra builds does not move a pixel.
    return [round(float(c), 9) for c in np.linalg.solve(np.array(a, float), np.array(b, float))]


def surface(label: Label, rng: np.random.Generator) -> np.ndarray:
    width, height = label.canvas
    base, pattern = SURFACES[label.surface]
    # Low-frequency noise, upsampled: blotches a camera sees, without the fine grain JPEG pays for.
    coarse = rng.normal(0, 1, (height // 48 + 2, width // 48 + 2)).astype(np.float32)
    blotch = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    if pattern == "grain":
        ys = np.arange(height, dtype=np.float32)[:, None]
        xs = np.arange(width, dtype=np.float32)[None, :]
        shade = 0.08 * np.sin((ys + 5 * blotch + 0.04 * xs) / 5.5) + 0.05 * blotch
    else:
        shade = 0.07 * blotch
    return np.clip(np.array(base, np.float32)[None, None, :] * (1 + shade[..., None]), 0, 255)


def render_label(label: Label) -> Image.Image:
    rng = np.random.default_rng(label.seed)
    tag = draw_tag(label)
    w, h = tag.size
    margin = w // 4
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(x + margin + label.corners[2 * i] * w, y + margin + label.corners[2 * i + 1] * w)
           for i, (x, y) in enumerate(src)]
    warped = tag.transform((w + 2 * margin, h + 2 * margin), Image.PERSPECTIVE, perspective_coeffs(dst, src),
                           Image.BICUBIC)
    warped = warped.rotate(label.rotation, resample=Image.BICUBIC, expand=True)
    box = warped.getbbox()
    # A transparent border keeps the blurred shadow below from being cut at the tag's edge.
    warped = warped.crop((box[0] - 16, box[1] - 16, box[2] + 16, box[3] + 16))

    width, height = label.canvas
    canvas = Image.fromarray(surface(label, rng).astype(np.uint8))
    x, y = (width - warped.width) // 2, (height - warped.height) // 2
    alpha = warped.getchannel("A")
    shadow = Image.new("RGB", warped.size, (0, 0, 0))
    canvas.paste(shadow, (x + 8, y + 10), alpha.point(lambda a: a * 45 // 100).filter(ImageFilter.GaussianBlur(6)))
    canvas.paste(warped.convert("RGB"), (x, y), alpha)

    # Light falling off across the frame from one side.
    angle, strength = np.deg2rad(label.light[0]), label.light[1]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = ((xs - width / 2) * np.cos(angle) + (ys - height / 2) * np.sin(angle)) / max(width, height)
    pixels = np.asarray(canvas, np.float32) * (1 + strength * along)[..., None]
    pixels += rng.normal(0, label.grain, pixels.shape).astype(np.float32)
    photo = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return photo.filter(ImageFilter.GaussianBlur(label.blur))

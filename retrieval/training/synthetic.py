"""A generator of captioned synthetic images: coloured shapes on backgrounds.

Each scene holds one or two objects, each with a shape, a colour, a size and a position, on a
background. Captions are compositional ("a small red circle at the top left and a large blue
square"), so a model trained on them can be checked attribute by attribute. Everything is
deterministic under a seed: the same seed gives the same scenes, pixels and captions.

Captions come in English and in Chinese. The Chinese ones are written as Chinese puts them,
not word by word: the place first as the topic, then what is there, with the colour as an
attributive before the size and the shape (``左上角有一个红色的小圆形`` - "at the top left
there is a red small circle"), several objects listed with a comma or ``和``.

Used to train the shipped demo model (``retrieval.training.demo``), by ``retrieval demo`` and by the
quality tests and benchmarks, on folders it writes with :func:`write_dataset`.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
}
SIZES: dict[str, float] = {"small": 0.13, "large": 0.21}  # radius as a fraction of the side
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
    "center": (0.5, 0.5),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 240),
    "gray": (128, 128, 128),
    "black": (20, 20, 25),
}
LANGUAGES = ("en", "zh")
# The Chinese words of every attribute.
ZH: dict[str, str] = {
    "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "cross": "十字形",
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色",
    "orange": "橙色", "small": "小", "large": "大", "top left": "左上角", "top right": "右上角",
    "bottom left": "左下角", "bottom right": "右下角", "center": "中间", "white": "白色",
    "gray": "灰色", "black": "黑色",
}


@dataclass(frozen=True)
class Thing:
    """One object in a scene."""

    shape: str
    colour: str
    size: str
    position: str

    def phrase(self, size: bool = True, position: bool = True, lang: str = "en") -> str:
        if lang == "zh":
            noun = f"{ZH[self.colour]}的{ZH[self.size] if size else ''}{ZH[self.shape]}"
            return f"{ZH[self.position]}有一个{noun}" if position else f"一个{noun}"
        words = ["a"] + ([self.size] if size else []) + [self.colour, self.shape]
        text = " ".join(words)
        if position:
            text += " in the center" if self.position == "center" else f" at the {self.position}"
        return text


@dataclass(frozen=True)
class Scene:
    """What an image shows."""

    things: tuple[Thing, ...]
    background: str

    def caption(self, lang: str = "en") -> str:
        """The full compositional caption."""
        return _join([t.phrase(lang=lang) for t in self.things], lang, listing=True)

    def captions(self, lang: str = "en") -> list[str]:
        """Several true descriptions, from full to a single attribute, for training."""
        if lang == "zh":
            return self._captions_zh()
        out = [self.caption(),
               " and ".join(t.phrase(position=False) for t in self.things),
               " and ".join(t.phrase(size=False, position=False) for t in self.things),
               f"{self.caption()} on a {self.background} background"]
        for t in self.things:
            where = "in the center" if t.position == "center" else f"at the {t.position}"
            # Colour alone tells images apart too easily; captions without it make the model
            # learn shape, size and position as well.
            out += [t.phrase(), t.phrase(position=False), t.phrase(size=False, position=False),
                    f"a {t.shape}", f"a {t.shape} {where}", f"a {t.size} {t.shape}",
                    f"a {t.colour} shape"]
        return list(dict.fromkeys(out))

    def _captions_zh(self) -> list[str]:
        full = self.caption("zh")
        out = [full,
               _join([t.phrase(position=False, lang="zh") for t in self.things], "zh"),
               _join([t.phrase(size=False, position=False, lang="zh") for t in self.things],
                     "zh"),
               f"{ZH[self.background]}背景上，{full}"]
        for t in self.things:
            out += [t.phrase(lang="zh"), t.phrase(position=False, lang="zh"),
                    t.phrase(size=False, position=False, lang="zh"), f"一个{ZH[t.shape]}",
                    f"{ZH[t.position]}有一个{ZH[t.shape]}", f"一个{ZH[t.size]}{ZH[t.shape]}",
                    f"一个{ZH[t.colour]}的图形"]
        return list(dict.fromkeys(out))

    def matches(self, colour: str | None = None, shape: str | None = None) -> bool:
        """Whether any object has the given colour and/or shape."""
        return any((colour is None or t.colour == colour) and (shape is None or t.shape == shape)
                   for t in self.things)

    def to_dict(self) -> dict[str, Any]:
        return {"things": [asdict(t) for t in self.things], "background": self.background}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        return cls(tuple(Thing(**t) for t in d["things"]), d["background"])


CORNERS = ("top left", "top right", "bottom left", "bottom right")


def _join(phrases: list[str], lang: str, listing: bool = False) -> str:
    """Phrases joined as the language lists them: "and"; in Chinese a comma between clauses
    that each name a place, else 和."""
    if lang == "zh":
        return ("，" if listing else "和").join(phrases)
    return " and ".join(phrases)


def random_scene(rng: random.Random, max_things: int = 2) -> Scene:
    n = rng.randint(1, max_things)
    # A single object may sit in the center; two objects take corners, so they never overlap.
    positions = rng.sample(sorted(POSITIONS) if n == 1 else CORNERS, n)
    colours = rng.sample(sorted(COLOURS), n)  # distinct colours keep captions unambiguous
    things = tuple(
        Thing(rng.choice(SHAPES), colours[i], rng.choice(sorted(SIZES)), positions[i])
        for i in range(n)
    )
    return Scene(things, rng.choice(sorted(BACKGROUNDS)))


def _polygon(cx: float, cy: float, r: float, sides: int, rotation: float) -> list[tuple[float,
                                                                                          float]]:
    return [(cx + r * math.cos(rotation + 2 * math.pi * k / sides),
             cy + r * math.sin(rotation + 2 * math.pi * k / sides)) for k in range(sides)]


def _star(cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * 0.45
        a = rotation + math.pi * k / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _cross(cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """A plus sign whose arms are 0.6 r wide."""
    w = 0.3 * r
    pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w),
           (-r, w), (-w, w), (-w, r)]
    c, s = math.cos(rotation), math.sin(rotation)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def render(scene: Scene, size: int = 64, seed: int = 0) -> Any:
    """Draw a scene as a PIL image (drawn at 4x and downsampled, for smooth edges).

    ``seed`` adds small jitter to positions, sizes and rotations and a little noise, so that
    two images of the same scene are not identical.
    """
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    big = size * 4
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for t in scene.things:
        px, py = POSITIONS[t.position]
        cx = (px + rng.uniform(-0.04, 0.04)) * big
        cy = (py + rng.uniform(-0.04, 0.04)) * big
        r = SIZES[t.size] * rng.uniform(0.9, 1.1) * big
        colour = tuple(max(0, min(255, c + rng.randint(-18, 18))) for c in COLOURS[t.colour])
        if t.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif t.shape == "square":
            draw.polygon(_polygon(cx, cy, r * 1.2, 4, math.pi / 4 + rng.uniform(-0.15, 0.15)),
                         fill=colour)
        elif t.shape == "triangle":
            draw.polygon(_polygon(cx, cy, r * 1.25, 3, -math.pi / 2 + rng.uniform(-0.2, 0.2)),
                         fill=colour)
        elif t.shape == "star":
            draw.polygon(_star(cx, cy, r * 1.3, -math.pi / 2 + rng.uniform(-0.2, 0.2)),
                         fill=colour)
        elif t.shape == "cross":
            draw.polygon(_cross(cx, cy, r * 1.15, rng.uniform(-0.2, 0.2)), fill=colour)
        else:
            raise ValueError(f"unknown shape {t.shape!r}")
    return img.resize((size, size), Image.Resampling.LANCZOS)


def write_dataset(folder: str | Path, n: int, *, seed: int = 0, size: int = 64,
                  max_things: int = 2, fmt: str = "png", languages: tuple[str, ...] = ("en",)
                  ) -> list[tuple[Path, Scene]]:
    """Write ``n`` images with sidecar captions (x.png + x.txt, in the first language) into
    ``folder``.

    Also writes ``captions.jsonl`` (image, several captions per image in every language, for
    training; with several languages also ``captions-{lang}.jsonl``, one language each) and
    ``scenes.jsonl`` (the structured attributes, for evaluation). Returns
    (path, scene) pairs. The images depend on ``seed`` only, not on the languages.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out: list[tuple[Path, Scene]] = []
    by_language = ({lang: open(folder / f"captions-{lang}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
                    for lang in languages} if len(languages) > 1 else {})
    with open(folder / "captions.jsonl", "w", encoding="utf-8") as caps, \
            open(folder / "scenes.jsonl", "w", encoding="utf-8") as sc, \
            contextlib.ExitStack() as files:
        for f in by_language.values():
            files.callback(f.close)
        for i in range(n):
            scene = random_scene(rng, max_things)
            name = f"scene_{seed}_{i:05d}"
            path = folder / f"{name}.{fmt}"
            render(scene, size, seed=rng.randrange(2**31)).save(path)
            (folder / f"{name}.txt").write_text(scene.caption(languages[0]) + "\n",
                                                encoding="utf-8")
            texts = [c for lang in languages for c in scene.captions(lang)]
            caps.write(json.dumps({"image": path.name, "captions": texts},
                                  ensure_ascii=False) + "\n")
            for lang, out_file in by_language.items():
                out_file.write(json.dumps({"image": path.name, "captions": scene.captions(lang)},
                                          ensure_ascii=False) + "\n")
            sc.write(json.dumps({"image": path.name, **scene.to_dict()}) + "\n")
            out.append((path, scene))
    return out


def read_scenes(folder: str | Path) -> dict[str, Scene]:
    """The scenes of a folder written by :func:`write_dataset`, keyed by absolute image path."""
    folder = Path(folder)
    scenes = {}
    with open(folder / "scenes.jsonl") as f:
        for line in f:
            d = json.loads(line)
            scenes[str((folder / d.pop("image")).absolute())] = Scene.from_dict(d)
    return scenes

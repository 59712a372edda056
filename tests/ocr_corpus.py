"""Rendered images with known text, for OCR tests and ``benchmarks/ocr.py``: English and Chinese
words and phrases in several fonts and sizes (14-80 px), level or rotated up to 10 degrees, on
plain, noisy (gradients, noise, blurred shapes) and photo backgrounds (scikit-image's bundled
photos, the text laid over them like a sign or a caption; also at a phone camera's 12 MP, the
text twice as large in pixels); fine print (10-13 px; 20-26 px at 12 MP); screenshot-like
images (dark or light UI, many lines); and images with no text at all (photos, crops of them,
drawn scenes).

Each needle (a word someone would search for) is printed in exactly one image, inside a
realistic phrase, beside distractor text that shares no needle; ``write_corpus`` checks that
no needle occurs in any other image's text. Everything follows from the seed.

    from ocr_corpus import write_corpus
    corpus = write_corpus(tmp_path, per_language=8, no_text=4)
    corpus.needles  # [Needle(word='invoice', lang='en', path=..., background='noisy'), ...]
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
LATIN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf",
               "DejaVuSansCondensed.ttf", "DejaVuSansMono.ttf", "LiberationSans-Regular.ttf",
               "LiberationSans-Bold.ttf", "LiberationSerif-Regular.ttf",
               "LiberationSerif-Italic.ttf", "LiberationSansNarrow-Regular.ttf")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


def missing_fonts() -> list[str]:
    """The fonts the corpus draws with that this machine lacks (Debian: fonts-dejavu-core,
    fonts-dejavu-extra, fonts-liberation, fonts-wqy-microhei; .ci/run installs them)."""
    missing = [name for name in LATIN_FONTS if not any((d / name).exists() for d in FONT_DIRS)]
    return missing + ([] if CJK_FONT.exists() else [str(CJK_FONT)])

# (needle, the phrase it is printed in)
ENGLISH = [
    ("receipt", "Customer Receipt"), ("invoice", "INVOICE 4471"), ("lindner", "Hotel Lindner"),
    ("pharmacy", "City Pharmacy"), ("bakery", "Fresh Bakery"), ("parking", "Parking Level 2"),
    ("museum", "Science Museum"), ("platform", "Platform 9"), ("departures", "Departures"),
    ("luggage", "Luggage Storage"), ("emergency", "Emergency Exit"), ("library", "Public Library"),
    ("espresso", "Espresso Bar"), ("menu", "Lunch Menu"), ("discount", "Student Discount"),
    ("elevator", "Elevator"), ("stairs", "Use Stairs"), ("hospital", "General Hospital"),
    ("bank", "Harbor Bank"), ("postal", "Postal Service"), ("supermarket", "SUPERMARKET"),
    ("restaurant", "Italian Restaurant"), ("restroom", "Restroom"), ("gate", "Gate B12"),
    ("wifi", "Free WiFi"), ("warning", "Warning High Voltage"),
    ("construction", "Construction Ahead"), ("school", "Elementary School"),
    ("garden", "Botanical Garden"), ("meeting", "Meeting Room 3"),
    ("registration", "Registration Form"), ("contract", "Rental Contract"),
    ("notice", "Water Notice"), ("tariff", "Tariff Table"), ("nutrition", "Nutrition Facts"),
    ("delivery", "Delivery Lockers"), ("charging", "Charging Station"), ("sale", "Summer Sale"),
    ("password", "Enter Password"), ("error", "Connection Error"),
    ("download", "Download Complete"), ("settings", "System Settings"),
    ("boarding", "Boarding Pass"), ("toronto", "Toronto 12 km"), ("bicycle", "Bicycle Repair"),
    ("laundry", "Laundry Room"), ("vacancy", "No Vacancy"), ("checkout", "Self Checkout"),
]
CHINESE = [
    ("出口", "紧急出口"), ("收据", "购物收据"), ("酒店", "林德纳酒店"), ("发票", "增值税发票"),
    ("营业时间", "营业时间 9:00-21:00"), ("停车场", "地下停车场"), ("药店", "社区药店"),
    ("面包", "新鲜面包"), ("地铁", "地铁站入口"), ("厕所", "公共厕所"), ("吸烟", "禁止吸烟"),
    ("地滑", "小心地滑"), ("博物馆", "自然博物馆"), ("图书馆", "市立图书馆"), ("火车站", "火车站"),
    ("售票处", "售票处"), ("行李", "行李寄存"), ("咖啡", "现磨咖啡"), ("菜单", "今日菜单"),
    ("优惠", "会员优惠"), ("电梯", "电梯"), ("楼梯", "安全楼梯"), ("医院", "人民医院"),
    ("银行", "招商银行"), ("邮局", "邮局"), ("超市", "华联超市"), ("餐厅", "川菜餐厅"),
    ("洗手间", "洗手间"), ("登机口", "登机口 B12"), ("免费", "免费无线网络"),
    ("高压", "高压危险"), ("施工", "前方施工"), ("学校", "实验学校"), ("公园", "中山公园"),
    ("会议室", "会议室 3F"), ("报名", "报名表"), ("合同", "租赁合同"), ("停水", "停水通知"),
    ("价格", "价格表"), ("光临", "欢迎光临"), ("营养", "营养成分表"), ("快递", "快递柜"),
    ("充电", "充电桩"), ("打折", "全场打折"), ("密码", "请输入密码"), ("错误", "连接错误"),
    ("下载", "下载完成"), ("设置", "系统设置"),
]
DISTRACT_EN = ("Welcome", "Thank you", "Please wait", "Open daily", "Total 12.50",
               "Monday to Friday", "Keep calm", "Private", "Quiet please", "No smoking",
               "Address", "Phone 555 0199", "Date 2024-05-17", "Amount", "Good morning",
               "Staff only", "Caution", "Push", "Pull", "Floor 4")
DISTRACT_ZH = ("谢谢合作", "请勿触摸", "注意安全", "保持安静", "排队等候", "当心", "总计",
               "数量", "日期", "单价", "地址", "您好", "早上好", "周一至周五", "请随手关门",
               "非工作人员", "禁止入内", "节约用水", "爱护环境", "请走这边")
# phone: a photo background at a phone camera's 12 MP, text twice the size in pixels;
# small: fine print (10-13 px on 1600 x 1200, 20-26 px at 12 MP) on a plain or noisy background
BACKGROUNDS = ("plain", "noisy", "photo", "rotated", "phone", "small")
SCREEN_LINES_EN = ("INFO worker {n} started", "DEBUG cache hit ratio 0.{n}",
                   "GET /api/items?page={n} 200", "Saved {n} files", "Build finished in {n} ms",
                   "File  Edit  View  Help", "Open recent", "Find and replace",
                   "Tab {n} of 12", "Zoom {n}%")
SCREEN_LINES_ZH = ("文件  编辑  视图  帮助", "已保存 {n} 个文件", "正在同步", "新建文件夹",
                   "最近打开", "查找和替换", "第 {n} 页", "缩放 {n}%", "个人资料", "消息列表")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field",
          "immunohistochemistry", "coins", "moon", "clock", "retina", "colorwheel", "grass",
          "gravel", "brick")


@dataclass(frozen=True)
class Needle:
    word: str
    lang: str  # "en" or "zh"
    path: str
    background: str  # plain, noisy, photo, rotated, phone, small, screenshot


@dataclass(frozen=True)
class Picture:
    path: str
    kind: str  # "text", "screenshot" or "no-text"
    background: str
    lines: tuple[str, ...]  # the text printed on it (none for no-text images)


@dataclass
class Corpus:
    pictures: list[Picture] = field(default_factory=list)
    needles: list[Needle] = field(default_factory=list)

    def paths(self, kind: str | None = None) -> list[str]:
        return [p.path for p in self.pictures if kind is None or p.kind == kind]


def write_corpus(folder: str | Path, *, per_language: int = 48, screenshots: int = 8,
                 no_text: int = 24, seed: int = 0) -> Corpus:
    """Write the images under ``folder``: ``per_language`` needles per language (at most 48;
    ``screenshots`` of them, per language, printed in screenshots, the rest spread evenly over
    :data:`BACKGROUNDS`), and ``no_text`` images without text. Returns paths and truth."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    corpus = Corpus()
    for lang, table in (("en", ENGLISH), ("zh", CHINESE)):
        picks = rng.sample(table, min(per_language, len(table)))
        n_screen = min(screenshots, len(picks))
        for i, (word, phrase) in enumerate(picks):
            if i < n_screen:
                background, name = "screenshot", f"screen-{lang}-{i:02d}.png"
                img, lines = _screenshot(phrase, lang, rng, nrng)
            else:
                background = BACKGROUNDS[(i - n_screen) % len(BACKGROUNDS)]
                name = f"{background}-{lang}-{i:02d}.jpg"
                img, lines = _scene(phrase, lang, background, rng, nrng)
            path = str((folder / name).absolute())
            _save(img, path)
            kind = "screenshot" if background == "screenshot" else "text"
            corpus.pictures.append(Picture(path, kind, background, tuple(lines)))
            corpus.needles.append(Needle(word, lang, path, background))
    for i in range(no_text):
        path = str((folder / f"notext-{i:03d}.jpg").absolute())
        img, background = _no_text(i, rng, nrng)
        _save(img, path)
        corpus.pictures.append(Picture(path, "no-text", background, ()))
    _check_unique(corpus)
    return corpus


def _save(img: Image.Image, path: str) -> None:
    if path.endswith(".png"):
        img.save(path)
    else:
        img.convert("RGB").save(path, quality=90)


def _check_unique(corpus: Corpus) -> None:
    """Each needle occurs in its own image's text and in no other's."""
    text = {p.path: " ".join(p.lines).lower() for p in corpus.pictures}
    for n in corpus.needles:
        holders = [p for p, t in text.items() if n.word in t]
        if holders != [n.path]:
            raise AssertionError(f"needle {n.word!r} is printed in {holders}")


def font(lang: str, size: int, rng: random.Random) -> ImageFont.FreeTypeFont:
    if lang == "zh":
        return ImageFont.truetype(str(CJK_FONT), size)
    name = rng.choice(LATIN_FONTS)
    folder = next(d for d in FONT_DIRS if (d / name).exists())
    return ImageFont.truetype(str(folder / name), size)


def _size(rng: random.Random, scale: int = 1) -> int:
    """Small, medium or large text, in pixels (times ``scale``)."""
    band = rng.choice(((14, 20), (22, 40), (44, 80)))
    return rng.randint(*band) * scale


def _scene(phrase: str, lang: str, background: str, rng: random.Random,
           nrng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """``phrase`` and one to three distractors laid over a background, one per band."""
    base = {"rotated": rng.choice(("plain", "noisy", "photo")), "phone": "photo",
            "small": rng.choice(("plain", "noisy"))}.get(background, background)
    w, h = rng.choice({"phone": ((4032, 3024), (3024, 4032)),
                       "small": ((1600, 1200), (4032, 3024))}.get(
        background, ((800, 600), (1024, 768), (1280, 960), (960, 720), (720, 960))))
    img = {"plain": _plain, "noisy": _noisy, "photo": _photo}[base](w, h, rng, nrng)
    pool = DISTRACT_EN if lang == "en" else DISTRACT_ZH
    lines = [phrase, *rng.sample(pool, rng.randint(1, 3))]
    rng.shuffle(lines)
    band = h // len(lines)
    for i, line in enumerate(lines):
        angle = rng.choice((-1, 1)) * rng.uniform(3, 10) if background == "rotated" else 0.0
        boxed = base == "photo" and rng.random() < 0.5  # a sign, else a caption
        size = _size(rng, 2 if background == "phone" else 1)
        if background == "small":
            size = rng.randint(10, 13) * (2 if w > 2000 else 1)
        _draw_text(img, line, lang, size, angle, (0, i * band, w, band), boxed, rng)
    return img, lines


def _draw_text(img: Image.Image, text: str, lang: str, size: int, angle: float,
               band: tuple[int, int, int, int], boxed: bool, rng: random.Random) -> None:
    """Draw ``text`` inside the band (x, y, width, height), on a plate when ``boxed``, in a
    colour that stands out from what lies under it."""
    f = font(lang, size, rng)
    x0, y0, x1, y1 = (int(v) for v in f.getbbox(text))
    pad = size // 3
    tw, th = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    layer = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    bx, by, bw, bh = band
    ox = bx + rng.randint(0, max(0, bw - tw - int(abs(angle) * 4) - 1))
    oy = by + max(0, (bh - th) // 2 + rng.randint(-bh // 6, bh // 6))
    under = np.asarray(img.convert("L").crop((ox, oy, ox + tw, oy + th)), dtype=np.float32)
    light_under = float(under.mean()) > 128 if under.size else True
    if boxed:
        plate = (250, 250, 245) if rng.random() < 0.5 else (30, 70, 150)
        draw.rounded_rectangle((0, 0, tw - 1, th - 1), radius=pad // 2, fill=(*plate, 235))
        ink = (20, 20, 20) if sum(plate) > 384 else (255, 255, 255)
        stroke = 0
    else:
        ink = (15, 15, 25) if light_under else (250, 250, 240)
        stroke = max(1, size // 16) if rng.random() < 0.5 else 0
    halo = (255, 255, 255) if ink[0] < 128 else (0, 0, 0)
    draw.text((pad - x0, pad - y0), text, font=f, fill=(*ink, 255),
              stroke_width=stroke, stroke_fill=(*halo, 255))
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    img.paste(layer, (ox, oy), layer)


def _plain(w: int, h: int, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    light = rng.random() < 0.7
    c = [rng.randint(200, 255) if light else rng.randint(10, 70) for _ in range(3)]
    return Image.new("RGB", (w, h), tuple(c))


def _noisy(w: int, h: int, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    """A gradient, blurred shapes and sensor-like noise."""
    a, b = nrng.integers(0, 256, (2, 3)).astype(np.float32)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    u = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    mix = (t + u) / 2
    img = Image.fromarray((a * (1 - mix) + b * mix).astype(np.uint8))
    shapes = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(shapes)
    for _ in range(rng.randint(4, 10)):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randint(30, min(w, h) // 3)
        fill = (*(rng.randrange(256) for _ in range(3)), rng.randint(80, 200))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r, x + r, y + r),
                                                                  fill=fill)
    shapes = shapes.filter(ImageFilter.GaussianBlur(rng.uniform(4, 12)))
    img.paste(shapes, (0, 0), shapes)
    noise = nrng.normal(0, rng.uniform(6, 20), (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))


def _skimage_photo(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8))


def _photo(w: int, h: int, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    """One of scikit-image's photos, cropped to the aspect and scaled to (w, h)."""
    img = _skimage_photo(rng.choice(PHOTOS[:7]))
    iw, ih = img.size
    scale = min(iw / w, ih / h) * rng.uniform(0.8, 1.0)
    cw, ch = int(w * scale), int(h * scale)
    x, y = rng.randint(0, iw - cw), rng.randint(0, ih - ch)
    return img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)


def _screenshot(phrase: str, lang: str, rng: random.Random, nrng: np.random.Generator
                ) -> tuple[Image.Image, list[str]]:
    """A dark or light UI: a title bar, a side bar and 12-30 lines, one of them the phrase."""
    w, h = rng.choice(((1280, 800), (1440, 900), (1024, 768), (750, 1334)))
    dark = rng.random() < 0.5
    bg, fg, bar = (((30, 30, 36), (220, 220, 220), (50, 50, 60)) if dark else
                   ((250, 250, 250), (30, 30, 30), (225, 228, 235)))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, 36), fill=bar)
    side = w // 5 if w > h else 0
    draw.rectangle((0, 36, side, h), fill=bar)
    size = rng.randint(13, 18)
    templates = SCREEN_LINES_EN if lang == "en" else SCREEN_LINES_ZH
    n = max(12, min(30, (h - 60) // (size * 2)))
    lines = [rng.choice(templates).format(n=rng.randint(1, 99)) for _ in range(n)]
    lines[rng.randrange(n)] = phrase
    f = font(lang, size, rng)
    for i, line in enumerate(lines):
        draw.text((side + 16, 50 + i * size * 2), line, font=f, fill=fg)
    return img, lines


def _no_text(i: int, rng: random.Random, nrng: np.random.Generator
             ) -> tuple[Image.Image, str]:
    """A photo as it is, a random crop of one scaled, or a drawn scene, in turn."""
    w, h = rng.choice(((800, 600), (1280, 960), (1600, 1200), (640, 480), (960, 1280),
                       (4032, 3024)))
    if i % 3 == 0:
        return _skimage_photo(PHOTOS[i // 3 % len(PHOTOS)]), "photo"
    if i % 3 == 1:
        img = _skimage_photo(rng.choice(PHOTOS))
        iw, ih = img.size
        cw, ch = rng.randint(iw // 2, iw), rng.randint(ih // 2, ih)
        x, y = rng.randint(0, iw - cw), rng.randint(0, ih - ch)
        return img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC), "crop"
    return _noisy(w, h, rng, nrng), "drawn"


def photos_without_text(folder: str | Path, n: int, seed: int = 0) -> list[str]:
    """Only ``n`` images with no text (for throughput and indexing overhead)."""
    return write_corpus(folder, per_language=0, screenshots=0, no_text=n, seed=seed).paths()


def as_array(path: str) -> Any:
    """The image as an RGB uint8 array (what an engine takes)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))

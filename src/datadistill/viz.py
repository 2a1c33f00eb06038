"""Pictures: image grids of distilled sets, loss/accuracy curves, accuracy-vs-IPC plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .data.spec import DatasetSpec
from .fileio import atomic_write, read_jsonl
from .synset.base import SYNSETS


def grid_tensor(images: torch.Tensor, spec: DatasetSpec, nrow: int, padding: int = 2) -> torch.Tensor:
    """De-normalize to [0, 1] and tile with ``torchvision.utils.make_grid``."""
    from torchvision.utils import make_grid

    x = spec.denormalize(images.detach().float().cpu()).clamp(0, 1)
    return make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)


def save_grid(synset: Any, spec: DatasetSpec, path: str | Path, max_per_class: int = 20,
              view: Callable[[torch.Tensor], torch.Tensor] | None = None, crops: dict[str, Any] | None = None,
              sources: torch.Tensor | None = None) -> Path:
    """One row per class (up to ``max_per_class`` images), written atomically as PNG.

    ``view`` maps the set's images to normalized images before they are drawn: a set distilled on
    ZCA-whitened data looks like noise unless it is un-whitened (``view=zca.invert``).

    A set made of patches of real images whose file records them (metadata ``crops``, see
    `save_crop_grid`) is drawn with each image beside the training images its patches came from,
    the boxes outlined, when ``sources`` (the training images the indices refer to) are given.

    Set types with a layout of their own are drawn their way (`GRIDS`, by registered set type): a
    set grouped by GD steps (``steps``, Dataset Distillation) one row per step, each row labelled with
    the step sizes learned for it in every epoch (`save_step_grid`); a factorized set (HaBa) one panel
    per class, bases by hallucinators, with its collapse diagnostic (`save_factorized_grid`).
    """
    from torchvision.utils import save_image

    if view is not None:
        spec = _ViewedSpec(spec, view)  # type: ignore[assignment]  # every grid kind draws through it
    if crops and sources is not None:
        return save_crop_grid(synset, spec, path, crops, sources, max_per_class=min(max_per_class, 10))
    own = GRIDS.get(set_type(synset))
    if own is not None:
        return own(synset, spec, path)
    images, labels = synset.materialize()
    rows = []
    per = min(synset.ipc, max_per_class)
    for c in range(spec.num_classes):
        rows.append(images[labels == c][:per])
    # one row per class; with one image per class, the classes side by side in one row
    grid = grid_tensor(torch.cat(rows), spec, nrow=per if per > 1 else spec.num_classes)
    path = Path(path)
    atomic_write(path, lambda p: save_image(grid, p, format="png"))
    return path


class _ViewedSpec:
    """``spec`` whose ``denormalize`` first maps the images through ``view`` (e.g. ZCA inversion), so
    that every grid kind (`grid_tensor`) draws the viewed images; everything else is ``spec``'s."""

    def __init__(self, spec: DatasetSpec, view: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._spec, self._view = spec, view

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return self._spec.denormalize(self._view(x))


def save_crop_grid(synset: Any, spec: DatasetSpec, path: str | Path, crops: dict[str, Any], sources: torch.Tensor,
                   max_per_class: int = 10) -> Path:
    """A set of patches of real images (RDED) beside where the patches came from: one row per class;
    each image (up to ``max_per_class``) followed by the training images of its patches, in the
    order of their places (row major), each patch's box outlined on its source and its place
    outlined on the image in one colour per patch.

    ``crops`` is the file's record: parallel lists ``image`` (the set's row holding the patch),
    ``source`` (the training image, an index into ``sources``), ``box`` and ``place`` (``top, left,
    height, width`` in pixels of the source and of the set's image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    images, labels = synset.materialize()
    rows_of = torch.as_tensor(crops["image"])
    boxes, places = torch.as_tensor(crops["box"]).view(-1, 4), torch.as_tensor(crops["place"]).view(-1, 4)
    src = torch.as_tensor(crops["source"])
    per = min(synset.ipc, max_per_class)
    m = max(int(torch.bincount(rows_of).max()), 1) if rows_of.numel() else 1  # patches per image
    H, W = images.shape[-2:]
    pad, gap = 2, 10  # pixels between a group's cells, between groups
    group_w = (1 + m) * W + m * pad
    canvas_w = per * group_w + (per - 1) * gap
    canvas_h = spec.num_classes * H + (spec.num_classes - 1) * gap
    canvas = torch.ones(canvas_h, canvas_w, 3)

    def shown(x: torch.Tensor) -> torch.Tensor:  # one image as [H, W, 3] in [0, 1]
        return spec.denormalize(x.detach().float().cpu()[None]).clamp(0, 1)[0].expand(3, -1, -1).permute(1, 2, 0)

    colours = plt.get_cmap("tab10").colors
    outlines = []  # (x0, y0, w, h, colour) in canvas pixels
    for c in range(spec.num_classes):
        y0 = c * (H + gap)
        for g, n in enumerate(torch.nonzero(labels == c).flatten()[:per].tolist()):
            x0 = g * (group_w + gap)
            canvas[y0 : y0 + H, x0 : x0 + W] = shown(images[n])
            mine = torch.nonzero(rows_of == n).flatten()
            mine = mine[torch.argsort(places[mine, 0] * W + places[mine, 1])]
            for t, j in enumerate(mine.tolist()):
                colour = colours[t % len(colours)]
                pt, pl, ph, pw = places[j].tolist()
                outlines.append((x0 + pl, y0 + pt, pw, ph, colour))
                xs = x0 + (t + 1) * (W + pad)
                canvas[y0 : y0 + H, xs : xs + W] = shown(sources[int(src[j])])
                bt, bl, bh, bw = boxes[j].tolist()
                outlines.append((xs + bl, y0 + bt, bw, bh, colour))
    scale = max(1.0, 48 / max(H, W))  # a cell at least ~48 pixels on a side
    fig, ax = plt.subplots(figsize=(1.0 + canvas_w * scale / 100, 0.6 + canvas_h * scale / 100))
    ax.imshow(canvas.numpy(), interpolation="nearest")
    for x, y, w, h, colour in outlines:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.2))
    ax.set_xticks([g * (group_w + gap) + W / 2 for g in range(per)])
    ax.set_xticklabels([f"image {g}" for g in range(per)], fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([c * (H + gap) + H / 2 for c in range(spec.num_classes)])
    ax.set_yticklabels(list(spec.class_names), fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("each image, then its patches' training images: boxes cut, one colour per patch", fontsize=8,
                 pad=14)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def save_step_grid(synset: Any, spec: DatasetSpec, path: str | Path) -> Path:
    """One row per distilled step, labelled ``step s: lr e1, e2, ...`` (one per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = synset.lrs().detach().cpu().view(synset.epochs, synset.steps)
    rows = synset.steps
    fig, axes = plt.subplots(rows, 1, figsize=(1.0 + 0.6 * synset.num_classes * synset.per_step, 0.9 * rows + 0.3),
                             squeeze=False)
    for s, ax in enumerate(axes[:, 0]):
        x, _ = synset.step_images(s)
        grid = grid_tensor(x, spec, nrow=x.shape[0]).permute(1, 2, 0).numpy()
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"step {s}", rotation=0, ha="right", va="center", fontsize=8)
        ax.set_title("lr " + ", ".join(f"{v:.3g}" for v in lrs[:, s].tolist()), fontsize=7, loc="left", pad=2)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def save_factorized_grid(synset: Any, spec: DatasetSpec, path: str | Path, max_per_class: int = 10) -> Path:
    """A factorized set (HaBa): one panel per class, five to a row; in a panel its bases (up to
    ``max_per_class``) down, and across each base then its hallucinations by hallucinator ``h0, h1, ...``.

    Every tile is stretched to its own range (its minimum black, its maximum white): hallucinations
    drift in scale (`synset.factorized`) and would otherwise clip to solid strokes. Under each column,
    that hallucinator's collapse diagnostic over the class's bases (``r``: correlation with the base,
    ``hf``: high-frequency ratio, `synset.collapse.collapse_diagnostic`); the caption gives it over
    all classes and names the hallucinators that are low-pass copies of their bases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .synset.collapse import collapse_diagnostic

    report = collapse_diagnostic(synset)
    b, n_h, n_c = synset.bases_per_class, synset.n_hallucinators, synset.num_classes
    per = min(b, max_per_class)
    idx = torch.cat([torch.arange(c * b, c * b + per) for c in range(n_c)]).to(synset.bases.device)
    with torch.no_grad():
        hal = torch.stack([synset.hallucinate(h, idx) for h in range(n_h)], dim=1)  # [rows, H, c, h, w]
        bases = synset.bases[idx]
    if bases.shape[1] != hal.shape[2]:  # bases with fewer channels than the images: draw them gray
        bases = bases.mean(1, keepdim=True).expand(-1, hal.shape[2], -1, -1)
    tiles = spec.denormalize(torch.cat([bases.unsqueeze(1), hal], dim=1).flatten(0, 1).detach().float().cpu())
    lo = tiles.amin(dim=(1, 2, 3), keepdim=True)
    tiles = (tiles - lo) / (tiles.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    tiles = tiles.view(n_c, per, n_h + 1, *tiles.shape[1:])
    ch, ih, iw = tiles.shape[3:]
    pad = max(1, ih // 14)
    gh, gw = per * (ih + pad) - pad, (n_h + 1) * (iw + pad) - pad  # a panel's pixels

    # layout in inches: caption, then rows of panels (title + column names, tiles, two lines of figures)
    tile_in = 0.36  # 36 pixels at 100 dpi: a little over a 28-pixel image's own size
    w, h = gw / (iw + pad) * tile_in, gh / (ih + pad) * tile_in
    above, below, gap, margin, caption = 0.42, 0.36, 0.22, 0.12, 0.62
    cols = min(n_c, 5)
    rows = -(-n_c // cols)
    fw = 2 * margin + cols * w + (cols - 1) * gap
    fh = caption + rows * (above + h + below) + margin
    fig = plt.figure(figsize=(fw, fh))
    num = lambda v: f"{v:.2f}".replace("0.", ".", 1) if abs(v) < 1 else f"{v:.1f}"  # noqa: E731
    for c in range(n_c):
        r, k = divmod(c, cols)
        top = fh - caption - r * (above + h + below) - above
        ax = fig.add_axes(((margin + k * (w + gap)) / fw, (top - h) / fh, w / fw, h / fh))
        grid = torch.ones(ch, gh, gw)
        for i in range(per):
            for j in range(n_h + 1):
                grid[:, i * (ih + pad):i * (ih + pad) + ih, j * (iw + pad):j * (iw + pad) + iw] = tiles[c, i, j]
        img = grid.permute(1, 2, 0).numpy()
        ax.imshow(img.squeeze(-1) if ch == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest",
                  aspect="auto")
        ax.axis("off")
        name = str(spec.class_names[c]) if c < len(spec.class_names) else str(c)
        ax.set_title(f"class {name}", fontsize=9, pad=11)
        centre = [j * (iw + pad) + iw / 2 for j in range(n_h + 1)]
        for j, label in enumerate(["base"] + [f"h{x}" for x in range(n_h)]):
            ax.text(centre[j], -pad, label, ha="center", va="bottom", fontsize=7)
        figures = [("r", "hf")] + [(num(d["corr"]), num(d["hf_ratio"])) for d in report.of_class(c)]
        for j, (a, bb) in enumerate(figures):
            ax.text(centre[j], gh + pad, f"{a}\n{bb}", ha="center", va="top", fontsize=7, linespacing=1.15,
                    style="italic" if j == 0 else "normal")
    low = report.low_pass()
    overall = ", ".join(f"h{x} {d['corr']:.2f} / {d['hf_ratio']:.2f}" for x, d in enumerate(report.per_hallucinator()))
    fig.text(0.5, 1 - 0.08 / fh, f"{b} base{'s' if b > 1 else ''} x {n_h} hallucinators per class"
             + (f" (first {per} bases shown)" if per < b else "") + "; every tile stretched to its own range\n"
             f"under each column, over the class's bases: r = correlation with the base, hf = high-frequency ratio\n"
             f"all classes: {overall}; {len(low)} of {n_h} hallucinators are low-pass copies of their bases"
             + (f" ({', '.join(f'h{x}' for x in low)})" if low else ""), ha="center", va="top", fontsize=8)
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def set_type(synset: Any) -> str | None:
    """The name ``synset``'s type is registered under (`synset.SYNSETS`), or None."""
    return next((n for n in SYNSETS.names() if type(synset) is SYNSETS.get(n)), None)


# registered set type -> how a set of it is drawn; any other type: one row per class
GRIDS: dict[str, Callable[[Any, DatasetSpec, str | Path], Path]] = {
    "steps": save_step_grid, "factorized": save_factorized_grid,
}


def plot_metrics(metrics_path: str | Path, out: str | Path) -> Path | None:
    """Loss per iteration (and intermediate accuracies, if any) from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics_path)
    steps = [(r["iteration"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["iteration"], r["eval"]["acc_mean"]) for r in rows if "eval" in r and "acc_mean" in r["eval"]]
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*steps), lw=0.8, label="loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals), "o-", color="C1", label="accuracy")
        ax2.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return out


def plot_acc_vs_ipc(records: Sequence[dict[str, Any]], out: str | Path, title: str = "",
                    ylabel: str = "test accuracy (%)", names: dict[str, str] | None = None,
                    legend: dict[str, str] | None = None) -> Path:
    """Accuracy vs images per class: one panel per dataset, one line per method, error bars = std.
    Each method keeps one colour, marker and line style in every panel, and no two methods share all
    three, so every series stays distinguishable (in grey too). ``legend`` gives a method's label in
    the legend (default: its name), e.g. to say which series train on other labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
    for r in records:
        if int(r["ipc"]) <= 0:  # whole-dataset reference rows have no images-per-class position
            continue
        groups.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(
            (int(r["ipc"]), r["acc_mean"], r["acc_std"]))
    methods = sorted({m for g in groups.values() for m in g}, key=lambda m: (m not in _METHOD_ORDER,
                                                                            _METHOD_ORDER.index(m) if m in _METHOD_ORDER else 0, m))
    style = method_styles(methods)
    names = names or {}
    datasets = sorted(groups, key=lambda d: (list(names).index(d) if d in names else len(names), d)) or [""]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method in methods:
            pts = sorted(groups.get(dataset, {}).get(method, []))
            if not pts:
                continue
            xs, ms, ss = zip(*pts)
            ax.errorbar(xs, ms, yerr=ss, capsize=3, label=(legend or {}).get(method, method), markersize=6,
                        linewidth=1.5, **style[method])
        ax.set_xscale("log")
        ticks = sorted({x for pts in groups.get(dataset, {}).values() for x, _, _ in pts})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("images per class")
        ax.set_ylabel(ylabel)
        ax.set_title(names.get(dataset, dataset))
        ax.grid(alpha=0.3)
    if groups:
        handles, labels = axes[0][0].get_legend_handles_labels()
        for ax in axes[0][1:]:  # methods absent from the first panel
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return out


def method_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour, marker and line style per method, in order: no two of the first 19 methods share a
    colour, none of them shares both marker and line style with another, and two of the first 12 that
    share a line style differ clearly in colour (black follows tab10's ten: Dark2's first, a teal,
    drew FRePo beside k-center's green in the same dash-dot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10").colors + ((0.0, 0.0, 0.0),) + plt.get_cmap("Dark2").colors
    markers, styles = "osD^vP*Xph<>", ("-", "--", "-.", ":")
    return {m: dict(color=colours[i % len(colours)], marker=markers[i % len(markers)],
                    linestyle=styles[i % len(styles)]) for i, m in enumerate(methods)}


_METHOD_ORDER = ["random", "herding", "kcenter", "dd", "dc", "dsa", "dm", "mtt", "haba", "datm", "rded", "frepo"]


def plt_figure(ncols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """``(figure, axes)`` of a headless matplotlib figure: one axes, or a row of ``ncols``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(size[0] * ncols, size[1]), squeeze=False)
    return fig, (axes[0][0] if ncols == 1 else list(axes[0]))


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return out

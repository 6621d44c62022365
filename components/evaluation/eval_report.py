"""The evaluation report: report.json (every number), report.md (tables) and small PNG plots.

    report.json   {"checkpoint", "step", "data_hash", "versions": {torch, lm_eval, python, abstractinator},
                   "compression": {name: entry of compression_eval.py}, "lm_eval": {task: metrics},
                   "metrics": the flat dict the promotion gate reads}
    report.md     a bits-per-byte table (model and the four compressors, same bytes, same run), per-level table,
                  reconstruction and lm-eval tables
    bpb_vs_compressors.png, segment_lengths.png, segment_sample.png
With a bench/quality.py JSON (report["quality_benchmark"]), the bar chart and the table gain its plain byte
transformer (same parameter count, same training seconds as the benchmark's run of the model).
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

COMPRESSORS = ("gzip", "bzip2", "xz", "zstd")
COMPRESSOR_LABELS = {"gzip": "gzip -9", "bzip2": "bzip2 -9", "xz": "xz -9e", "zstd": "zstd -19"}


def flat_metrics(compression: dict, lm_eval_results: dict) -> dict[str, float]:
    """The gate's metrics: <name>_bits_per_byte per text/split, <name>_<compressor>_bits_per_byte, and for the
    test split (else the first entry) live_code_share_L{i}, bytes_per_code_L{i},
    codebook_perplexity_L{i}, reconstruction_exact_match_bytes/_windows; lm-eval as <task>_<metric>."""
    metrics: dict[str, float] = {}
    for name, entry in compression.items():
        metrics[f"{name}_bits_per_byte"] = entry["bits_per_byte"]
        for compressor, value in entry["baselines"].items():
            metrics[f"{name}_{compressor}_bits_per_byte"] = value
    if compression:
        main = compression.get("test") or next(iter(compression.values()))
        for level, stats in enumerate(main["levels"]):
            metrics[f"live_code_share_L{level}"] = stats["live_code_share"]
            metrics[f"bytes_per_code_L{level}"] = stats["bytes_per_code"]
            metrics[f"codebook_perplexity_L{level}"] = stats["codebook_perplexity"]
        metrics["reconstruction_exact_match_bytes"] = main["reconstruction"]["exact_match_bytes"]
        metrics["reconstruction_exact_match_windows"] = main["reconstruction"]["exact_match_windows"]
    for task, values in lm_eval_results.items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics[f"{task}_{key.replace(',none', '').replace(',', '_')}"] = float(value)
    return metrics


def _markdown(report: dict) -> str:
    lines = [
        f"# Evaluation of `{report['checkpoint']}`",
        "",
        f"step {report.get('step')}, data hash `{report.get('data_hash')}`, "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
    ]
    compression = report["compression"]
    if compression:
        lines += [
            "## Bits per byte (lower is better; same bytes, same run)",
            "",
            "| text | bytes | model | " + " | ".join(COMPRESSOR_LABELS[c] for c in COMPRESSORS) + " |",
            "|---|---:|---:|" + "---:|" * len(COMPRESSORS),
        ]
        for name, entry in compression.items():
            lines.append(
                f"| {name} | {entry['bytes']:,} | {entry['bits_per_byte']:.3f} | "
                + " | ".join(f"{entry['baselines'][c]:.3f}" for c in COMPRESSORS)
                + " |"
            )
        benchmark = report.get("quality_benchmark")
        if benchmark:
            plain = plain_model_bits(benchmark)
            lines += [
                "",
                f"Plain byte transformer of bench/quality.py ({benchmark.get('config')}, "
                f"{benchmark.get('plain', {}).get('parameters', 0):,} parameters, same training seconds as "
                f"its run of the model, first {benchmark.get('settings', {}).get('eval_bytes', 0):,} bytes of "
                "each text): " + ", ".join(f"{n} {v:.3f}" for n, v in plain.items()),
            ]
        lines += [
            "",
            "Model bits = top LM bits of the top codes + expander bits of each level given its codes "
            "(model.md); framing tokens (BOS/EOS) are paid for, bytes count only real bytes.",
            "",
            "## Per level",
            "",
            "| text | level | top LM bpb | expander bpb | bytes/code | codebook perplexity | live codes |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, entry in compression.items():
            for level, stats in enumerate(entry["levels"]):
                top = f"{entry['top_bits_per_byte']:.3f}" if level == len(entry["levels"]) - 1 else ""
                lines.append(
                    f"| {name} | {level} | {top} | {entry['level_bits_per_byte'][level]:.3f} | "
                    f"{stats['bytes_per_code']:.2f} | {stats['codebook_perplexity']:.1f} | "
                    f"{stats['live_codes']}/{stats['codebook_size']} |"
                )
        lines += [
            "",
            "## Greedy reconstruction from the model's own top codes (diagnostic, not a gate)",
            "",
            "| text | windows | bytes exact | windows exact |",
            "|---|---:|---:|---:|",
        ]
        for name, entry in compression.items():
            rec = entry["reconstruction"]
            lines.append(
                f"| {name} | {rec['windows']} | {rec['exact_match_bytes']:.3f} | {rec['exact_match_windows']:.3f} |"
            )
    if report["lm_eval"]:
        lines += ["", "## lm-eval", "", "| task | metric | value |", "|---|---|---:|"]
        for task, values in report["lm_eval"].items():
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    lines.append(f"| {task} | {key} | {value:.4f} |")
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plain_model_bits(benchmark: dict) -> dict[str, float]:
    """{text: bits per byte} of the plain byte transformer in a bench/quality.py JSON."""
    return {name: float(entry["plain"]) for name, entry in benchmark.get("entries", {}).items()}


def plot_bpb(compression: dict, path: Path, benchmark: dict | None = None) -> Path:
    """Model and compressors per text; with a bench/quality.py JSON, also its plain byte transformer (equal size,
    equal training seconds; 0-height where the benchmark did not score that text)."""
    names = list(compression)
    series = [("model", [compression[n]["bits_per_byte"] for n in names])]
    if benchmark is not None:
        plain = plain_model_bits(benchmark)
        series.append(("plain byte transformer", [plain.get(n, 0.0) for n in names]))
    series += [(COMPRESSOR_LABELS[c], [compression[n]["baselines"][c] for n in names]) for c in COMPRESSORS]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names) + 2), 3.5), dpi=80)
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series):
        ax.bar([i + index * width for i in range(len(names))], values, width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=20)
    ax.set_ylabel("bits per byte")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_segment_lengths(compression: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    for name, entry in compression.items():
        lengths = {int(k): v for k, v in entry["segment_lengths"].items()}
        total = max(sum(lengths.values()), 1)
        ax.plot(sorted(lengths), [lengths[k] / total for k in sorted(lengths)], marker=".", label=name)
    ax.set_xlabel("segment length (bytes, level 0)")
    ax.set_ylabel("share of segments")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_segment_sample(sample: dict, path: Path) -> Path:
    """The sample text with a '|' before every segment start (level 0)."""
    data = bytes.fromhex(sample["bytes"])
    cuts = [0, *sample["byte_boundaries"], len(data)]
    pieces = [data[a:b].decode("utf-8", errors="replace") for a, b in zip(cuts, cuts[1:], strict=False)]
    marked = "|".join(piece.replace("\n", "⏎").replace("\r", "\\r") for piece in pieces)
    lines = textwrap.wrap(marked, 90, drop_whitespace=False)[:14]
    wrapped = "\n".join(lines)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.2 * len(lines)), dpi=80)
    ax.axis("off")
    ax.text(0, 1, wrapped, family="monospace", fontsize=8, va="top")
    ax.set_title("segment boundaries (|) at level 0", fontsize=9)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path, list[Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report_json = out_dir / "report.json"
    report_json.write_text(json.dumps(report, indent=2, sort_keys=False, default=str))
    report_md = out_dir / "report.md"
    report_md.write_text(_markdown(report))
    plots = []
    compression = report["compression"]
    if compression:
        plots.append(plot_bpb(compression, out_dir / "bpb_vs_compressors.png", report.get("quality_benchmark")))
        plots.append(plot_segment_lengths(compression, out_dir / "segment_lengths.png"))
        sample = next((e["sample"] for e in compression.values() if e.get("sample")), None)
        if sample:
            plots.append(plot_segment_sample(sample, out_dir / "segment_sample.png"))
    return report_json, report_md, plots

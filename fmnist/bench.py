"""Inference benchmark: `python -m fmnist.bench` times the original and the pruned checkpoint over the 60 000
training images (as the study did): same batch size and threads, warm-up first, interleaved repeats, median."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from fmnist.core import checkpoint, runs
from fmnist.core.checks import check
from fmnist.core.data import normalize, read_raw
from fmnist.core.errors import UserError, one_line_errors
from fmnist.core.flops import layer_counts, totals
from fmnist.core.machine import cpu_flags, cpu_name, cpu_runtime, heap_kept, resolve_device
from fmnist.core.model import WIDTHS, build, layers, widths
from fmnist.core.precision import native_bf16
from fmnist.core.stats import ratio, rounds_for
from fmnist.core.study import PUBLISHED
from fmnist.pruning.engines import (
    INT8,
    LOW_PRECISION,
    agreement,
    check_bench,
    engine_runner,
    layer_times,
    missing,
    one_pass,
)
from fmnist.pruning.latency import ENGINES as TABLED
from fmnist.pruning.latency import LatencyTable, check_latency, measure, table_path
from fmnist.training.loop import evaluate

log = logging.getLogger(__name__)
MODELS = ("original", "pruned")  # what is compared; the floor network, where timed, only bounds their speedup


def resolve_models(b: DictConfig, prune_root: Path) -> tuple[Path, Path, Path | None]:
    """(original .pt, pruned .pt, prune folder) from bench.original/pruned or a prune run's summary.json."""
    if b.original and b.pruned:
        return Path(b.original), Path(b.pruned), None
    prune_dir = Path(b.prune_dir) if b.prune_dir else runs.newest(prune_root, "prune")
    summary = runs.read_summary(prune_dir, "prune")
    return Path(summary["source_checkpoint"]), Path(summary["pruned_checkpoint"]), prune_dir


def bench(cfg: DictConfig, out_dir: Path) -> dict:
    b = check(cfg, bench=check_bench, latency=check_latency).bench
    skipped = {e: why for e in b.engines if (why := missing(e))}
    for e, why in skipped.items():
        log.warning("engine %s skipped: %s", e, why)
    device = resolve_device(cfg.trainer.device)
    if "bf16" in b.engines and device.type == "cpu" and not b.emulated and not native_bf16(cpu_flags()):
        # autocast emulates bf16 on such a CPU, ~15x slower than fp32 (2.0 vs 0.14 s per batch on an AVX2 EPYC):
        # timing it would take most of an hour and say nothing about a deployment
        skipped["bf16"] = "emulated on this CPU (no amx_bf16 or avx512_bf16): bench.emulated=true times it anyway"
        log.warning("engine bf16 skipped: %s", skipped["bf16"])
    engines = [e for e in b.engines if e not in skipped]
    if not engines or (b.deploy and b.deploy in skipped):
        raise UserError(f"bench.engines: nothing left to time here ({'; '.join(skipped.values())})")
    cpu_runtime(cfg.trainer)
    original_path, pruned_path, prune_dir = resolve_models(b, Path(cfg.paths.prune_dir))
    (train_x, _), (test_x, test_y) = read_raw(cfg.data.root, cfg.data.system_dir, cfg.data.download)
    x = normalize(train_x[: b.images], cfg.data.mean, cfg.data.std, device)  # the study timed all 60 000
    # int8 calibration: training images, never the test images its accuracy is checked on
    calibration = (
        normalize(train_x[-b.calibration :], cfg.data.mean, cfg.data.std, torch.device("cpu"))
        if any(e in INT8 for e in engines)
        else None
    )
    test_x, test_y = normalize(test_x, cfg.data.mean, cfg.data.std, device), test_y.to(device)  # read once
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, runners = {}, {}
    paths = dict(zip(MODELS, (original_path, pruned_path), strict=True))
    models = {name: checkpoint.load_model(path)[0] for name, path in paths.items()}
    if b.floor:  # what bounds pruning on each engine: the narrowest network of these kernels, one unit per layer
        torch.manual_seed(0)  # untrained: only its time is used, never its predictions
        models["floor"] = build({**models["original"].arch, **dict.fromkeys(WIDTHS.values(), 1)})
    for name, model in models.items():
        model.to(device).eval()
        _, test_acc = evaluate(model, test_x, test_y, cfg.trainer.eval_batch_size)
        entries[name] = {
            "checkpoint": str(paths[name].resolve()) if name in paths else None,
            "arch": dict(model.arch),
            **totals(model.arch),
            "test_accuracy": test_acc,
            "layer_ms_per_batch": layer_times(model, x[: b.batch_size]),
            "seconds_all": {e: [] for e in engines},
        }
        with torch.inference_mode():
            reference = model(x[: b.batch_size])
        entries[name]["max_abs_logit_diff"], entries[name]["agreement"] = {}, {}
        # exported once for both ONNX Runtime engines: a file left by an earlier bench may be another model's
        (out_dir / f"{name}.onnx").unlink(missing_ok=True)
        for e in engines:
            runners[name, e] = engine_runner(model, e, x[: b.batch_size], out_dir / f"{name}.onnx", calibration)
            if e in LOW_PRECISION and name == "floor":  # untrained: its classes mean nothing, only its time counts
                continue
            if e in LOW_PRECISION:  # other logits by design: it must predict what the fp32 model predicts
                agreed = agreement(runners[name, e], model, test_x, test_y, b.batch_size)
                entries[name]["agreement"][e] = agreed
                key = "min_agreement_int8" if e in INT8 else "min_agreement"
                least = b[key]
                if agreed["argmax_agreement"] < least or agreed["accuracy_drop"] > b.max_accuracy_drop:
                    raise UserError(
                        f"engine {e} on the {name} model: argmax agrees with fp32 on {agreed['argmax_agreement']:.2%}"
                        f" of the test images (bench.{key}={least}), test accuracy "
                        f"{agreed['accuracy_drop']:+.2%} below fp32's (bench.max_accuracy_drop={b.max_accuracy_drop})"
                        ": drop it from bench.engines"
                    )
                entries[name]["max_abs_logit_diff"][e] = agreed["max_abs_logit_diff"]
                continue
            with torch.inference_mode():  # the engine must compute this model's logits before its time counts
                logits = torch.as_tensor(runners[name, e](x[: b.batch_size])).to(device)
            diff = (logits - reference).abs().max().item()
            if diff > 1e-3 * max(1.0, reference.abs().max().item()):  # float reordering gives ~1e-5 here
                raise RuntimeError(
                    f"engine {e} computes other logits than the {name} model (max difference {diff:.3g})"
                    ": it would be timed doing something else; drop it from bench.engines"
                )
            entries[name]["max_abs_logit_diff"][e] = diff
    tabled = _tabled(cfg, b)
    layer_sums = {(name, e): [] for name in MODELS for e in tabled}  # ms per batch, one per timed round
    rounds, intervals, reached = 0, {}, False
    for r in range(b.warmup + b.max_repeats):  # interleaved, so drift on a shared machine hits every engine alike
        for (name, e), run in runners.items():
            seconds = one_pass(run, x, b.batch_size)
            if r >= b.warmup:
                entries[name]["seconds_all"][e].append(seconds)
        if r < b.warmup:
            continue
        rounds += 1
        for (name, e), sums in layer_sums.items():  # the table's method, timed now: each model's layers alone
            each = layers(entries[name]["arch"])
            sums.append(sum(measure(layer, e, b.batch_size, tabled[e].repeats, tabled[e].warmup) for layer in each))
        if rounds >= b.repeats:  # enough rounds once every speedup's interval is within ±bench.halfwidth
            intervals = speedup_intervals(entries, engines)
            reached = rounds >= 2 and all(i["halfwidth"] <= b.halfwidth for i in intervals.values())
            if reached:
                break
    for entry in entries.values():
        entry["seconds_by_engine"] = {e: statistics.median(s) for e, s in entry["seconds_all"].items()}
        entry["engine"] = min(entry["seconds_by_engine"], key=entry["seconds_by_engine"].get)  # its fastest
        entry["seconds"] = entry["seconds_by_engine"][entry["engine"]]
        entry["images_per_s"] = len(x) / entry["seconds"]
    if not reached:  # max_repeats >= repeats: the last round computed the intervals over every round
        wide = {
            k: f"±{100 * i['halfwidth']:.1f} %" if i["halfwidth"] is not None else "no interval (1 round)"
            for k, i in intervals.items()
            if i["halfwidth"] is None or i["halfwidth"] > b.halfwidth
        }
        log.warning(
            "after %d rounds (bench.max_repeats) these speedups are not within ±%.0f %%: %s",
            rounds,
            100 * b.halfwidth,
            wide,
        )
    predicted = predict(tabled, entries, layer_sums, b, len(x), intervals)
    orig, pruned = entries["original"], entries["pruned"]
    return {
        "decomposition": decompose(entries, engines, b.deploy),
        # pruning's most on each engine: the original against the floor network, paired by round
        "ceiling": {e: ratio(orig["seconds_all"][e], entries["floor"]["seconds_all"][e]) for e in engines}
        if b.floor
        else None,
        "skipped": skipped,
        "calibration_images": b.calibration,
        # the stated tolerances every low-precision engine passed (its figures: each model's "agreement")
        "tolerance": {k: b[k] for k in ("min_agreement", "min_agreement_int8", "max_accuracy_drop")},
        **entries,
        # each model on its own fastest engine: what a deployment of either would see
        "speedup": orig["seconds"] / pruned["seconds"],
        "speedup_by_engine": {e: orig["seconds_by_engine"][e] / pruned["seconds_by_engine"][e] for e in engines},
        # per-round ratios with their 95 % interval (core.stats.ratio): "fastest" pairs each model's fastest engine
        "speedup_interval": intervals,
        "rounds": rounds,
        "interval_reached": reached,
        # for each speedup still wider than ±halfwidth: the rounds it would take at its measured spread
        "rounds_needed": {} if reached else {k: rounds_for(i, b.halfwidth) for k, i in intervals.items()},
        "flops_ratio": orig["study_flops"] / pruned["study_flops"],
        "macs_ratio": orig["macs"] / pruned["macs"],
        "images": len(x),
        "test_images": len(test_x),
        "batch_size": b.batch_size,
        "repeats": b.repeats,
        "halfwidth": b.halfwidth,
        "engines": engines,
        "threads": torch.get_num_threads(),
        "malloc_heap": heap_kept(),  # trainer.malloc_heap took effect: eager times depend on it (fmnist.core.machine)
        "device": str(device),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "prune_dir": str(prune_dir.resolve()) if prune_dir else None,
        "predicted": predicted,
    }


def speedup_intervals(entries: dict, engines: list[str]) -> dict:
    """Each engine's speedup, and each model on its fastest engine's ("fastest"), over the rounds timed so far."""
    orig, pruned = entries["original"]["seconds_all"], entries["pruned"]["seconds_all"]
    fastest = {
        name: min(engines, key=lambda e, s=entries[name]["seconds_all"]: statistics.median(s[e])) for name in MODELS
    }
    out = {e: ratio(orig[e], pruned[e]) for e in engines}
    out["fastest"] = ratio(orig[fastest["original"]], pruned[fastest["pruned"]])
    return out


def decompose(entries: dict, engines: list[str], deploy: str | None) -> dict | None:
    """The study's "~11x faster" split into its factors, each a per-round ratio with its 95 % interval: the original
    in eager fp32 (as the study timed it) -> the original on the deployment engine -> the pruned model on that
    engine -> the pruned model in int8 (the fastest int8 engine for it, where one was timed); and the total, eager
    original to the last. The deployment engine is `deploy`, or the fastest one for the pruned model that is not int8.
    With the floor network timed: how far pruning could go at most, on the deployment engine and in all."""
    if "eager" not in engines:
        return None
    orig, pruned = entries["original"]["seconds_all"], entries["pruned"]["seconds_all"]
    full = [e for e in engines if e not in INT8]
    deploy = deploy or min(full, key=lambda e: statistics.median(pruned[e]))
    int8s = [e for e in engines if e in INT8]
    int8 = min(int8s, key=lambda e: statistics.median(pruned[e])) if int8s else None
    steps = {
        "engine": ratio(orig["eager"], orig[deploy]),  # the original, eager fp32 -> the deployment engine
        "pruning": ratio(orig[deploy], pruned[deploy]),  # on that engine, original -> pruned
    }
    last = pruned[deploy]
    if int8:
        steps["int8"] = ratio(pruned[deploy], pruned[int8])
        last = pruned[int8]
    test = {
        "original, eager": entries["original"]["test_accuracy"],
        "pruned": entries["pruned"]["test_accuracy"],
    }
    if int8:
        test["pruned, int8"] = entries["pruned"]["agreement"][int8]["test_accuracy"]
    out = {"deploy": deploy, "int8": int8, "steps": steps, "total": ratio(orig["eager"], last), "test_accuracy": test}
    if "floor" in entries:  # no pruning of this network beats its narrowest one on the same engine
        floor = entries["floor"]["seconds_all"]
        fastest = min(engines, key=lambda e: statistics.median(floor[e]))
        out["ceiling"] = {
            "floor": widths(entries["floor"]["arch"]),
            "pruning": ratio(orig[deploy], floor[deploy]),  # the most pruning can give on the deployment engine
            "engine": fastest,  # the floor network's fastest engine
            "total": ratio(orig["eager"], floor[fastest]),  # the most any pruning and engine can give here
        }
    return out


def _tabled(cfg: DictConfig, b: DictConfig) -> dict[str, DictConfig]:
    """The timed engines that have a latency table on this machine, each with its latency settings."""
    out = {}
    for engine in (e for e in b.engines if e in TABLED):
        lat = OmegaConf.merge(cfg.latency, {"engine": engine, "batch_size": b.batch_size, "table": None})
        if table_path(lat, torch.get_num_threads()).exists():
            out[engine] = lat
    return out


def predict(tabled: dict, entries: dict, layer_sums: dict, b: DictConfig, images: int, intervals: dict) -> dict:
    """Each model's time as this machine's latency tables (fmnist/pruning/latency.py) predict it, beside the measured
    one: how far the sum of per-layer times is from the whole model. The same sum timed in the bench's own rounds
    (`now_*`) tells the method's error apart from the machine's drift since the table was built. The predicted
    speedup is judged against the measured one's interval: an error inside it is below what this bench can see."""
    out = {}
    batches = -(-images // b.batch_size)
    for engine, lat in tabled.items():
        table = LatencyTable.open(lat, torch.get_num_threads())
        out[engine] = {}
        for name in MODELS:  # not the floor network: its layers are not timed in the rounds
            entry = entries[name]
            seconds = table.model_ms(entry["arch"]) * batches / 1000
            now = statistics.median(layer_sums[name, engine]) * batches / 1000
            measured = entry["seconds_by_engine"][engine]
            out[engine][name] = {
                "predicted_s": seconds,
                "measured_s": measured,
                "error": seconds / measured - 1,
                "now_s": now,
                "now_error": now / measured - 1,
            }
        measured = intervals[engine]
        speedup = out[engine]["original"]["predicted_s"] / out[engine]["pruned"]["predicted_s"]
        inside = measured["low"] is not None and measured["low"] <= speedup <= measured["high"]
        out[engine]["speedup"] = {
            "predicted": speedup,
            "measured": measured["ratio"],
            "error": speedup / measured["ratio"] - 1,
            "verdict": "inside"
            if inside
            else "no interval"
            if measured["low"] is None
            else "above"
            if speedup > measured["high"]
            else "below",  # the measured interval
        }
        out[engine]["table"] = str(table.path)
        if table.measured:
            table.save()
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
@one_line_errors
def main(cfg: DictConfig) -> float:
    out_dir = Path(cfg.paths.output_dir)
    result = bench(cfg, out_dir)
    runs.write_summary("bench", result, out_dir)
    if result["prune_dir"]:  # the prune run learns its measured speedup (beside the one its table predicted)
        summary = runs.read_summary(result["prune_dir"], "prune")
        summary["measured"] = {k: result[k] for k in ("speedup", "speedup_by_engine", "engines", "cpu", "threads")}
        summary["measured"]["bench_dir"] = str(out_dir.resolve())
        runs.write_summary("prune", {k: v for k, v in summary.items() if k != "kind"}, result["prune_dir"])
    print(summary_text(result))
    return result["speedup"]


def _interval(i: dict) -> str:
    if i["low"] is None:
        return f"{i['ratio']:.2f}x (one round: no interval)"
    return f"{i['ratio']:.2f}x [{i['low']:.2f}, {i['high']:.2f}] (±{100 * i['halfwidth']:.1f} %, n={i['n']})"


def summary_text(r: dict) -> str:
    """The printed table: seconds per engine for both models, the speedups, and where each model's time goes."""
    o, p = r["original"], r["pruned"]
    heap = ", glibc heap kept" if r.get("malloc_heap") else ""
    lines = [
        f"inference over {r['images']} training images, batch {r['batch_size']}, {r['threads']} threads{heap}, "
        f"{r['device']} ({r['cpu']}), torch {r['torch']}, median of {r['rounds']} interleaved rounds",
        f"original {widths(o['arch'])} {o['study_flops']:,} FLOPs/img, test {100 * o['test_accuracy']:.2f}%;  "
        f"pruned {widths(p['arch'])} {p['study_flops']:,} FLOPs/img, test {100 * p['test_accuracy']:.2f}%",
        f"{'engine':<14} {'original s':>10} {'pruned s':>9} {'speedup':>8}  per-round ratio, 95 % interval",
    ]
    for e in r["engines"]:
        lines.append(
            f"{e:<14} {o['seconds_by_engine'][e]:>10.3f} {p['seconds_by_engine'][e]:>9.3f} "
            f"{r['speedup_by_engine'][e]:>7.2f}x  {_interval(r['speedup_interval'][e])}"
        )
    lines.append(
        f"each on its fastest engine ({o['engine']} / {p['engine']}): speedup {r['speedup']:.2f}x "
        f"({_interval(r['speedup_interval']['fastest'])})  vs  FLOPs ratio {r['flops_ratio']:.2f}x (study: "
        f"~{PUBLISHED['speedup']}x)"
    )
    d = r.get("decomposition")
    if d:
        steps = {"engine": f"eager fp32 -> {d['deploy']}", "pruning": f"pruned on {d['deploy']}"}
        steps["int8"] = f"int8 ({d['int8']})"
        lines.append(
            f"the study's ~{PUBLISHED['speedup']}x decomposed (original eager fp32 -> pruned on {d['deploy']}"
            f"{' in int8' if d['int8'] else ''}): "
            + ";  ".join(f"{steps[k]} {_interval(i)}" for k, i in d["steps"].items())
            + f";  total {_interval(d['total'])}  vs  FLOPs ratio {r['flops_ratio']:.2f}x"
        )
    if r.get("ceiling"):
        f = r["floor"]
        lines.append(
            f"what bounds pruning: the narrowest network of these kernels, {widths(f['arch'])} (untrained, timed "
            "only), on each engine and the original's speedup to it: "
            + ";  ".join(f"{e} {f['seconds_by_engine'][e]:.3f} s ({c['ratio']:.2f}x)" for e, c in r["ceiling"].items())
        )
    if d and d.get("ceiling"):
        c = d["ceiling"]
        lines.append(
            f"no pruning of this network gives more than {_interval(c['pruning'])} on {d['deploy']}, nor more than "
            f"{_interval(c['total'])} from the original in eager fp32 to {c['floor']} on {c['engine']}"
        )
    for e, why in r.get("skipped", {}).items():
        lines.append(f"engine {e} skipped: {why}")
    if not r["interval_reached"]:
        lines.append(
            f"not every interval is within ±{100 * r['halfwidth']:.0f} % after {r['rounds']} rounds "
            "(bench.max_repeats): these speedups are known only as far as their intervals say"
        )
        needed = {k: n for k, n in r.get("rounds_needed", {}).items() if n and n > r["rounds"]}
        if needed:
            lines.append(
                f"at their measured spread, ±{100 * r['halfwidth']:.0f} % would take "
                + ", ".join(f"{k} {n}" for k, n in sorted(needed.items(), key=lambda kv: -kv[1]))
                + " rounds (bench.max_repeats)"
            )
    for e in (e for e in r["engines"] if e in o.get("agreement", {})):
        both = (("original", o["agreement"][e]), ("pruned", p["agreement"][e]))
        lines.append(
            f"{e} against fp32 on the {r['test_images']} test images (not equality: other arithmetic): "
            + ";  ".join(
                f"{n} argmax agrees on {100 * a['argmax_agreement']:.2f}%, test "
                f"{100 * a['test_accuracy']:.2f}% (fp32 {100 * a['fp32_test_accuracy']:.2f}%)"
                for n, a in both
            )
        )
    for engine, pred in r.get("predicted", {}).items():
        lines.append(
            f"latency table ({engine}) predicts original {pred['original']['predicted_s']:.3f} s "
            f"({100 * pred['original']['error']:+.1f} %), pruned {pred['pruned']['predicted_s']:.3f} s "
            f"({100 * pred['pruned']['error']:+.1f} %): predicted speedup "
            f"{pred['original']['predicted_s'] / pred['pruned']['predicted_s']:.2f}x; its layers timed in "
            f"these rounds: original {100 * pred['original']['now_error']:+.1f} %, pruned "
            f"{100 * pred['pruned']['now_error']:+.1f} %"
        )
        sp = pred["speedup"]
        verdicts = {
            "inside": "inside the measured interval: no error this bench can see",
            "above": "above the measured interval",
            "below": "below the measured interval",
            "no interval": "the measured one has no interval (one round)",
        }
        lines.append(
            f"latency table ({engine}): predicted speedup {sp['predicted']:.2f}x against measured "
            f"{_interval(r['speedup_interval'][engine])}: {100 * sp['error']:+.1f} %, "
            f"{verdicts[sp['verdict']]}"
        )
    for name, entry in (("original", o), ("pruned", p)):
        counts = layer_counts(entry["arch"])
        per_layer = " ".join(
            f"{k} {ms:.1f} ms ({counts[k]['macs'] * r['batch_size'] / ms / 1e6:.1f} GMAC/s)"
            for k, ms in entry["layer_ms_per_batch"].items()
        )
        lines.append(f"eager, per batch: {name:<8} {per_layer}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The convolution width profile that explains the gap between FLOPs ratio and measured speedup."""

import json

from tests.helpers import run_cli


def test_bench_conv_times_each_width_and_engine(tmp_path):
    out = run_cli(
        "fmnist.bench_conv",
        "bench_conv.in_channels=[2]",
        "bench_conv.out_channels=[1,3]",
        "bench_conv.batch_size=20",
        "bench_conv.repeats=2",
        "trainer.threads=1",
        "bench_conv.engines=[eager,channels_last,onnxruntime,openvino_f32]",
        f"hydra.run.dir={tmp_path}",
    )
    result = json.loads((tmp_path / "bench_conv.json").read_text())
    rows = result["rows"]
    assert [(r["c_in"], r["c_out"]) for r in rows] == [(2, 1), (2, 3)] and result["threads"] == 1
    assert result["engines"] == ["eager", "channels_last", "onnxruntime", "openvino_f32"] and "openvino" in result
    for r in rows:
        assert r["macs"] == 20 * 22 * 22 * r["c_in"] * 25 * r["c_out"]  # 26x26 maps, 5x5 kernel, valid
        for layout in result["engines"]:
            assert r[f"{layout}_ms"] > 0
            assert abs(r[f"{layout}_gmacs"] - r["macs"] / r[f"{layout}_ms"] / 1e6) < 1e-9
    assert "GMAC/s" in out.stdout and len(out.stdout.strip().splitlines()) == 2 + len(rows)


def test_bench_conv_unknown_engine(tmp_path):
    proc = run_cli("fmnist.bench_conv", "bench_conv.engines=[nchw16c]", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1 and "bench_conv.engines" in proc.stderr and "openvino_f32" in proc.stderr
    assert not (tmp_path / "bench_conv.json").exists()

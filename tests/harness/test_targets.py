"""The speed targets (harness/targets.py) judged on kernel records."""
import pytest

from harness.targets import TARGETS, judge, markdown_targets

pytestmark = pytest.mark.harness


def _info(op, shape, **fields):
    return {"op": op, "case": f"{op}/{shape}", "shape": shape, "role": "kernel", **fields}


def test_each_record_is_judged_by_the_targets_that_cover_it():
    infos = [
        _info("rmsnorm", {"rows": 8, "hidden": 4096}, speedup_vs_best_baseline=1.05),
        _info("rmsnorm", {"rows": 256, "hidden": 4096}, speedup_vs_best_baseline=0.5),  # not a Mirage batch
        _info("gqa_decode", {"batch": 1, "kv_len": 32768}, speedup_vs_best_baseline=1.2, roofline_fraction=0.84),
        _info("decoder_layer", {"batch": 16, "model": "x"}, speedups={"compile": 0.97, "eager": 3.0}),
        _info("wo_matmul_int4wo-128", {"m": 1, "k": 4096, "n": 4096}, speedup_vs_best_baseline=1.1),
    ]
    got = {(t.name, info["case"]): (value, met) for t, info, value, met in judge(infos)}
    by = {t.name: t for t in TARGETS}
    fused, copy, layers, w4_read = (next(n for n in by if n.startswith(p)) for p in
                                    ("fused kernels", "GQA decode, batch 1", "decoder layers", "W4A16 one row: at least 75%"))
    assert got[(fused, "rmsnorm/{'rows': 8, 'hidden': 4096}")] == (1.05, True)
    assert not any(k[1].startswith("rmsnorm/{'rows': 256") for k in got)
    assert got[(copy, "gqa_decode/{'batch': 1, 'kv_len': 32768}")] == (0.84, False)
    assert got[(layers, "decoder_layer/{'batch': 16, 'model': 'x'}")] == (0.97, False)
    assert got[(w4_read, "wo_matmul_int4wo-128/{'m': 1, 'k': 4096, 'n': 4096}")] == (None, None)  # not recorded


def test_the_markdown_names_each_miss():
    lines = markdown_targets([_info("gated_mlp", {"m": 16, "k": 4096, "n": 14336}, speedup_vs_best_baseline=0.9),
                              _info("gated_mlp", {"m": 1, "k": 4096, "n": 14336}, speedup_vs_best_baseline=1.3)])
    fused = next(line for line in lines if line.startswith("| fused kernels"))
    assert "| 2 | 1 |" in fused and "m': 16" in fused and "0.900x" in fused and "m': 1," not in fused

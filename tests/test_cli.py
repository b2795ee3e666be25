"""The ``bowrt`` command: subcommands, exit codes (0 ok, 1 one-line error, 2 usage), lean imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bowrt.cli import main


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bowrt: error: ") and "Traceback" not in err


def test_verify_and_info(tiny_bundles, capsys):
    bundle = str(tiny_bundles["fp32"])
    rc, out, _ = _run(capsys, "verify", bundle)
    assert rc == 0 and out.startswith(f"OK {bundle}: fp32 bundle of ") and "sha256 OK  model.onnx" in out
    rc, out, _ = _run(capsys, "info", bundle)
    assert rc == 0
    assert "variant    fp32" in out and "dims       64 (2 layers, 4 heads)" in out
    assert "query 32, passage 256 tokens" in out and "pooling    cls" in out and "min_cosine" in out
    rc, out, _ = _run(capsys, "info", bundle, "--json")
    assert rc == 0 and json.loads(out)["variant"] == "fp32"


def test_verify_numerics_and_info_show_the_host(tiny_bundles, capsys):
    bundle = str(tiny_bundles["int8"])
    rc, out, _ = _run(capsys, "verify", "--numerics", bundle)
    assert rc == 0 and "numerics OK on this host" in out and "int8 ISA" in out and "vs the export host" in out
    rc, out, _ = _run(capsys, "info", bundle)
    assert rc == 0 and "int8 accumulation" in out and "model.u8.onnx: sse, avx2" in out and " here" in out


def test_verify_numerics_fails_in_one_line_when_the_host_disagrees(tiny_bundles, capsys, monkeypatch):
    from bowrt.runtime.session import Session

    real = Session.run
    monkeypatch.setattr(Session, "run", lambda self, ids, mask: -real(self, ids, mask))  # a host computing otherwise
    rc, _, err = _run(capsys, "verify", "--numerics", str(tiny_bundles["int8"]))
    assert rc == 1
    _one_line_error(err)
    assert "does not compute its vectors on this host" in err and "int8 ISA" in err


def test_verify_failures_are_one_line(tiny_bundles, tmp_path, capsys):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundles["fp32"], copy)
    (copy / "tokenizer.json").write_text("{}")
    rc, out, err = _run(capsys, "verify", str(copy))
    assert rc == 1 and out == ""
    _one_line_error(err)
    assert "tokenizer.json" in err
    rc, _, err = _run(capsys, "info", str(tmp_path / "missing"))
    assert rc == 1
    _one_line_error(err)


def test_info_on_a_tampered_bundle_prints_then_warns_and_exits_1(tiny_bundles, tmp_path, capsys):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundles["fp32"], copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    for extra in ((), ("--json",)):
        rc, out, err = _run(capsys, "info", str(copy), *extra)
        assert rc == 1 and ("variant    fp32" in out if not extra else json.loads(out)["variant"] == "fp32")
        (line,) = err.strip().splitlines()
        assert line.startswith(f"bowrt: warning: {copy}: ") and "model.onnx" in line and "checksum" in line
    (copy / "model.onnx").unlink()
    rc, out, err = _run(capsys, "info", str(copy))
    assert rc == 1 and "variant    fp32" in out and "missing" in err
    assert _run(capsys, "info", str(tiny_bundles["fp32"]))[0] == 0
    assert main(["info", "--help"]) == 0 and "checksum" in capsys.readouterr().out


def _closed_pipe_run(argv):
    """Run ``bowrt argv`` with stdout a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-c", "import sys; from bowrt.cli import main; sys.exit(main())", *argv],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write)


def test_a_closed_output_pipe_is_quiet(tiny_bundles, tmp_path):
    bundle = str(tiny_bundles["fp32"])
    for argv in (["info", bundle], ["info", bundle, "--json"], ["verify", bundle],
                 ["export-triton", bundle, "-o", str(tmp_path / "repo")]):
        done = _closed_pipe_run(argv)
        assert done.returncode == 1 and done.stderr == "", (argv, done.stderr)
    # As a shell runs it: the reader takes one line and leaves.
    done = subprocess.run(f"'{sys.executable}' -c 'import sys; from bowrt.cli import main; sys.exit(main())' "
                          f"info '{bundle}' --json | head -1", shell=True, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.stdout == "{\n" and "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr


def test_verify_needs_only_the_base_install(tiny_bundles):
    code = (
        "import sys; from bowrt.cli import main; rc = main(['verify', sys.argv[1]]); "
        "heavy = [m for m in ('onnxruntime', 'numpy', 'tokenizers', 'torch', 'fastapi') if m in sys.modules]; "
        "assert not heavy, heavy; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tiny_bundles["fp32"])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_usage_errors_exit_2(capsys):
    assert _run(capsys, "encode")[0] == 2
    assert _run(capsys, "frobnicate")[0] == 2
    assert _run(capsys)[0] == 2
    assert _run(capsys, "export-triton", "b", "-o", "r", "--kind", "tpu")[0] == 2
    assert _run(capsys, "--help")[0] == 0


def test_encode(tiny_bundles, tmp_path, capsys):
    src = tmp_path / "c.tsv"
    src.write_text("id\ttext\ttitle\n1\tThe wall fell.\tBerlin\n2\tA tragedy.\t\nbroken\n")
    rc, out, err = _run(capsys, "encode", str(tiny_bundles["fp32"]), str(src), "-o", str(tmp_path / "out"),
                        "--shard-size", "1", "--dtype", "float16", "--threads", "1", "--no-progress")
    assert rc == 0, err
    assert "2 vectors in 2 shards" in out and "1 unusable lines" in err
    assert np.load(tmp_path / "out" / "embeddings-00000.npy").dtype == np.float16
    rc, _, err = _run(capsys, "encode", str(tiny_bundles["fp32"]), str(src), "-o", str(tmp_path / "out2"),
                      "--on-error", "stop", "--threads", "1", "--no-progress")
    assert rc == 1
    _one_line_error(err)
    assert "c.tsv:4:" in err
    rc, _, err = _run(capsys, "encode", str(tiny_bundles["fp32"]), str(src), "-o", str(tmp_path / "out3"), "--gpu")
    assert rc == 1 and "--ray" in err


def test_export_triton(tiny_bundles, tmp_path, capsys):
    rc, out, _ = _run(capsys, "export-triton", str(tiny_bundles["fp32"]), "-o", str(tmp_path / "repo"), "--max-batch-size", "8")
    assert rc == 0 and "config.pbtxt" in out and "1/model.onnx" in out
    assert "max_batch_size: 8" in (tmp_path / "repo" / "bowrt_fp32" / "config.pbtxt").read_text()
    rc, _, err = _run(capsys, "export-triton", str(tiny_bundles["fp32"]), "-o", str(tmp_path / "repo"))
    assert rc == 1 and "already exists" in err


def test_export(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "bundles"
    rc, out, err = _run(capsys, "export", str(tiny_model_dir), "-o", str(out_dir), "--variants", "fp32")
    assert rc == 0, err
    assert "fp32: min cos" in out and f"bundle fp32: {out_dir / 'fp32'}" in out
    assert _run(capsys, "verify", str(out_dir / "fp32"))[0] == 0
    rc, _, err = _run(capsys, "export", str(tiny_model_dir), "-o", str(out_dir), "--variants", "fp32")
    assert rc == 1 and "--force" in err
    rc, _, err = _run(capsys, "export", str(tiny_model_dir), "-o", str(tmp_path / "x"), "--variants", "fp64")
    assert rc == 1 and "valid: fp32, fp16, int8" in err


def test_serve_refuses_a_missing_key(tiny_bundles, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    monkeypatch.delenv("BOWRT_TEST_UNSET_KEY", raising=False)
    rc, _, err = _run(capsys, "serve", str(tiny_bundles["fp32"]), "--api-key-env", "BOWRT_TEST_UNSET_KEY")
    assert rc == 1 and "BOWRT_TEST_UNSET_KEY" in err


def test_bench_says_in_one_line_where_the_benchmarks_are(capsys):
    """The harness is not in the wheel: `bowrt bench` points at it instead of a traceback."""
    rc, out, err = _run(capsys, "bench", "--quick", "b1")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "python -m benchmarks --quick b1" in err


def test_serve_flag_defaults_are_serve_configs():
    """`bowrt serve`'s flag defaults are written out in cli.py (no fastapi at parse time):
    they must stay ServeConfig's, where they are measured."""
    pytest.importorskip("fastapi")
    from dataclasses import fields

    from bowrt.cli import build_parser
    from bowrt.serve import ServeConfig

    args = build_parser().parse_args(["serve", "b"])
    flag = {"request_timeout_s": "request_timeout", "max_batch_tokens": "max_batch_tokens"}
    checked = 0
    for f in fields(ServeConfig):
        name = flag.get(f.name, f.name)
        if f.name in ("api_key",) or not hasattr(args, name):
            continue
        assert getattr(args, name) == f.default, (f.name, getattr(args, name), f.default)
        checked += 1
    assert checked >= 7

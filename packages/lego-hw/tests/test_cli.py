import json

from typer.testing import CliRunner

from lego_hw.cli import app

runner = CliRunner()


def test_help_lists_every_command():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("analyze", "generate", "simulate", "synth", "lint", "pipeline", "estimate", "report"):
        assert cmd in res.output


def test_analyze_gemm_output_stationary_json():
    res = runner.invoke(app, ["analyze", "gemm:m=13,n=10,k=7", "--rows", "4", "--cols", "4", "--json"])
    assert res.exit_code == 0, res.output
    (d,) = json.loads(res.output)
    assert d["dataflow"] == "output-stationary" and d["stt"] == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]
    assert {n: t["reuse"] for n, t in d["tensors"].items()} == {"C": "stationary", "A": "systolic", "B": "systolic"}
    assert d["tensors"]["A"]["memory_ports"] == 4


def test_analyze_conv_custom_stt_text():
    res = runner.invoke(
        app,
        ["analyze", "conv2d:k=8,c=4,oh=5,ow=6,r=3,s=3", "--stt", "0,0,1;0,1,0;1,1,1", "--loops", "k,x,c"],
    )
    assert res.exit_code == 0, res.output
    assert "custom  loops=k,x,c" in res.output and "stationary" in res.output


def test_bad_input_is_one_line_exit_2():
    cases = [
        (["analyze", "gemm:m=4,n=4,k=4", "--stt", "1,0,0;0,1,0;1,1,0"], "singular"),
        (["analyze", "gemm:m=4,n=4,k=4", "--rows", "8"], "has only 4 iterations"),
        (["analyze", "C[i*k] += A[i] @ i=2,k=2"], "not affine"),
        (["analyze", "gemm:m=4,n=4,k=4", "-d", "diagonal"], "unknown dataflow preset"),
        (["analyze", "gemm:m=4,n=4,k=4", "--stt", "1,x"], "expected integers"),
        (["simulate", "/nonexistent/design"], "no design spec"),
    ]
    for args, match in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert match in res.output, (args, res.output)
        assert "Traceback" not in res.output


def test_generate_simulate_synth_lint_estimate(tmp_path):
    from lego_hw.tools import tool_or_skip

    for tool in ("iverilog", "vvp", "yosys", "verilator"):
        tool_or_skip(tool)
    out = tmp_path / "fused"
    res = runner.invoke(
        app,
        ["generate", "gemm:m=5,n=4,k=3", "-d", "output-stationary", "-d", "weight-stationary", "--rows", "2",
         "--cols", "2", "--out", str(out), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert (out / "design.json").is_file() and all(p.endswith(".v") for p in info["files"])
    res = runner.invoke(app, ["simulate", str(out), "--seed", "3", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["dataflow"] for r in rows] == ["output-stationary", "weight-stationary"]
    assert all(r["bit_exact"] and r["cycles"] == r["model_cycles"] and r["bank_conflicts"] == 0 for r in rows)
    assert len(info["files"]) == 3  # core, banked buffers, system
    res = runner.invoke(app, ["simulate", str(out), "--mode", "weight-stationary"])
    assert res.exit_code == 0 and "weight-stationary: bit-exact" in res.output and "output-stationary" not in res.output
    res = runner.invoke(app, ["simulate", str(out), "--mode", "diagonal"])
    assert res.exit_code == 2 and "not a dataflow of this design" in res.output
    res = runner.invoke(app, ["synth", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["cells"] > 0 and rep["flip_flops"] > 0 and rep["area_estimate"] > 0
    res = runner.invoke(app, ["synth", str(out), "--buffers", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["flip_flops"] > rep["flip_flops"]  # the buffers hold every tensor element
    res = runner.invoke(app, ["lint", str(out)])
    assert res.exit_code == 0 and "lint clean" in res.output
    res = runner.invoke(app, ["estimate", str(out), "--json"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.output)
    assert [e["cycles"] for e in est] == [r["cycles"] for r in rows]  # the model's cycles are the RTL's


def test_missing_simulator_is_a_clear_error(tmp_path, monkeypatch):
    out = tmp_path / "d"
    assert (
        runner.invoke(app, ["generate", "gemm:m=2,n=2,k=2", "--rows", "2", "--cols", "2", "-o", str(out)]).exit_code
        == 0
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    res = runner.invoke(app, ["simulate", str(out)])
    assert res.exit_code == 2 and "iverilog" in res.output and "apt" in res.output


def test_estimate_best_and_report(tmp_path):
    res = runner.invoke(app, ["estimate", "gemm:m=64,n=32,k=48", "--rows", "8", "--cols", "8", "--json"])
    assert res.exit_code == 0, res.output
    (rep,) = json.loads(res.output)
    assert rep["macs"] == 64 * 32 * 48 and 0 < rep["utilization"] <= 1
    res = runner.invoke(
        app, ["estimate", "gemm:m=64,n=32,k=48", "-d", "weight-stationary", "--rows", "8", "--cols", "8"]
    )
    assert res.exit_code == 0 and "weight-stationary" in res.output
    page = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--model", "transformer", "--seq", "64", "--format", "html", "-o", str(page)])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert "<svg" in text and "ffn1" in text and "speedup" in text
    res = runner.invoke(app, ["report", "--model", "vgg"])
    assert res.exit_code == 2 and "unknown model 'vgg'" in res.output
    res = runner.invoke(app, ["report", "--format", "pdf"])
    assert res.exit_code == 2 and "--format must be" in res.output


def test_generate_with_shared_links_round_trips(tmp_path):
    from lego_hw.tools import tool_or_skip

    tool_or_skip("iverilog")
    out = tmp_path / "conv"
    args = ["generate", "conv2d:k=2,c=2,oh=4,ow=4,r=3,s=3", "--loops", "x,y,r", "-d", "os-broadcast",
            "-d", "output-stationary", "--rows", "3", "--cols", "3", "--share-links", "-o", str(out)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "design.json").read_text())["share_links"] is True
    res = runner.invoke(app, ["simulate", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert all(r["bit_exact"] for r in json.loads(res.output))


def test_pipeline_lp_and_unused_logic(tmp_path):
    out = tmp_path / "d"
    args = ["generate", "gemm:m=8,n=8,k=8", "-d", "output-stationary", "-d", "weight-stationary", "--rows", "4",
            "--cols", "4", "-o", str(out)]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, ["pipeline", str(out), "--keep", "output-stationary", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    r = data["registers"]
    assert r["lp_bits"] == r["dual_bits"] and r["lp_bits"] < r["naive_bits"]
    assert data["unused_logic"]["after"]["mode_muxes"] == 0 < data["unused_logic"]["before"]["mode_muxes"]
    res = runner.invoke(app, ["pipeline", str(out), "--clock-ns", "0.3"])
    assert res.exit_code == 2 and "minimum feasible clock" in res.output
    res = runner.invoke(app, ["pipeline", str(out), "--keep", "diagonal"])
    assert res.exit_code == 2 and "unknown dataflow mode" in res.output

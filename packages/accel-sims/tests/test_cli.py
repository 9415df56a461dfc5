import json
import xml.etree.ElementTree as ET

from typer.testing import CliRunner

from accel_sims.cli import app
from accel_sims.spatten.benchmarks import make_workload
from accel_sims.spatten.workload import write_csv

runner = CliRunner()


def test_help():
    res = runner.invoke(app, ["spatten", "--help"])
    assert res.exit_code == 0
    for cmd in ("simulate", "prune", "report"):
        assert cmd in res.output


def test_simulate_a_workload_file(tmp_path):
    path = tmp_path / "bert.csv"
    write_csv(make_workload("bert-base", seq_len=64), path)
    res = runner.invoke(app, ["spatten", "simulate", str(path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["cycles"] > 0 and data["ratios"]["dram_reduction"] > 1.0
    assert data["dense_baseline"]["dram_bytes"] > sum(data["dram_bytes"].values())
    res = runner.invoke(app, ["spatten", "simulate", "bert-base"])
    assert res.exit_code == 0 and "DRAM reduction" in res.output


def test_report_markdown_html_json(tmp_path):
    res = runner.invoke(app, ["spatten", "report", "gpt2-small", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["layer_id"] for r in rows] == list(range(12))
    assert rows[-1]["keep_ratio"] < rows[0]["keep_ratio"]  # the cascade prunes deeper layers more
    res = runner.invoke(app, ["spatten", "report", "bert-base"])
    assert res.exit_code == 0 and "| layer | heads | token keep |" in res.output
    page = tmp_path / "r.html"
    res = runner.invoke(app, ["spatten", "report", "bert-base", "--format", "html", "-o", str(page)])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    svg = text[text.index("<svg") : text.index("</svg>") + 6]
    root = ET.fromstring(svg)
    assert sum(e.tag.endswith("rect") for e in root.iter()) == 2 * 12  # pruned and dense bars per layer
    assert any(e.tag.endswith("polyline") for e in root.iter())  # the keep-ratio line


def test_bad_input(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(write_csv(make_workload("bert-base", seq_len=16)).replace(",64,16,", ",64,-3,", 1))
    cases = [
        (["spatten", "simulate", "nothing.csv"], "neither a workload file nor a benchmark"),
        (["spatten", "simulate", "bert-base", "--config", "huge"], "unknown SpAtten preset 'huge'"),
        (["spatten", "report", "bert-base", "--format", "pdf"], "--format must be"),
        (["spatten", "simulate", str(bad)], "line 2: field seq_len"),
    ]
    for args, match in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert match in res.output, (args, res.output)


def test_prune_a_local_model_then_simulate(tmp_path, minilm_dir):

    folder = minilm_dir
    out = tmp_path / "minilm.csv"
    text = "Cascade token pruning removes unimportant tokens for all later layers of the model. " * 4
    args = ["spatten", "prune", str(folder), "-o", str(out), "--token-keep", "0.5", "--head-keep", "0.75",
            "--value-keep", "0.5", "--text", text, "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert 0.3 < info["key_fetch_fraction"] < 1.0 and info["records"] < 6 * 12  # heads were pruned
    res = runner.invoke(app, ["spatten", "simulate", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ratios"]["dram_reduction"] > 1.5
    for bad, match in [
        (["--token-keep", "1.5"], "--token-keep: entry 0 = 1.5"),
        (["--token-keep", "0.5,0.5"], "--token-keep"),
        (["--threshold", "2"], "requant_threshold"),
        (["--text", "   "], "input text is empty"),
    ]:
        res = runner.invoke(app, ["spatten", "prune", str(folder), "-o", str(out), *bad])
        assert res.exit_code == 2 and match in res.output, (bad, res.output)
    res = runner.invoke(app, ["spatten", "prune", str(tmp_path), "-o", str(out)])
    assert res.exit_code == 2 and "no config.json" in res.output

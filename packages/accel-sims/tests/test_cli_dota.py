import json

from typer.testing import CliRunner

from accel_sims.cli import app

runner = CliRunner()


def test_simulate_area_report(tmp_path):
    res = runner.invoke(app, ["dota", "simulate", "deit-t", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["accelerator"] == "dota-b-4bit" and data["latency_s"] > 0
    assert abs(sum(data["energy_breakdown_pj"].values()) - data["energy_pj"]) < 1e-6 * data["energy_pj"]
    res = runner.invoke(app, ["dota", "simulate", "bert-b", "--tokens", "128", "--config", "dota-l-8bit"])
    assert res.exit_code == 0 and "bert-b on dota-l-8bit" in res.output and "pJ/MAC" in res.output
    res = runner.invoke(app, ["dota", "area", "--json"])
    assert res.exit_code == 0, res.output
    area = json.loads(res.output)
    assert abs(area["total_mm2"] - 60.33) / 60.33 < 0.02
    res = runner.invoke(app, ["dota", "area", "--config", "mrr-bank-4bit"])
    assert res.exit_code == 0 and "mm²" in res.output
    page = tmp_path / "d.html"
    res = runner.invoke(app, ["dota", "report", "deit-t", "--format", "html", "-o", str(page)])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert "<svg" in text and "mrr-bank-4bit" in text and "systolic" in text
    res = runner.invoke(app, ["dota", "report", "deit-s", "--bits", "8"])
    assert res.exit_code == 0 and "dota-b-8bit" in res.output


def test_bad_input():
    for args, match in [
        (["simulate", "deit-t", "--config", "dota-x"], "unknown name 'dota-x'"),
        (["simulate", "gpt-9"], "gpt-9"),
        (["report", "--bits", "3"], "--bits must be 4 or 8"),
        (["report", "--format", "pdf"], "--format must be"),
    ]:
        res = runner.invoke(app, ["dota", *args])
        assert res.exit_code == 2, (args, res.output)
        assert match in res.output, (args, res.output)

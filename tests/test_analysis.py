"""Tests of the analysis (pkpo/analysis/, pkpo-analyze and the analysis/ notebooks).

Expected numbers come from outside the code under test: the event logs read here with
plain ``json``, means and standard errors from ``statistics``, and the paper's tables
parsed from its text. The whole pipeline runs once (``report``), notebooks executed for
real by nbclient, on the real run logs in ``tests/fixtures/runs/`` (skipped while that
folder is empty) and on a small run of the toy experiment.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from pkpo import analysis as A
from pkpo.analysis import cli as analyze
from pkpo.analysis.figures import _seed_counts
from pkpo.logger import EventLogWarning, dedupe_records, read_events

REPO = Path(__file__).resolve().parents[1]
FIXTURE_RUNS = REPO / "tests" / "fixtures" / "runs"
PAPER_TEXT = REPO / ".." / "shared" / "paper" / "pkpo_paper.txt"
PAPER_CSV = REPO / "analysis" / "paper" / "tables.csv"

# The paper's table numbering, written out here rather than taken from the library.
PAPER_PAIRS = {
    ("gemma2_9b", "math"): 1,
    ("llama31_8b", "math"): 2,
    ("gemma2_9b", "mbpp"): 3,
    ("llama31_8b", "mbpp"): 4,
    ("gemma2_9b", "arc"): 5,
    ("llama31_8b", "arc"): 6,
    ("gemma2_2b", "math"): 7,
    ("gemma2_2b", "mbpp"): 8,
}
K_EVALS = (1, 2, 4, 8, 16)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def run_folders() -> Path:
    """Real event logs of short CPU runs, committed in tests/fixtures/runs/."""
    if not any(FIXTURE_RUNS.rglob("events.jsonl")):
        pytest.skip(
            "tests/fixtures/runs/ holds no run logs yet (real event logs of two short CPU "
            "runs of the RL loop go there)"
        )
    return FIXTURE_RUNS


@pytest.fixture(scope="session")
def toy_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real run of the toy experiment."""
    out = tmp_path_factory.mktemp("toy")
    cmd = [
        sys.executable, "-m", "pkpo.toy", f"out_dir={out}", "n_estimates=100",
        "quad_nodes=64", "fig1.thetas.num=11", "fig4.ns=[4,8]", "fig5.n_draws=50",
        "train.steps=10", "train.ks=[1,4]", "estimators.ns=[8,12]", "estimators.n_estimates=200",
        "train_estimators.ks=[1,4]", "train_estimators.repeats=2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, toy_outputs: Path) -> Path:
    """``pkpo-analyze`` over the fixture runs (or an empty folder) and the toy outputs."""
    has_runs = any(FIXTURE_RUNS.rglob("events.jsonl"))
    runs = FIXTURE_RUNS if has_runs else tmp_path_factory.mktemp("no_runs")
    out = tmp_path_factory.mktemp("report")
    args = [str(runs), "--out", str(out), "--window", "3", "--toy", str(toy_outputs)]
    assert analyze.main(args) == 0
    return out


# ----------------------------------------------------------------------------- helpers


def plain_records(events: Path) -> list[dict]:
    """The log's records, unreadable lines dropped, the last of each (event, step, split)."""
    last = {}
    for i, line in enumerate(events.read_text(encoding="utf-8").splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        key = (record["event"], record.get("step"), record.get("split"))
        last[key if record.get("step") is not None else i] = record
    return list(last.values())


def expected_row(config: dict) -> str | None:
    """The table row of a constant-schedule, no-entropy run (others: unit-tested labels)."""
    transform = config["transform"]["name"]
    if transform == "tang":
        return "tang"
    if config.get("schedule", {}).get("name", "constant") != "constant":
        return None
    if (config.get("trainer", {}).get("entropy_coef") or 0) > 0:
        return None
    k = 1 if transform in ("loo", "raw") else config["transform"]["k_opt"]
    suffix = "" if transform in ("loo", "pkpo_sloo_minus_one") else f" [{transform}]"
    return f"k_opt={k}{suffix}"


def hand_cells(root: Path) -> dict[tuple[str, str, int], dict[str, dict[str, list[float]]]]:
    """{(model, task, n): {row: {column label: [value per seed, in %]}}} from the logs."""
    cells: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for events in sorted(root.rglob("events.jsonl")):
        config = yaml.safe_load((events.parent / "config.yaml").read_text())
        row = expected_row(config)
        if row is None:
            continue
        records = plain_records(events)
        evals = sorted((r for r in records if r["event"] == "eval"), key=lambda r: r["step"])
        splits = [r["split"] for r in evals]
        split = "test" if "test" in splits else (splits[-1] if splits else None)
        evals = [r for r in evals if r["split"] == split]
        trains = sorted((r for r in records if r["event"] == "train"), key=lambda r: r["step"])
        setting = (config["model"]["name"], config["task"]["name"], config["n"])
        if config["task"]["name"] == "arc":
            sources = {"Cumulative Solve Rate": (trains, "cumulative_solve_rate")}
            sources |= {f"pass@{k}": (evals, f"pass@{k}") for k in (1, 16)}
        else:
            sources = {f"k_eval={k}": (evals, f"pass@{k}") for k in K_EVALS}
        for label, (chosen, metric) in sources.items():
            values = cells[setting][row][label]  # an empty list: the run has no such value
            if chosen and chosen[-1].get(metric) is not None:
                values.append(100 * chosen[-1][metric])
    return cells


def markdown_table(path: Path) -> dict[str, dict[str, str]]:
    """{row: {column header: cell}} of the first Markdown table in ``path``."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line[:2] == "| "]
    header, *body = ([c.strip() for c in line.strip("| ").split(" | ")] for line in lines)
    body = [row for row in body if set(row) != {"---"}]
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in body}


CELL = re.compile(r"^(-?\d+\.\d\d)(?: ± (\d+\.\d\d))? \(n=(\d+)\)$")


def copy_runs(run_folders: Path, tmp_path: Path) -> Path:
    """A writable copy whose root keeps the fixture's name (so run names match)."""
    target = tmp_path / run_folders.name
    shutil.copytree(run_folders, target)
    return target


def event_logs(root: Path) -> list[Path]:
    return sorted(root.rglob("events.jsonl"))


# ----------------------------------------------------------------------------- paper numbers


def parse_paper_tables(text: str) -> dict[tuple, tuple[float, float]]:
    """{(table, model, benchmark, row, column): (mean, se)} from the paper's table text."""
    models = {"GEMMA2-9B": "gemma2_9b", "LLAMA3.1-8B": "llama31_8b", "GEMMA2-2B": "gemma2_2b"}
    benchmarks = {"MATH": "MATH", "Coding": "Coding", "ARC-AGI-1": "ARC"}

    def clean(label: str) -> str:
        label = re.sub(r"\\text\{(\w+)\}", r"\1", label).replace("$", "")
        label = label.replace("{", "").replace("}", "").strip()
        label = re.sub(r"^k_eval=(\d+)$", r"pass@\1", label)
        return {"[TZSM25]": "tang", "Cumulative Solve Rate": "cumulative_solve_rate"}.get(
            label, label
        )

    found = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        title = re.match(r"Table (\d+): Results for (\S+) on the (\S+) benchmark\.", line)
        if not title:
            continue
        j = i + 1
        while not lines[j].strip():
            j += 1
        header = [clean(c) for c in lines[j].split("\t")]
        for row_line in lines[j + 1 :]:
            if not row_line.strip():
                break
            row, *values = row_line.split("\t")
            for column, value in zip(header[1:], values, strict=True):
                mean, se = re.split(r"\s*(?:\\pm|±)\s*", value.strip())
                key = (
                    int(title.group(1)),
                    models[title.group(2)],
                    benchmarks[title.group(3)],
                    clean(row),
                    column,
                )
                found[key] = (float(mean), float(se))
    return found


def test_paper_csv_matches_the_paper_text() -> None:
    if not PAPER_TEXT.is_file():
        pytest.skip(f"{PAPER_TEXT} is not there (../shared beside the repository)")
    parsed = parse_paper_tables(PAPER_TEXT.read_text(encoding="utf-8"))
    typed = pd.read_csv(PAPER_CSV)
    assert sorted(typed["table"].unique()) == list(range(1, 9))
    assert len(parsed) == len(typed) == 210  # Tables 1-4, 7, 8: 6 x 5 x 5; 5, 6: 5 x 3
    for row in typed.itertuples():
        key = (row.table, row.model, row.benchmark, row.row, row.column)
        assert parsed[key] == (row.mean, row.se), key
    assert A.paper_numbers().equals(typed)


# ----------------------------------------------------------------------------- unit tests


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_read_events_skips_corrupted_lines_with_a_warning(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            '{"event": "start", "schema": 1}\n',
            '{"event": "train", "step": 1, "pass@1": 0.25}\n',
            '{"event": "train", "step": 2, "pa{"event": "start", "schema": 1}\n',  # fused
            "[1, 2]\n",
            '{"event": "train", "step": 2, "pass@1": 0.5}\n',
            '{"event": "train", "step": 3, "pass@1": 0.',  # cut short by a crash
        ],
    )
    with pytest.warns(EventLogWarning) as caught:
        records = read_events(path)
    messages = [str(w.message) for w in caught]
    assert any(":3: unreadable line" in m for m in messages)
    assert any(":4: line without an 'event'" in m for m in messages)
    assert any(":6: unreadable line" in m for m in messages)
    assert [(r["event"], r.get("step")) for r in records] == [
        ("start", None),
        ("train", 1),
        ("train", 2),
    ]


def test_dedupe_keeps_the_last_record_of_each_event_step_and_split() -> None:
    records = [
        {"event": "start"},
        {"event": "train", "step": 1, "v": "old"},
        {"event": "eval", "step": 1, "split": "test", "v": "test"},
        {"event": "eval", "step": 1, "split": "val", "v": "val"},
        {"event": "start"},
        {"event": "train", "step": 1, "v": "new"},
    ]
    kept = dedupe_records(records)
    assert [r.get("v") for r in kept] == [None, "test", "val", None, "new"]


def test_run_status_from_start_and_end_records() -> None:
    finished = [{"event": "start"}, {"event": "end", "step": 5, "status": "finished"}]
    failed = [{"event": "start"}, {"event": "end", "step": 5, "status": "failed", "error": "X"}]
    resumed = [*failed, {"event": "start"}, {"event": "train", "step": 6}]
    assert A.run_status(finished, 0, 60, 10_000)[0] == "finished"
    assert A.run_status(failed, 0, 60, 10)[0] == "crashed"
    assert "X" in A.run_status(failed, 0, 60, 10)[1]
    assert A.run_status(resumed, 1_000, 60, 1_030)[0] == "running"
    assert A.run_status(resumed, 1_000, 60, 1_061)[0] == "crashed"


def config(transform="pkpo_sloo_minus_one", k=4, schedule=None, entropy=0.0) -> dict:
    return {
        "task": {"name": "math"},
        "model": {"name": "gemma2_2b"},
        "seed": 0,
        "n": 16,
        "transform": {"name": transform, "k_opt": k},
        "schedule": schedule or {"name": "constant"},
        "trainer": {"entropy_coef": entropy},
    }


@pytest.mark.parametrize(
    ("raw", "arm"),
    [
        (config(), "k_opt=4"),
        (config("loo", 1), "k_opt=1"),
        (config("loo", 8), "k_opt=1"),  # loo ignores k
        (config("pkpo_sloo", 2), "k_opt=2 [pkpo_sloo]"),
        (config("raw", 4), "k_opt=1 [raw]"),
        (config("tang", 16), "tang"),
        (config(schedule={"name": "step", "k_start": 8, "k_end": 1}), "annealed (8→1)"),
        (config(schedule={"name": "linear", "k_start": 8, "k_end": 2}), "annealed (linear 8→2)"),
        (config("loo", 1, entropy=0.01), "EntropyReg (0.01)"),
        (config(k=4, entropy=0.005), "k_opt=4 + EntropyReg (0.005)"),
    ],
)
def test_arm_labels(raw: dict, arm: str) -> None:
    assert A.parse_config(raw, "test").arm == arm


def test_older_config_without_schedule_or_entropy_warns_and_defaults() -> None:
    raw = config("pkpo_sloo_minus_one", 8)
    del raw["schedule"], raw["trainer"], raw["transform"]["k_opt"]
    with pytest.warns(A.AnalysisWarning, match="lacks k_opt, schedule, entropy_coef"):
        parsed = A.parse_config(raw, "old run", first_train={"k_opt": 8})
    assert (parsed.schedule, parsed.entropy_coef, parsed.k_opt) == ("constant", 0.0, 8)
    assert parsed.arm == "k_opt=8"


def test_aggregate_seeds_mean_and_standard_error() -> None:
    values = pd.DataFrame(
        {
            "row": ["a", "a", "a", "b"],
            "seed": [0, 1, 2, 0],
            "run": ["r0", "r1", "r2", "r3"],
            "value": [20.0, 25.0, 33.0, 7.0],
        }
    )
    stats = A.aggregate_seeds(values, ["row"]).set_index("row")
    assert stats.loc["a", "mean"] == pytest.approx(statistics.fmean([20, 25, 33]))
    se = statistics.stdev([20, 25, 33]) / math.sqrt(3)
    assert stats.loc["a", "se"] == pytest.approx(se)
    assert stats.loc["a", "n_seeds"] == 3
    assert stats.loc["b", "n_seeds"] == 1 and math.isnan(stats.loc["b", "se"])


def test_number_cells() -> None:
    assert A.number(0.12345) == "0.12" and A.number(0.5, "+.3f") == "+0.500"
    assert A.number(0.0065, ".2f", scale=100, suffix=" %") == "0.65 %"
    assert A.number(None) == A.number(math.nan, "+.2f", suffix=" %") == "—"


def test_format_cell() -> None:
    assert A.format_cell(22.244, 0.5049, 3) == "22.24 ± 0.50 (n=3)"
    assert A.format_cell(22.244, math.nan, 1) == "22.24 (n=1)"
    assert A.format_cell(math.nan, math.nan, 0, "no runs") == "— (no runs)"


def test_latex_escapes_table_text() -> None:
    grid = A.Grid("k_opt & 100%", ["a_b", "c"], [["k_opt=1", "1.00 ± 0.10 (n=2)"]])
    latex = A.to_latex(grid)
    assert r"k\_opt \& 100\%" in latex and r"1.00 $\pm$ 0.10" in latex
    assert r"a\_b & c \\" in latex


def test_cli_rejects_a_missing_run_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        analyze.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2


# ----------------------------------------------------------------------------- whole pipeline


@pytest.mark.slow
def test_report_notebooks_ran_and_wrote_the_page(report: Path) -> None:
    for name in ("tables", "toy_figures", "rl_figures"):
        notebook = nbformat.read(report / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(cell.get("execution_count") for cell in code), name
        errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
        assert not errors, (name, errors)
    page = (report / "index.html").read_text(encoding="utf-8")
    for heading in ("Run inventory", "Tables", "Figures", "No data"):
        assert heading in page


@pytest.mark.slow
def test_report_paper_tables_have_paper_numbers_and_say_no_runs(report: Path) -> None:
    paper = pd.read_csv(PAPER_CSV)
    manifest = json.loads((report / "manifest" / "tables.json").read_text())
    no_data = {e["key"] for e in manifest if e["kind"] == "missing"}
    for (model, task), number in PAPER_PAIRS.items():
        files = sorted((report / "tables").glob(f"table{number}_{model}_{task}*.md"))
        assert files, (number, model, task)
        for stem in files:
            assert stem.with_suffix(".tex").stat().st_size > 0
            table = markdown_table(stem)
            published = paper[paper["table"] == number]
            for p in published.itertuples():
                label = (
                    "Cumulative Solve Rate"
                    if p.column == "cumulative_solve_rate"
                    else (p.column if task == "arc" else f"k_eval={p.column.split('@')[1]}")
                )
                assert table[p.row][f"{label} paper"] == f"{p.mean:.2f} ± {p.se:.2f}"
            expected_rows = ["k_opt=1", "k_opt=2", "k_opt=4", "k_opt=8", "tang", "EntropyReg"]
            assert list(table)[:6] == expected_rows
            ours = [v for row in table.values() for k, v in row.items() if k.endswith(" ours")]
            if set(ours) == {"— (no runs)"}:
                assert stem.stem in no_data  # listed under "No data" on the page
            if not any(FIXTURE_RUNS.rglob("events.jsonl")):
                assert ours and set(ours) == {"— (no runs)"}


@pytest.mark.slow
def test_report_figures_are_png_and_pdf_files(report: Path) -> None:
    figures = report / "figures"
    pngs = sorted(figures.glob("*.png"))
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
        pdf = png.with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1_000
    names = {png.stem for png in pngs}
    for key in ("fig1", "fig2", "fig4", "fig5", "toy_training", "fig4plus"):  # _<dir> if several
        assert any(name == key or name.startswith(f"{key}_") for name in names), key
    if any(FIXTURE_RUNS.rglob("events.jsonl")):
        assert any(name.startswith(("fig6_", "fig8_")) for name in names)
        assert any(name.startswith(("fig7_", "fig8_")) for name in names)
    else:
        missing = json.loads((report / "manifest" / "rl_figures.json").read_text())
        assert {e["key"] for e in missing} == {"fig3", "fig6", "fig7", "fig8"}


@pytest.mark.slow
def test_report_tables_match_a_hand_computation(report: Path, run_folders: Path) -> None:
    checked = 0
    for (model, task, n), rows in hand_cells(run_folders).items():
        number = PAPER_PAIRS.get((model, task))
        stem = f"table{number}_{model}_{task}_n{n}" if number else f"{model}_{task}_n{n}"
        table = markdown_table(report / "tables" / f"{stem}.md")
        for row, columns in rows.items():
            for label, values in columns.items():
                cell = table[row][f"{label} ours" if number else label]
                if not values:  # runs without this number (no eval yet, k_eval > n)
                    assert cell in ("— (no eval event yet)", "— (not logged)"), (stem, row, cell)
                    continue
                match = CELL.match(cell)
                assert match, (stem, row, label, cell)
                mean, se, seeds = match.groups()
                assert int(seeds) == len(values)
                assert float(mean) == pytest.approx(statistics.fmean(values), abs=0.0051)
                if len(values) == 1:
                    assert se is None
                else:
                    hand_se = statistics.stdev(values) / math.sqrt(len(values))
                    assert float(se) == pytest.approx(hand_se, abs=0.0051)
                checked += 1
        for row in {"k_opt=1", "k_opt=2", "k_opt=4", "k_opt=8", "tang"} - set(rows):
            ours = [v for k, v in table[row].items() if not number or k.endswith(" ours")]
            assert set(ours) == {"— (no runs)"}, (stem, row)
    assert checked > 0


@pytest.mark.slow
def test_report_inventory_lists_every_run(report: Path, run_folders: Path) -> None:
    inventory = pd.read_csv(report / "inventory.csv")
    page = (report / "index.html").read_text(encoding="utf-8")
    logs = event_logs(run_folders)
    assert len(inventory) == len(logs)
    for events in logs:
        records = plain_records(events)
        row = inventory[inventory["run_dir"] == str(events.parent.resolve())].iloc[0]
        steps = [r["step"] for r in records if r["event"] == "train"]
        assert row["steps"] == max(steps)
        ends = [r for r in records if r["event"] in ("start", "end")]
        if ends[-1]["event"] == "end" and ends[-1]["status"] == "finished":
            assert row["status"] == "finished"
        assert row["run"] in page


# ----------------------------------------------------------------------------- partial logs


def test_corrupted_final_line_warns_and_the_rest_is_read(run_folders: Path, tmp_path: Path):
    clean = A.load_runs([run_folders])
    copy = copy_runs(run_folders, tmp_path)
    with open(event_logs(copy)[0], "a", encoding="utf-8") as log:
        log.write('{"event": "train", "step": 1000000, "pass@1": 0.')
    with pytest.warns(EventLogWarning, match="unreadable line"):
        damaged = A.load_runs([copy])
    columns = [c for c in clean.columns if c != "run_dir"]
    pd.testing.assert_frame_equal(
        damaged[columns].astype(str), clean[columns].astype(str), check_categorical=False
    )


def test_replayed_steps_after_a_resume_count_once(run_folders: Path, tmp_path: Path) -> None:
    copy = copy_runs(run_folders, tmp_path)
    events = event_logs(copy)[0]
    records = plain_records(events)
    last_train = max((r for r in records if r["event"] == "train"), key=lambda r: r["step"])
    replay = {**last_train, "pass@1": 0.123456}
    with open(events, "a", encoding="utf-8") as log:
        log.write(json.dumps({"event": "start", "schema": 1, "resumed_from_step": 0}) + "\n")
        log.write(json.dumps(replay) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", A.AnalysisWarning)
        df = A.load_runs([copy])
    run = df[df["run_dir"] == str(events.parent.resolve())]
    at_step = run[(run["event"] == "train") & (run["step"] == last_train["step"])]
    assert (at_step["metric"] == "pass@1").sum() == 1
    final = A.final_metrics(run)
    value = final[(final["event"] == "train") & (final["metric"] == "pass@1")]["value"]
    assert value.tolist() == [0.123456]


def test_an_older_log_without_keys_is_read_with_warnings(run_folders: Path, tmp_path: Path):
    copy = copy_runs(run_folders, tmp_path)
    events = event_logs(copy)[0]
    config_path = events.parent / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    before = A.parse_config(raw, "x")
    raw.pop("schedule", None)
    raw.pop("trainer", None)
    config_path.write_text(yaml.safe_dump(raw))
    lines = []
    for record in plain_records(events):
        record.pop("entropy", None)
        lines.append(json.dumps(record) + "\n")
    write_lines(events, lines)
    with pytest.warns(A.AnalysisWarning, match="config lacks"):
        runs = A.scan_runs([copy])
    run = next(r for r in runs if r.run_dir == events.parent.resolve())
    if before.schedule == "constant" and before.entropy_coef == 0:
        assert run.config.arm == before.arm  # what the defaults assume is what it ran
    df = A.runs_frame([run])
    assert not (df["metric"] == "entropy").any()
    assert A.fig_solve_rate_entropy(df) is not None  # cumulative solve rate alone still plots


def add_seed(
    run_folders: Path, tmp_path: Path, suffix: str, min_evals: int
) -> tuple[Path, Path, dict]:
    """A copy of the fixture runs plus one more seed of a plain run (constant schedule, no
    entropy bonus) with at least ``min_evals`` eval steps: (copy root, new run, its config)."""
    copy = copy_runs(run_folders, tmp_path)
    plain = [
        e
        for e in event_logs(copy)
        if expected_row(yaml.safe_load(e.with_name("config.yaml").read_text()))
        and len({r["step"] for r in plain_records(e) if r["event"] == "eval"}) >= min_evals
    ]
    if not plain:
        pytest.skip(f"no plain fixture run with {min_evals} evals")
    source = plain[0].parent
    twin = source.parent / f"{source.name}_{suffix}"
    shutil.copytree(source, twin)
    raw = yaml.safe_load((twin / "config.yaml").read_text())
    raw["seed"] = int(raw["seed"]) + 1000
    (twin / "config.yaml").write_text(yaml.safe_dump(raw))
    return copy, twin, raw


def test_missing_seeds_show_their_counts(run_folders: Path, tmp_path: Path) -> None:
    copy, _, raw = add_seed(run_folders, tmp_path, "another_seed", min_evals=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", A.AnalysisWarning)
        before = A.final_metrics(A.load_runs([run_folders]))
        after = A.final_metrics(A.load_runs([copy]))
    model, task, n = raw["model"]["name"], raw["task"]["name"], raw["n"]
    row = expected_row(raw)
    old = A.results_table(before, model, task, n).cells.set_index(["row", "column"])
    table = A.results_table(after, model, task, n)
    new = table.cells.set_index(["row", "column"])
    for (r, column), cell in new.iterrows():
        expected = old.loc[(r, column), "n_seeds"] + (r == row and cell["n_seeds"] > 0)
        assert cell["n_seeds"] == expected
    grid = A.table_grid(table)
    shown = next(line for line in grid.body if line[0] == row)
    assert any(re.search(r" ± \d+\.\d\d \(n=\d+\)$", c) for c in shown[1:])
    without_runs = [line for line in grid.body if line[0] not in set(table.used_runs.values())]
    assert without_runs and all(c == "— (no runs)" for line in without_runs for c in line[1:])


def test_a_seed_that_crashed_before_the_last_eval_is_not_averaged(
    run_folders: Path, tmp_path: Path
) -> None:
    copy, crashed, raw = add_seed(run_folders, tmp_path, "crashed_seed", min_evals=2)
    records = plain_records(crashed / "events.jsonl")
    first_eval = next(i for i, r in enumerate(records) if r["event"] == "eval")
    kept = [*records[: first_eval + 1], {"event": "end", "status": "failed", "error": "OOM"}]
    write_lines(crashed / "events.jsonl", [json.dumps(r) + "\n" for r in kept])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", A.AnalysisWarning)
        before = A.final_metrics(A.load_runs([run_folders]))
        df = A.load_runs([copy])
        after = A.final_metrics(df)
    model, task, n = raw["model"]["name"], raw["task"]["name"], raw["n"]
    old = A.results_table(before, model, task, n).cells.set_index(["row", "column"])
    table = A.results_table(after, model, task, n)
    new = table.cells.set_index(["row", "column"])
    assert new["n_seeds"].equals(old["n_seeds"])
    assert new["mean"].equals(old["mean"])
    name = next(run for run in table.skipped_runs if run.endswith("_crashed_seed"))
    assert f"step {records[first_eval]['step']}" in table.skipped_runs[name]
    assert any(name in note for note in table.notes)
    row = expected_row(raw)
    assert "stopped early" in _seed_counts(A.setting_frame(df, model, task, n))[row]


def test_status_of_running_and_crashed_runs(run_folders: Path, tmp_path: Path) -> None:
    copy = copy_runs(run_folders, tmp_path)
    events = event_logs(copy)[0]
    kept = [r for r in plain_records(events) if r["event"] != "end"]
    write_lines(events, [json.dumps(r) + "\n" for r in kept])
    written = events.stat().st_mtime

    def status(now: float) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", A.AnalysisWarning)
            runs = A.scan_runs([copy], stale_after_s=3600, now=now)
        return next(r.status for r in runs if r.run_dir == events.parent.resolve())

    assert status(written + 60) == "running"
    assert status(written + 7200) == "crashed"


@pytest.mark.slow
def test_a_failing_notebook_is_reported_and_the_rest_still_written(tmp_path: Path) -> None:
    toy = tmp_path / "broken_toy"
    toy.mkdir()
    (toy / "fig1_maxg_at_k.csv").write_text("theta,k\n0.5,1\n")  # columns missing
    (toy / "summary.json").write_text('{"sigma": 0.1, "optimal_theta": {"1": 0.86}}')
    out = tmp_path / "out"
    args = [str(tmp_path / "broken_toy"), "--out", str(out), "--notebooks", "toy_figures"]
    assert analyze.main(args) == 1
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "notebook toy_figures failed" in page
    assert (out / "notebooks" / "toy_figures.ipynb").is_file()


@pytest.mark.slow
def test_report_renders_the_toy_transform_tables(report: Path, toy_outputs: Path) -> None:
    """Every computed (transform, n) of the first theta is a row with the CSV's numbers;
    skipped transforms are named in the notes; the θ table has one row per trained one."""
    csv = pd.read_csv(toy_outputs / "estimators_bias_variance.csv")
    first = csv[csv.theta_label == csv.theta_label.iloc[0]]
    table = (report / "tables" / "toy_estimators_0.md").read_text(encoding="utf-8")
    for r in first[first.skipped.isna()].itertuples():
        assert f"| {r.estimator} | {r.n} | " in table, r.estimator
        assert f"| {r.variance:.3g} ± {r.variance_se:.2g} |" in table, r.estimator
    for name in first.estimator[first.skipped.notna()]:
        assert f"- {name} not run: " in table
    assert len(list((report / "tables").glob("toy_estimators_*.md"))) == csv.theta_label.nunique()
    trained = pd.read_csv(toy_outputs / "train_estimators.csv").dropna(subset=["theta_mean"])
    theta_table = (report / "tables" / "toy_train_estimators.md").read_text(encoding="utf-8")
    for r in trained.itertuples():
        assert f"{r.theta_mean:.4f} ± {r.theta_sd:.4f}" in theta_table, r


@pytest.mark.slow
def test_runs_with_a_missing_or_unreadable_config_are_named_and_left_out(
    run_folders: Path, tmp_path: Path
) -> None:
    copy = copy_runs(run_folders, tmp_path)
    lost, garbled = (path.parent for path in event_logs(copy)[:2])
    # Hydra's own copy is left: unresolved, as Hydra writes it before the run resolves it
    raw = yaml.safe_load((lost / "config.yaml").read_text())
    raw["schedule"]["k_opt"] = "${oc.select:transform.fixed_k,4}"
    (lost / ".hydra").mkdir(exist_ok=True)
    (lost / ".hydra" / "config.yaml").write_text(yaml.safe_dump(raw))
    (lost / "config.yaml").unlink()
    (garbled / "config.yaml").write_text("seed: [0\n")
    names = {path: f"{copy.name}/{path.relative_to(copy).as_posix()}" for path in (lost, garbled)}

    out = tmp_path / "out"
    assert analyze.main([str(copy), "--out", str(out), "--notebooks", "tables"]) == 0
    inventory = pd.read_csv(out / "inventory.csv")
    assert set(inventory["run"]) & set(names.values()) == set()
    page = (out / "index.html").read_text(encoding="utf-8")
    assert f"run {names[lost]} ({lost}): unresolved interpolations in k_opt; left out" in page
    assert f"run {names[garbled]} ({garbled}): unreadable config.yaml (" in page


def test_a_resume_that_changed_the_config_is_a_warning_naming_keys_and_step(
    run_folders: Path, tmp_path: Path
) -> None:
    copy = copy_runs(run_folders, tmp_path)
    events = event_logs(copy)[0]
    change = {"event": "config_change", "time": 1.0, "step": 3, "changes": {"trainer.lr": [1, 2]}}
    with events.open("a", encoding="utf-8") as log:
        log.write(json.dumps(change) + "\n")
    name = f"{copy.name}/{events.parent.relative_to(copy).as_posix()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = A.scan_runs([copy])
    said = [str(w.message) for w in caught if issubclass(w.category, A.AnalysisWarning)]
    assert said == [f"run {name}: a resume changed its config at step 3: trainer.lr 1 -> 2"]
    assert name in {run.run for run in runs}  # still in the tables, with the warning

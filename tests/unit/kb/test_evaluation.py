"""Golden-set evaluation: metrics worked out by hand, cross-checked against trec_eval, the loader, the gate."""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest
import pytrec_eval

from ragops_runtime.kb.evaluation import (
    GoldenCase,
    GoldenSetError,
    Thresholds,
    evaluate,
    hit_at_k,
    load_golden_set,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    unknown_relevant_ids,
)

FIXTURES = Path(__file__).parent / "fixtures" / "golden"

# --- metrics by hand -------------------------------------------------------------------------------------------
# Discounts 1/log2(rank + 1): rank 1 -> 1, rank 2 -> 0.63093, rank 3 -> 0.5, rank 4 -> 0.43068, rank 5 -> 0.38685.
# Ideal DCG for n relevant in the top k (n = min(k, |relevant|)): n=1 -> 1, n=2 -> 1.63093, n=3 -> 2.13093.

METRIC_TABLE: list[tuple[str, list[str], set[str], int, tuple[float, float, float, float, float]]] = [
    # (name, retrieved, relevant, k, (precision, recall, reciprocal rank, nDCG, hit))
    # Relevant at ranks 1, 2; P = 2/3; R = 2/2; RR = 1; DCG = 1 + 0.63093 = IDCG(2) -> 1.
    ("perfect", ["a", "b", "c"], {"a", "b"}, 3, (0.6667, 1.0, 1.0, 1.0, 1.0)),
    # Ranks 1, 3; P = 2/3; R = 1; RR = 1; DCG = 1 + 1/log2(4) = 1.5; IDCG(2) = 1.63093; nDCG = 0.91972.
    ("ranks one and three", ["a", "x", "b"], {"a", "b"}, 3, (0.6667, 1.0, 1.0, 0.9197, 1.0)),
    # Dedupe first: [x, a, b] -> top 2 [x, a] (cutting first would give [x, x] and score 0).
    # a at rank 2; P = 1/2; R = 1/2; RR = 1/2; DCG = 0.63093; IDCG(2) = 1.63093; nDCG = 0.38685.
    ("duplicates before the cut", ["x", "x", "a", "x", "b"], {"a", "b"}, 2, (0.5, 0.5, 0.5, 0.3869, 1.0)),
    # Dedupe -> [a]: a relevant document retrieved three times counts once. P = 1/3; R = 1/2; RR = 1;
    # DCG = 1; IDCG(2) = 1.63093; nDCG = 0.61315.
    ("one relevant document three times", ["a", "a", "a"], {"a", "b"}, 3, (0.3333, 0.5, 1.0, 0.6131, 1.0)),
    # Dedupe -> [x, y, a]: a at rank 3. P = 1/3; R = 1; RR = 1/3; DCG = 0.5; IDCG(1) = 1; nDCG = 0.5.
    ("duplicates interleaved", ["x", "x", "y", "a", "y", "a"], {"a"}, 3, (0.3333, 1.0, 0.3333, 0.5, 1.0)),
    # a is at rank 4, beyond k = 3: nothing counts, including the reciprocal rank.
    ("relevant beyond k", ["x", "y", "z", "a"], {"a"}, 3, (0.0, 0.0, 0.0, 0.0, 0.0)),
    ("no relevant retrieved", ["x", "y"], {"a", "b", "c"}, 5, (0.0, 0.0, 0.0, 0.0, 0.0)),
    ("nothing retrieved", [], {"a"}, 1, (0.0, 0.0, 0.0, 0.0, 0.0)),
    # k = 5 but one document retrieved: P divides by k = 1/5; R = 1/2; RR = 1; DCG = 1; IDCG(min(5, 2)) = 1.63093.
    ("k larger than retrieved", ["a"], {"a", "b"}, 5, (0.2, 0.5, 1.0, 0.6131, 1.0)),
    # Four relevant, k = 2, both slots relevant: P = 1; R = 2/4; IDCG uses min(k, 4) = 2 ones, so nDCG = 1.
    ("more relevant than k", ["a", "b", "x"], {"a", "b", "c", "d"}, 2, (1.0, 0.5, 1.0, 1.0, 1.0)),
    # Ranks 4, 5 of k = 5 with 3 relevant: P = 2/5; R = 2/3; RR = 1/4; DCG = 0.43068 + 0.38685 = 0.81753;
    # IDCG(3) = 2.13093; nDCG = 0.38365.
    ("late hits", ["w", "x", "y", "a", "b"], {"a", "b", "c"}, 5, (0.4, 0.6667, 0.25, 0.3837, 1.0)),
    # k = 1: only rank 1 counts. P = 1; R = 1/3; RR = 1; DCG = 1 = IDCG(1).
    ("k of one", ["c", "a"], {"a", "b", "c"}, 1, (1.0, 0.3333, 1.0, 1.0, 1.0)),
]


@pytest.mark.parametrize(
    ("retrieved", "relevant", "k", "expected"),
    [row[1:] for row in METRIC_TABLE],
    ids=[row[0] for row in METRIC_TABLE],
)
def test_metrics_match_hand_computed_values(
    retrieved: list[str], relevant: set[str], k: int, expected: tuple[float, float, float, float, float]
) -> None:
    got = (
        precision_at_k(retrieved, relevant, k),
        recall_at_k(retrieved, relevant, k),
        reciprocal_rank(retrieved, relevant, k),
        ndcg_at_k(retrieved, relevant, k),
        hit_at_k(retrieved, relevant, k),
    )
    assert got == pytest.approx(expected, abs=1e-4)


METRICS = [precision_at_k, recall_at_k, reciprocal_rank, ndcg_at_k, hit_at_k]


@pytest.mark.parametrize("metric", METRICS)
def test_metrics_refuse_an_empty_relevant_set(metric: object) -> None:
    assert callable(metric)
    with pytest.raises(ValueError, match="at least one document"):
        metric(["a"], set(), 3)


@pytest.mark.parametrize("metric", METRICS)
def test_metrics_refuse_k_below_one(metric: object) -> None:
    assert callable(metric)
    with pytest.raises(ValueError, match="k must be at least 1"):
        metric(["a"], {"a"}, 0)


def test_metrics_refuse_a_bare_string_where_ids_are_expected() -> None:
    # A str is a Sequence[str] of characters; scoring "a.md" as ["a", ".", "m", "d"] would be silently wrong.
    with pytest.raises(TypeError, match="retrieved"):
        precision_at_k("a.md", {"a.md"}, 3)
    with pytest.raises(TypeError, match="relevant"):
        recall_at_k(["a.md"], "a.md", 3)


# --- cross-check against trec_eval -----------------------------------------------------------------------------

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


def trec_eval(qrels: Qrels, run: Run, measures: set[str]) -> dict[str, dict[str, float]]:
    """Per-query scores from NIST trec_eval (through pytrec_eval), keyed like `P_5`, `ndcg_cut_5`."""
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def as_trec_run(ranking: Sequence[str]) -> dict[str, float]:
    """trec_eval sorts by score and keeps one entry per document: distinct ids, scores falling with rank."""
    distinct = list(dict.fromkeys(ranking))
    return {document: float(len(distinct) - rank) for rank, document in enumerate(distinct)}


def random_queries(seed: int, count: int = 200) -> list[tuple[str, list[str], set[str], set[str]]]:
    """(query id, ranking with repeats, relevant ids, judged non-relevant ids) drawn from 60 documents."""
    rng = random.Random(seed)
    universe = [f"doc-{n:02d}" for n in range(60)]
    queries = []
    for n in range(count):
        judged = rng.sample(universe, rng.randint(2, 14))
        cut = rng.randint(1, len(judged) - 1)
        relevant, non_relevant = set(judged[:cut]), set(judged[cut:])
        # Half the draws from the relevant set, so hits land at every rank; drawing with replacement makes
        # repeats, as several chunks of one document would.
        ranking = [
            rng.choice(sorted(relevant)) if rng.random() < 0.3 else rng.choice(universe)
            for _ in range(rng.randint(1, 30))
        ]
        queries.append((f"q{n:03d}", ranking, relevant, non_relevant))
    return queries


@pytest.mark.parametrize("k", [1, 3, 5, 10, 20])
def test_metrics_agree_with_trec_eval(k: int) -> None:
    queries = random_queries(seed=1000 + k)
    qrels: Qrels = {
        qid: {doc: 1 for doc in relevant} | {doc: 0 for doc in non_relevant}
        for qid, _, relevant, non_relevant in queries
    }
    run = {qid: as_trec_run(ranking) for qid, ranking, _, _ in queries}
    # recip_rank is not cut at k by trec_eval; cut the (deduplicated) run ourselves.
    run_cut_at_k = {qid: as_trec_run(list(dict.fromkeys(ranking))[:k]) for qid, ranking, _, _ in queries}
    cut_measures = trec_eval(qrels, run, {f"P.{k}", f"recall.{k}", f"ndcg_cut.{k}", f"success.{k}"})
    rr = trec_eval(qrels, run_cut_at_k, {"recip_rank"})
    assert len(cut_measures) == len(rr) == len(queries)

    for qid, ranking, relevant, _ in queries:
        expected = (
            cut_measures[qid][f"P_{k}"],
            cut_measures[qid][f"recall_{k}"],
            rr[qid]["recip_rank"],
            cut_measures[qid][f"ndcg_cut_{k}"],
            cut_measures[qid][f"success_{k}"],
        )
        got = (
            precision_at_k(ranking, relevant, k),
            recall_at_k(ranking, relevant, k),
            reciprocal_rank(ranking, relevant, k),
            ndcg_at_k(ranking, relevant, k),
            hit_at_k(ranking, relevant, k),
        )
        assert got == pytest.approx(expected, abs=1e-4), qid


def test_the_random_run_exercises_the_interesting_cases() -> None:
    # Guards the generator above: the cross-check is only as good as the variety it sees.
    queries = random_queries(seed=1000 + 5)
    tops = [(list(dict.fromkeys(ranking))[:5], relevant) for _, ranking, relevant, _ in queries]
    assert any(len(ranking) != len(set(ranking)) for _, ranking, _, _ in queries)
    assert any(len(top) < 5 for top, _ in tops)
    assert any(not set(top) & relevant for top, relevant in tops)
    assert any(len(set(top) & relevant) >= 2 for top, relevant in tops)
    assert any(len(relevant) > 5 for _, relevant in tops)


# --- loading ---------------------------------------------------------------------------------------------------

EXPECTED_CASES = [
    GoldenCase(
        id="install",
        query="How do I install the operator?",
        relevant=("guides/install.md",),
        answer_contains=("helm install",),
    ),
    GoldenCase(
        id="rollback",
        query="What triggers an automatic rollback?",
        relevant=("concepts/rollouts.md", "reference/slo.md"),
    ),
    GoldenCase(
        id="pgvector",
        query="Which index does the store build?",
        relevant=("reference/store.md",),
        answer_contains=("HNSW", "pgvector"),
    ),
]


@pytest.mark.parametrize("name", ["cases.yaml", "cases-mapping.yaml", "cases.jsonl"])
def test_load_golden_set_reads_every_format(name: str) -> None:
    assert load_golden_set(FIXTURES / name) == EXPECTED_CASES


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        (
            "unknown-field.yaml",
            ["unknown-field.yaml", "case 'rollback' (line 4)", "unknown field 'relevent'", "missing field 'relevant'"],
        ),
        ("duplicate-id.yaml", ["duplicate-id.yaml", "case 'install' (line 7)", "duplicate id", "line 1"]),
        ("empty-relevant.yaml", ["empty-relevant.yaml", "case 'install' (line 2)", "'relevant' must not be empty"]),
        ("bad-line.jsonl", ["bad-line.jsonl", "line 3", "invalid JSON"]),
    ],
)
def test_load_golden_set_names_the_file_case_and_field_of_each_error(name: str, fragments: list[str]) -> None:
    with pytest.raises(GoldenSetError) as caught:
        load_golden_set(FIXTURES / name)
    for fragment in fragments:
        assert fragment in str(caught.value)


CASE = '{"id": "q1", "query": "q", "relevant": ["a.md"]}'

MALFORMED = [
    ("empty file", "cases.yaml", "", ["no cases"]),
    ("empty case list", "cases.yaml", "cases: []\n", ["no cases"]),
    ("blank lines only", "cases.jsonl", "\n\n", ["no cases"]),
    ("invalid YAML", "cases.yml", "- id: q1\n  query: [unclosed\n", ["invalid YAML", "line 3"]),
    ("scalar top level", "cases.yaml", "just text\n", ["expected a list of cases"]),
    ("unknown top-level key", "cases.yaml", "cases: []\nversion: 2\n", ["unknown top-level key 'version'"]),
    ("cases twice", "cases.yaml", "cases: []\ncases: []\n", ["top-level key 'cases' given twice"]),
    ("mapping without cases", "cases.yaml", "items: []\n", ["unknown top-level key 'items'"]),
    ("entry not a mapping", "cases.yaml", "- q1\n", ["case #1 (line 1)", "expected a mapping"]),
    ("JSONL line not an object", "cases.jsonl", f"{CASE}\n[1, 2]\n", ["case #2 (line 2)", "expected a mapping"]),
    ("missing query", "cases.yaml", "- {id: q1, relevant: [a.md]}\n", ["case 'q1'", "missing field 'query'"]),
    ("blank query", "cases.yaml", "- {id: q1, query: ' ', relevant: [a.md]}\n", ["'query' must not be empty"]),
    ("id not a string", "cases.yaml", "- {id: 7, query: q, relevant: [a.md]}\n", ["case #1", "'id' must be a string"]),
    ("relevant not a list", "cases.yaml", "- {id: q1, query: q, relevant: a.md}\n", ["'relevant' must be a list"]),
    ("blank relevant entry", "cases.yaml", "- {id: q1, query: q, relevant: [a.md, '']}\n", ["'relevant[1]'"]),
    ("relevant repeated", "cases.yaml", "- {id: q1, query: q, relevant: [a.md, a.md]}\n", ["lists 'a.md' twice"]),
    (
        "snake_case field",
        "cases.yaml",
        "- {id: q1, query: q, relevant: [a], answer_contains: [x]}\n",
        ["answerContains"],
    ),
    (
        "YAML key twice",
        "cases.yaml",
        "- id: q1\n  query: q\n  relevant: [a]\n  relevant: [b]\n",
        ["'relevant' given twice"],
    ),
    (
        "JSON key twice",
        "cases.jsonl",
        '{"id": "q1", "id": "q2", "query": "q", "relevant": ["a"]}\n',
        ["'id' given twice"],
    ),
    ("JSONL duplicate id", "cases.jsonl", f"{CASE}\n\n{CASE}\n", ["case 'q1' (line 3)", "first used on line 1"]),
    ("unsupported suffix", "cases.json", CASE, ["unsupported file type '.json'"]),
]


@pytest.mark.parametrize(
    ("file_name", "content", "fragments"), [row[1:] for row in MALFORMED], ids=[row[0] for row in MALFORMED]
)
def test_load_golden_set_rejects_malformed_files(
    tmp_path: Path, file_name: str, content: str, fragments: list[str]
) -> None:
    path = tmp_path / file_name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GoldenSetError) as caught:
        load_golden_set(path)
    assert str(path) in str(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_load_golden_set_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GoldenSetError, match=r"absent\.yaml: file not found"):
        load_golden_set(tmp_path / "absent.yaml")


def test_load_golden_set_reports_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "cases.yaml"
    path.write_bytes(b"- id: q1\n  query: \xff\xfe\n")
    with pytest.raises(GoldenSetError, match="cannot read"):
        load_golden_set(path)


# --- the gate --------------------------------------------------------------------------------------------------

GATE_CASES = [
    GoldenCase(id="q1", query="Where are vectors stored?", relevant=("a.md",), answer_contains=("Postgres",)),
    GoldenCase(id="q2", query="How does it scale?", relevant=("b.md", "c.md"), answer_contains=("replicas", "HPA")),
    GoldenCase(id="q3", query="What is a version?", relevant=("d.md", "e.md")),
    GoldenCase(id="q4", query="Who rolls back?", relevant=("f.md",)),
]
GATE_RETRIEVED = {
    "q1": ["a.md", "a.md", "x.md"],  # top 3 [a, x]: P 1/3, R 1, RR 1, nDCG 1, hit
    "q2": ["x.md", "b.md", "y.md", "c.md"],  # b at 2, c beyond k: P 1/3, R 1/2, RR 1/2, nDCG 0.63093/1.63093
    "q3": ["d.md", "e.md", "z.md"],  # P 2/3, R 1, RR 1, nDCG 1, hit
    "q4": ["x.md", "y.md", "z.md", "f.md"],  # f beyond k: all 0
}
GATE_ANSWERS = {
    "q1": "Vectors live in POSTGRES with pgvector.",  # passes, case-insensitively
    "q2": "Raise the replicas by hand.",  # no "HPA": fails
    "q3": "A version is an immutable index.",  # no checks: not counted
}
# Means over 4 cases: P = (1/3 + 1/3 + 2/3 + 0) / 4 = 1/3; R = (1 + 1/2 + 1 + 0) / 4 = 0.625;
# MRR = (1 + 1/2 + 1 + 0) / 4 = 0.625; nDCG = (1 + 0.38685 + 1 + 0) / 4 = 0.59671; hit rate = 3/4;
# answer pass rate = 1 of the 2 cases with checks = 0.5.
GATE_METRICS = {
    "precisionAtK": 1 / 3,
    "recallAtK": 0.625,
    "mrr": 0.625,
    "ndcgAtK": 0.59671,
    "hitRate": 0.75,
    "answerPassRate": 0.5,
}


def test_evaluate_means_and_failed_metrics() -> None:
    thresholds = Thresholds(precision_at_k=0.3, recall_at_k=0.8, mrr=0.5, ndcg_at_k=0.6, answer_pass_rate=0.9)
    report = evaluate(GATE_CASES, GATE_RETRIEVED, k=3, thresholds=thresholds, answers=GATE_ANSWERS)
    assert report.metrics == pytest.approx(GATE_METRICS, abs=1e-5)
    assert not report.passed
    assert report.failed_metrics == ("recallAtK=0.625<0.800", "ndcgAtK=0.597<0.600", "answerPassRate=0.500<0.900")
    assert [case.answer_passed for case in report.cases] == [True, False, None, None]
    assert report.cases[0].retrieved == ("a.md", "x.md")
    assert report.cases[1].retrieved == ("x.md", "b.md", "y.md")


def test_evaluate_passes_when_every_threshold_is_met_exactly() -> None:
    thresholds = Thresholds(precision_at_k=1 / 3, recall_at_k=0.625, mrr=0.625, ndcg_at_k=0.59, answer_pass_rate=0.5)
    report = evaluate(GATE_CASES, GATE_RETRIEVED, k=3, thresholds=thresholds, answers=GATE_ANSWERS)
    assert report.passed
    assert report.failed_metrics == ()


def test_evaluate_without_answers_skips_the_answer_threshold() -> None:
    thresholds = Thresholds(precision_at_k=0.0, recall_at_k=0.0, mrr=0.0, ndcg_at_k=0.0, answer_pass_rate=1.0)
    report = evaluate(GATE_CASES, GATE_RETRIEVED, k=3, thresholds=thresholds)
    assert "answerPassRate" not in report.metrics
    assert all(case.answer_passed is None for case in report.cases)
    assert report.passed


def test_evaluate_ignores_the_answer_threshold_when_no_case_has_checks() -> None:
    cases = [GATE_CASES[2], GATE_CASES[3]]
    thresholds = Thresholds(precision_at_k=0.0, recall_at_k=0.0, mrr=0.0, ndcg_at_k=0.0, answer_pass_rate=1.0)
    report = evaluate(cases, GATE_RETRIEVED, k=3, thresholds=thresholds, answers={"q3": "", "q4": ""})
    assert "answerPassRate" not in report.metrics
    assert report.passed


def test_evaluate_reports_answer_pass_rate_without_a_threshold() -> None:
    thresholds = Thresholds(precision_at_k=0.0, recall_at_k=0.0, mrr=0.0, ndcg_at_k=0.0)
    report = evaluate(GATE_CASES, GATE_RETRIEVED, k=3, thresholds=thresholds, answers=GATE_ANSWERS)
    assert report.metrics["answerPassRate"] == 0.5
    assert report.passed


def test_evaluate_shows_exact_values_when_rounding_would_hide_the_shortfall() -> None:
    thresholds = Thresholds(precision_at_k=0.0, recall_at_k=0.6251, mrr=0.0, ndcg_at_k=0.0)
    report = evaluate(GATE_CASES, GATE_RETRIEVED, k=3, thresholds=thresholds)
    assert report.failed_metrics == ("recallAtK=0.625<0.6251",)


def test_to_json_round_trips_and_its_cases_reproduce_the_means() -> None:
    thresholds = Thresholds(precision_at_k=0.3, recall_at_k=0.8, mrr=0.5, ndcg_at_k=0.6, answer_pass_rate=0.9)
    report = evaluate(GATE_CASES, GATE_RETRIEVED, k=3, thresholds=thresholds, answers=GATE_ANSWERS)
    document = json.loads(json.dumps(report.to_json()))
    assert document["k"] == 3 and document["passed"] is False
    assert document["failedMetrics"] == list(report.failed_metrics)

    cases = document["cases"]
    assert [case["id"] for case in cases] == ["q1", "q2", "q3", "q4"]
    assert cases[1]["retrieved"] == ["x.md", "b.md", "y.md"] and cases[1]["relevant"] == ["b.md", "c.md"]
    assert [case.get("answerPassed") for case in cases] == [True, False, None, None]
    assert "answerPassed" not in cases[2]

    def mean(field: str) -> float:
        return float(sum(case[field] for case in cases)) / len(cases)

    checked = [case["answerPassed"] for case in cases if "answerPassed" in case]
    recomputed = {
        "precisionAtK": mean("precisionAtK"),
        "recallAtK": mean("recallAtK"),
        "mrr": mean("reciprocalRank"),
        "ndcgAtK": mean("ndcgAtK"),
        "hitRate": mean("hit"),
        "answerPassRate": sum(checked) / len(checked),
    }
    assert document["metrics"] == pytest.approx(recomputed, abs=1e-12)
    assert document["metrics"] == pytest.approx(GATE_METRICS, abs=1e-5)


def test_evaluate_refuses_a_case_without_retrieval_results() -> None:
    thresholds = Thresholds(precision_at_k=0.0, recall_at_k=0.0, mrr=0.0, ndcg_at_k=0.0)
    retrieved = {case_id: ranking for case_id, ranking in GATE_RETRIEVED.items() if case_id != "q3"}
    with pytest.raises(ValueError, match="no retrieval results for golden case 'q3'"):
        evaluate(GATE_CASES, retrieved, k=3, thresholds=thresholds)


def test_evaluate_refuses_a_checked_case_without_an_answer() -> None:
    thresholds = Thresholds(precision_at_k=0.0, recall_at_k=0.0, mrr=0.0, ndcg_at_k=0.0)
    with pytest.raises(ValueError, match="no generated answer for golden case 'q2'"):
        evaluate(GATE_CASES, GATE_RETRIEVED, k=3, thresholds=thresholds, answers={"q1": "postgres"})


@pytest.mark.parametrize(
    ("cases", "k", "message"),
    [
        ([], 3, "no golden cases"),
        (GATE_CASES, 0, "k must be at least 1"),
        ([GATE_CASES[0], GATE_CASES[0]], 3, "'q1' appears twice"),
    ],
)
def test_evaluate_refuses_degenerate_input(cases: list[GoldenCase], k: int, message: str) -> None:
    thresholds = Thresholds(precision_at_k=0.0, recall_at_k=0.0, mrr=0.0, ndcg_at_k=0.0)
    with pytest.raises(ValueError, match=message):
        evaluate(cases, GATE_RETRIEVED, k=k, thresholds=thresholds)


def test_thresholds_must_lie_in_the_unit_interval() -> None:
    with pytest.raises(ValueError, match="recall_at_k must be in"):
        Thresholds(precision_at_k=0.5, recall_at_k=80, mrr=0.5, ndcg_at_k=0.5)
    with pytest.raises(ValueError, match="answer_pass_rate must be in"):
        Thresholds(precision_at_k=0.5, recall_at_k=0.8, mrr=0.5, ndcg_at_k=0.5, answer_pass_rate=-0.1)


def test_golden_case_needs_a_relevant_document() -> None:
    with pytest.raises(ValueError, match="'q1' needs at least one relevant document"):
        GoldenCase(id="q1", query="q", relevant=())


def test_unknown_relevant_ids_names_only_the_missing_documents() -> None:
    known: Collection[str] = {"a.md", "b.md", "d.md", "e.md"}
    assert unknown_relevant_ids(GATE_CASES, known) == {"q2": ("c.md",), "q4": ("f.md",)}
    assert unknown_relevant_ids(GATE_CASES, {"a.md", "b.md", "c.md", "d.md", "e.md", "f.md"}) == {}

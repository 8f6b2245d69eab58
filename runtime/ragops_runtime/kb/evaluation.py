"""Golden-set evaluation: the gate a knowledge-base version must pass before it may be promoted.

Loads the labelled cases (`load_golden_set`), scores ranked retrieval results against them with the
standard IR metrics (precision, recall, reciprocal rank, nDCG and hit, all at a cut-off k, binary
relevance), checks generated answers for expected strings, and turns the means into a verdict against
the spec's thresholds (`evaluate`).

Pure: nothing here does I/O except `load_golden_set`, which only reads the one golden file it is given.
Retrieval and generation happen elsewhere; their results come in as plain mappings keyed by case id.

Conventions shared by every metric:

- `retrieved` holds document ids in rank order and may repeat an id (several chunks of one document
  retrieved). Evaluation is per document, so repeats are dropped, keeping the first occurrence, *before*
  the list is cut at k: the top k are k distinct documents.
- `relevant` is the set of relevant document ids; it must not be empty (ValueError).
- precision@k divides by k, not by the number of documents retrieved, which is trec_eval's `P_k`:
  a retriever returning fewer than k documents is not rewarded for it.
- reciprocal rank counts only the top k (0.0 when no relevant document is there), like trec_eval's
  `recip_rank` on a run cut at k.
- nDCG@k uses gain 1 per relevant document, discount log2(rank + 1), and an ideal ranking of
  min(k, |relevant|) relevant documents; this is trec_eval's `ndcg_cut_k` with binary judgements.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

__all__ = [
    "CaseResult",
    "EvaluationReport",
    "GoldenCase",
    "GoldenSetError",
    "Thresholds",
    "evaluate",
    "golden_set_digest",
    "hit_at_k",
    "load_golden_set",
    "ndcg_at_k",
    "parse_golden_set",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "unknown_relevant_ids",
]

# Means are float sums, so a mean that is mathematically equal to its threshold may land a few ulps below it;
# such a gate must pass.
_THRESHOLD_TOLERANCE = 1e-9


class GoldenSetError(ValueError):
    """The golden file is missing, unreadable or malformed; the message names the file and the case or line."""


@dataclass(frozen=True)
class GoldenCase:
    """One labelled query: the documents that answer it and, optionally, strings a good answer contains."""

    id: str
    query: str
    relevant: tuple[str, ...]
    answer_contains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a golden case needs a non-empty id")
        if not self.relevant:
            raise ValueError(f"golden case {self.id!r} needs at least one relevant document")


def golden_set_digest(cases: Sequence[GoldenCase]) -> str:
    """SHA-256 of the cases as judged (ids, queries, relevant documents, expected phrases), in file order.

    The file's layout, comments and format (YAML or JSONL) do not change it; any change to what
    the gate asks does.
    """
    canonical = [[case.id, case.query, list(case.relevant), list(case.answer_contains)] for case in cases]
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


# --- loading ---------------------------------------------------------------------------------------------------

_NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _WireCase(BaseModel):
    """One case as written in the golden file (camelCase keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: _NonBlank
    query: _NonBlank
    relevant: list[_NonBlank] = Field(min_length=1)
    answer_contains: list[_NonBlank] = Field(default_factory=list, alias="answerContains")


_WIRE_FIELDS = ", ".join(field.alias or name for name, field in _WireCase.model_fields.items())
_YAML_SUFFIXES = (".yaml", ".yml")
_JSONL_SUFFIXES = (".jsonl",)


@dataclass(frozen=True)
class _RawCase:
    """A case before validation, with the 1-based line it starts on."""

    value: object
    line: int
    keys_given_twice: tuple[str, ...] = ()


def load_golden_set(path: Path) -> list[GoldenCase]:
    """Read and validate a golden set from YAML (`.yaml`/`.yml`) or JSON Lines (`.jsonl`).

    YAML holds either a list of cases or a mapping `{cases: [...]}`; JSONL holds one case object per
    line (blank lines are skipped). A case has `id`, `query`, `relevant` (non-empty list of document ids)
    and optionally `answerContains` (list of strings). Unknown fields, duplicate ids, a document listed
    twice in one case and an empty set are errors, so a typo cannot silently weaken the gate.
    """
    _check_suffix(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoldenSetError(f"golden set {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenSetError(f"golden set {path}: cannot read: {exc}") from exc
    return parse_golden_set(text, path)


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in _YAML_SUFFIXES + _JSONL_SUFFIXES:
        raise GoldenSetError(f"golden set {path}: unsupported file type {path.suffix!r}; use .yaml, .yml or .jsonl")


def parse_golden_set(text: str, path: Path) -> list[GoldenCase]:
    """`load_golden_set` on text already read; `path` names where it came from (its suffix picks the format).

    The operator reads a version's golden set from its ConfigMap key this way, for golden probes.
    """
    _check_suffix(path)
    raw_cases = _parse_jsonl(text, path) if path.suffix.lower() in _JSONL_SUFFIXES else _parse_yaml(text, path)
    if not raw_cases:
        raise GoldenSetError(f"golden set {path}: no cases")

    cases: list[GoldenCase] = []
    first_line_of: dict[str, int] = {}
    for index, raw in enumerate(raw_cases):
        case = _validate_case(raw, index, path)
        if case.id in first_line_of:
            raise GoldenSetError(
                f"golden set {path}: {_where(raw, index)}: duplicate id, first used on line {first_line_of[case.id]}"
            )
        first_line_of[case.id] = raw.line
        cases.append(case)
    return cases


def _parse_yaml(text: str, path: Path) -> list[_RawCase]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data: object = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise GoldenSetError(f"golden set {path}: invalid YAML: {_yaml_problem(exc)}") from exc
    finally:
        loader.dispose()

    if root is None or data is None:
        return []
    items_node: yaml.Node = root
    if isinstance(data, dict) and isinstance(root, yaml.MappingNode):
        unexpected = sorted(str(key) for key in data if key != "cases")
        if unexpected:
            raise GoldenSetError(
                f"golden set {path}: unknown top-level key {unexpected[0]!r}; expected a list of cases "
                "or a mapping with the single key 'cases'"
            )
        if "cases" not in data:
            raise GoldenSetError(f"golden set {path}: the top-level mapping has no 'cases' key")
        if _repeated_keys(root):
            raise GoldenSetError(f"golden set {path}: top-level key 'cases' given twice")
        # Falls back to the root when `cases` came from a merge key; the check below then refuses it.
        items_node = next((value for key, value in root.value if key.value == "cases"), root)
        data = data["cases"]
        if data is None:
            return []
    if not isinstance(data, list) or not isinstance(items_node, yaml.SequenceNode):
        raise GoldenSetError(
            f"golden set {path}: expected a list of cases (or {{cases: [...]}}), got {_kind(data)} "
            f"on line {items_node.start_mark.line + 1}"
        )
    return [
        _RawCase(value=value, line=node.start_mark.line + 1, keys_given_twice=_repeated_keys(node))
        for value, node in zip(data, items_node.value, strict=True)
    ]


def _repeated_keys(node: yaml.Node) -> tuple[str, ...]:
    # PyYAML keeps the last of two equal keys without a word; a case with `relevant` twice must not lose one.
    if not isinstance(node, yaml.MappingNode):
        return ()
    keys = [str(key.value) for key, _ in node.value]
    return tuple(sorted({key for key in keys if keys.count(key) > 1}))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc)


def _parse_jsonl(text: str, path: Path) -> list[_RawCase]:
    raw_cases: list[_RawCase] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_JsonObject)
        except json.JSONDecodeError as exc:
            raise GoldenSetError(
                f"golden set {path}: line {number}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from exc
        repeated = value.repeated_keys if isinstance(value, _JsonObject) else ()
        raw_cases.append(
            _RawCase(value=dict(value) if isinstance(value, dict) else value, line=number, keys_given_twice=repeated)
        )
    return raw_cases


class _JsonObject(dict[str, Any]):
    """A decoded JSON object that remembers keys given twice (json.loads keeps only the last)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        keys = [key for key, _ in pairs]
        self.repeated_keys = tuple(sorted({key for key in keys if keys.count(key) > 1}))


def _validate_case(raw: _RawCase, index: int, path: Path) -> GoldenCase:
    where = f"golden set {path}: {_where(raw, index)}"
    if not isinstance(raw.value, dict):
        raise GoldenSetError(f"{where}: expected a mapping with {_WIRE_FIELDS}, got {_kind(raw.value)}")
    if raw.keys_given_twice:
        raise GoldenSetError(f"{where}: field {raw.keys_given_twice[0]!r} given twice")
    try:
        wire = _WireCase.model_validate(raw.value)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise GoldenSetError(f"{where}: {problems}") from None
    for name, values in (("relevant", wire.relevant), ("answerContains", wire.answer_contains)):
        repeated = _first_repeat(values)
        if repeated is not None:
            raise GoldenSetError(f"{where}: field {name!r} lists {repeated!r} twice")
    return GoldenCase(
        id=wire.id,
        query=wire.query,
        relevant=tuple(wire.relevant),
        answer_contains=tuple(wire.answer_contains),
    )


def _where(raw: _RawCase, index: int) -> str:
    value = raw.value
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"].strip():
        return f"case {value['id'].strip()!r} (line {raw.line})"
    return f"case #{index + 1} (line {raw.line})"


def _describe(error: Mapping[str, Any]) -> str:
    location: tuple[str | int, ...] = tuple(error["loc"])
    field = str(location[0]) + "".join(f"[{part}]" for part in location[1:]) if location else "case"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown field {field!r} (allowed: {_WIRE_FIELDS})"
    if kind == "missing":
        return f"missing field {field!r}"
    if kind in ("too_short", "string_too_short"):
        return f"field {field!r} must not be empty"
    if kind == "string_type":
        return f"field {field!r} must be a string, got {_kind(error['input'])}"
    if kind == "list_type":
        return f"field {field!r} must be a list of strings, got {_kind(error['input'])}"
    return f"field {field!r}: {error['msg']}"


def _first_repeat(values: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# --- metrics ---------------------------------------------------------------------------------------------------


def precision_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant documents among the top k distinct documents, divided by k (trec_eval's `P_k`)."""
    return len(_relevant_ranks(retrieved, relevant, k)) / k


def recall_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant documents found among the top k distinct documents."""
    return len(_relevant_ranks(retrieved, relevant, k)) / len(_relevant_set(relevant))


def reciprocal_rank(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1 / rank of the first relevant document within the top k distinct documents; 0.0 if there is none."""
    ranks = _relevant_ranks(retrieved, relevant, k)
    return 1.0 / ranks[0] if ranks else 0.0


def ndcg_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-gain nDCG at k: sum of 1/log2(rank + 1) over relevant ranks, over the same for a perfect ranking."""
    dcg = sum(1.0 / math.log2(rank + 1) for rank in _relevant_ranks(retrieved, relevant, k))
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(_relevant_set(relevant))) + 1))
    return dcg / ideal


def hit_at_k(retrieved: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1.0 when any relevant document is among the top k distinct documents, else 0.0."""
    return 1.0 if _relevant_ranks(retrieved, relevant, k) else 0.0


def _top_k(retrieved: Sequence[str], k: int) -> tuple[str, ...]:
    """The first k distinct documents, each at the rank of its first occurrence."""
    if isinstance(retrieved, str):
        raise TypeError("retrieved must be a sequence of document ids, not a single string")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return tuple(dict.fromkeys(retrieved))[:k]


def _relevant_set(relevant: Collection[str]) -> frozenset[str]:
    if isinstance(relevant, str):
        raise TypeError("relevant must be a collection of document ids, not a single string")
    documents = frozenset(relevant)
    if not documents:
        raise ValueError("relevant must name at least one document")
    return documents


def _relevant_ranks(retrieved: Sequence[str], relevant: Collection[str], k: int) -> list[int]:
    """1-based ranks, within the deduplicated top k, of the relevant documents, best first."""
    documents = _relevant_set(relevant)
    return [rank for rank, document in enumerate(_top_k(retrieved, k), start=1) if document in documents]


# --- the gate --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Minimum mean scores, each in [0, 1]; mirrors the KnowledgeBaseVersion's goldenSet.thresholds."""

    precision_at_k: float
    recall_at_k: float
    mrr: float
    ndcg_at_k: float
    answer_pass_rate: float | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {item.name} must be in [0, 1], got {value}")

    def to_json(self) -> dict[str, float | None]:
        """By the metric names of the report (camelCase), as a verdict stores them."""
        return {
            "precisionAtK": self.precision_at_k,
            "recallAtK": self.recall_at_k,
            "mrr": self.mrr,
            "ndcgAtK": self.ndcg_at_k,
            "answerPassRate": self.answer_pass_rate,
        }


@dataclass(frozen=True)
class CaseResult:
    """One case's scores. `retrieved` is what was scored: the top k distinct documents."""

    id: str
    query: str
    retrieved: tuple[str, ...]
    relevant: tuple[str, ...]
    precision_at_k: float
    recall_at_k: float
    reciprocal_rank: float
    ndcg_at_k: float
    hit: float
    answer_passed: bool | None = None


@dataclass(frozen=True)
class EvaluationReport:
    """Mean scores over the cases, the verdict, and the per-case detail behind them."""

    k: int
    metrics: dict[str, float]
    passed: bool
    failed_metrics: tuple[str, ...]
    cases: tuple[CaseResult, ...]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict with the camelCase names of the KnowledgeBaseVersion status."""
        return {
            "k": self.k,
            "metrics": dict(self.metrics),
            "passed": self.passed,
            "failedMetrics": list(self.failed_metrics),
            "cases": [_case_to_json(case) for case in self.cases],
        }


def _case_to_json(case: CaseResult) -> dict[str, object]:
    out: dict[str, object] = {
        "id": case.id,
        "query": case.query,
        "retrieved": list(case.retrieved),
        "relevant": list(case.relevant),
        "precisionAtK": case.precision_at_k,
        "recallAtK": case.recall_at_k,
        "reciprocalRank": case.reciprocal_rank,
        "ndcgAtK": case.ndcg_at_k,
        "hit": case.hit,
    }
    if case.answer_passed is not None:
        out["answerPassed"] = case.answer_passed
    return out


def evaluate(
    cases: Sequence[GoldenCase],
    retrieved: Mapping[str, Sequence[str]],
    *,
    k: int,
    thresholds: Thresholds,
    answers: Mapping[str, str] | None = None,
) -> EvaluationReport:
    """Score every case and decide whether the version passes its gate.

    `retrieved` maps each case id to document ids in rank order (repeats allowed, see the module docstring);
    a case without an entry is a ValueError, extra entries are ignored. `answers`, when given, maps case ids
    to generated answers: a case with `answer_contains` passes when its answer contains every expected string,
    ignoring case, and a case with checks but no answer is a ValueError.

    Metrics are means over the cases; `answerPassRate` (over the cases with checks) is present only when some
    case was checked. The gate passes when every threshold is met (>=); the answer threshold is applied only
    when it is set and some case was checked.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not cases:
        raise ValueError("there are no golden cases to evaluate")
    repeated = _first_repeat(case.id for case in cases)
    if repeated is not None:
        raise ValueError(f"golden case id {repeated!r} appears twice")

    results = tuple(_evaluate_case(case, retrieved, k, answers) for case in cases)
    metrics = {
        "precisionAtK": _mean(result.precision_at_k for result in results),
        "recallAtK": _mean(result.recall_at_k for result in results),
        "mrr": _mean(result.reciprocal_rank for result in results),
        "ndcgAtK": _mean(result.ndcg_at_k for result in results),
        "hitRate": _mean(result.hit for result in results),
    }
    checked = [result.answer_passed for result in results if result.answer_passed is not None]
    if checked:
        metrics["answerPassRate"] = _mean(1.0 if passed else 0.0 for passed in checked)

    failed = _failed_metrics(metrics, thresholds)
    return EvaluationReport(k=k, metrics=metrics, passed=not failed, failed_metrics=failed, cases=results)


def _evaluate_case(
    case: GoldenCase, retrieved: Mapping[str, Sequence[str]], k: int, answers: Mapping[str, str] | None
) -> CaseResult:
    if case.id not in retrieved:
        raise ValueError(f"no retrieval results for golden case {case.id!r}")
    ranking, relevant = retrieved[case.id], case.relevant
    return CaseResult(
        id=case.id,
        query=case.query,
        retrieved=_top_k(ranking, k),
        relevant=relevant,
        precision_at_k=precision_at_k(ranking, relevant, k),
        recall_at_k=recall_at_k(ranking, relevant, k),
        reciprocal_rank=reciprocal_rank(ranking, relevant, k),
        ndcg_at_k=ndcg_at_k(ranking, relevant, k),
        hit=hit_at_k(ranking, relevant, k),
        answer_passed=_answer_passed(case, answers),
    )


def _answer_passed(case: GoldenCase, answers: Mapping[str, str] | None) -> bool | None:
    if answers is None or not case.answer_contains:
        return None
    if case.id not in answers:
        raise ValueError(f"no generated answer for golden case {case.id!r}, which has answerContains checks")
    answer = answers[case.id].casefold()
    return all(expected.casefold() in answer for expected in case.answer_contains)


def _mean(values: Iterable[float]) -> float:
    collected = list(values)
    return math.fsum(collected) / len(collected)


def _failed_metrics(metrics: Mapping[str, float], thresholds: Thresholds) -> tuple[str, ...]:
    required = {
        "precisionAtK": thresholds.precision_at_k,
        "recallAtK": thresholds.recall_at_k,
        "mrr": thresholds.mrr,
        "ndcgAtK": thresholds.ndcg_at_k,
    }
    if thresholds.answer_pass_rate is not None and "answerPassRate" in metrics:
        required["answerPassRate"] = thresholds.answer_pass_rate
    return tuple(
        _shortfall(name, metrics[name], minimum)
        for name, minimum in required.items()
        if metrics[name] < minimum - _THRESHOLD_TOLERANCE
    )


def _shortfall(name: str, value: float, minimum: float) -> str:
    shown, wanted = f"{value:.3f}", f"{minimum:.3f}"
    if shown == wanted:
        # 0.7996 against 0.8 would read "0.800<0.800"; show the exact values instead.
        shown, wanted = repr(value), repr(minimum)
    return f"{name}={shown}<{wanted}"


def unknown_relevant_ids(
    cases: Sequence[GoldenCase], known_document_ids: Collection[str]
) -> dict[str, tuple[str, ...]]:
    """Case id -> the relevant ids that name no known document, for the cases that have any.

    Such a case can never be satisfied, usually because a document was renamed or the golden set names
    source paths where the index holds document ids; the caller reports it instead of gating on it.
    """
    if isinstance(known_document_ids, str):
        raise TypeError("known_document_ids must be a collection of document ids, not a single string")
    known = frozenset(known_document_ids)
    unknown = {case.id: tuple(document for document in case.relevant if document not in known) for case in cases}
    return {case_id: documents for case_id, documents in unknown.items() if documents}

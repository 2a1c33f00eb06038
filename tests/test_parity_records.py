"""The parity records (benchmarks/results/parity.jsonl, written by benchmarks/parity.py): each has
both sides' accuracies, its summary figures are those of its accuracies, and the two sides agree
within the noise criterion the record names. Reads the records only: nothing is trained."""

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "benchmarks" / "results" / "parity.jsonl"


def within_2se(ours: list[float], ref: list[float]) -> bool:
    """|mean difference| <= 2 * sqrt(s1^2/n1 + s2^2/n2), s the sample std (n - 1)."""
    n1, n2 = len(ours), len(ref)
    m1, m2 = sum(ours) / n1, sum(ref) / n2
    v1 = sum((a - m1) ** 2 for a in ours) / (n1 - 1)
    v2 = sum((a - m2) ** 2 for a in ref) / (n2 - 1)
    return abs(m1 - m2) <= 2 * math.sqrt(v1 / n1 + v2 / n2)


CRITERIA = {"within_2se": within_2se}


def _records() -> list[tuple[str, dict]]:
    if not RECORDS.is_file():
        return []
    return [(f"parity.jsonl:{n} {json.loads(line)['preset']} {json.loads(line).get('anchor')}", json.loads(line))
            for n, line in enumerate(RECORDS.read_text().splitlines(), 1) if line.strip()]


RECS = _records()


def test_there_are_parity_records():
    assert RECS, f"{RECORDS} holds no record"


@pytest.mark.parametrize("rec", [r for _, r in RECS], ids=[i for i, _ in RECS])
def test_parity_record_has_both_sides(rec):
    for side, accs, mean, std in (("ours", "accuracies", "acc_mean", "acc_std"),
                                  ("reference", "reference_accs", "reference_mean", "reference_std")):
        a = rec.get(accs)
        assert isinstance(a, list) and len(a) >= 2, f"{side}: needs at least 2 models' accuracies in {accs}"
        m = sum(a) / len(a)
        assert rec[mean] == pytest.approx(m, abs=0.006), f"{side}: {mean} is not the mean of {accs}"
        s = math.sqrt(sum((v - m) ** 2 for v in a) / len(a))
        assert rec[std] == pytest.approx(s, abs=0.006), f"{side}: {std} is not the population std of {accs}"
    assert rec["n_models"] == len(rec["accuracies"])
    for f in ("preset", "epochs", "device", "capability", "commit", "command"):
        assert rec.get(f) not in (None, ""), f"missing {f}"


@pytest.mark.parametrize("rec", [r for _, r in RECS], ids=[i for i, _ in RECS])
def test_parity_record_sides_agree_within_the_noise(rec):
    # records written before the field named it were judged by the same criterion
    named = (rec.get("agreement") or {}).get("criterion", "within_2se")
    assert named in CRITERIA, f"unknown agreement criterion {named!r}; known: {', '.join(CRITERIA)}"
    agree = CRITERIA[named](rec["accuracies"], rec["reference_accs"])
    if "agreement" in rec:
        assert rec["agreement"]["agree"] == agree, "the recorded verdict is not the criterion's"
    assert agree, (f"{rec['preset']}: ours {rec['acc_mean']} ± {rec['acc_std']} vs the reference's "
                   f"{rec['reference_mean']} ± {rec['reference_std']} differ by more than {named}")
